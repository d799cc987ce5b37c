"""Weights & Biases for lipspace: a logger that goes offline by itself when no API key is configured (no crash, no
network wait) and run tags from run_info. Evaluation results go into the training run through
lipspace.reporting.wandb_eval.log_eval."""

from __future__ import annotations

import json
import netrc
import os
from pathlib import Path


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC", str(Path.home() / ".netrc")))
        return rc.authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str | None = None) -> str:
    """Explicit mode > WANDB_MODE > online if a key is configured > offline."""
    mode = mode or os.environ.get("WANDB_MODE")
    if mode in ("offline", "disabled", "dryrun"):
        return "offline" if mode == "dryrun" else mode
    return "online" if wandb_api_key_configured() else "offline"


def wandb_logger(project: str, group: str | None, tags, save_dir: str, name: str | None = None,
                 mode: str | None = None, run_info: dict | None = None, **kwargs):
    """Lightning WandbLogger writing under ``save_dir``/wandb. Tags: ``tags`` plus run_tags(run_info); with
    ``run_info=None`` the run_info is read from ``<save_dir>/run.json`` when the train task has written it."""
    from lightning.pytorch.loggers import WandbLogger

    if run_info is None and (Path(save_dir) / "run.json").is_file():
        try:
            run_info = json.loads((Path(save_dir) / "run.json").read_text())
        except (OSError, ValueError):
            run_info = None
    tags = run_tags(run_info, extra=tags) if run_info else list(tags or [])
    mode = resolve_wandb_mode(mode)
    os.environ["WANDB_MODE"] = mode  # also for wandb.init calls made outside the logger
    os.environ.setdefault("WANDB_SILENT", "true")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=project, group=group, tags=tags, save_dir=save_dir, name=name,
                       offline=(mode == "offline"), mode=mode, **kwargs)


def finish_wandb() -> str | None:
    """Close the W&B run if one is open; return the `wandb sync` command for an offline run."""
    try:
        import wandb
    except ImportError:
        return None
    run = wandb.run
    if run is None:
        return None
    offline = run.settings.mode in ("offline", "dryrun") if hasattr(run.settings, "mode") else False
    run_dir = Path(run.dir).parent if run.dir else None
    wandb.finish()
    return f"wandb sync {run_dir}" if offline and run_dir else None


# --- tags ------------------------------------------------------------------------------------------------------------

_MAX_TAG_LEN = 64  # W&B rejects longer tags


def _clip_tag(clip_seconds) -> str:
    if clip_seconds in (None, "", "null", "full"):
        return "clip:full"
    try:
        return f"clip:{float(clip_seconds):g}s"
    except (TypeError, ValueError):
        return f"clip:{clip_seconds}"


def run_tags(info: dict, extra=()) -> list[str]:
    """W&B tags from a run_info dict (what was trained, on what): ``extra`` (the user's ``tags``) first, then
    ``cond:`` ``renderer:`` ``exp:`` ``budget:`` ``data:`` ``clip:`` (``clip:full`` for the whole clip) ``seed:``;
    missing fields are left out, duplicates dropped, each tag cut to W&B's 64 characters."""
    auto = []
    for prefix, key in (("cond", "conditioner"), ("renderer", "renderer"), ("exp", "experiment"),
                        ("budget", "budget")):
        if info.get(key) not in (None, ""):
            auto.append(f"{prefix}:{info[key]}")
    if info.get("dataset") not in (None, ""):
        auto.append(f"data:{Path(str(info['dataset'])).name or info['dataset']}")
    auto.append(_clip_tag(info.get("clip_seconds")))
    if info.get("seed") is not None:
        auto.append(f"seed:{info['seed']}")
    tags = []
    for t in [*(str(t) for t in (extra or ())), *auto]:
        t = t[:_MAX_TAG_LEN]
        if t and t not in tags:
            tags.append(t)
    return tags
