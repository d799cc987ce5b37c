"""Weights & Biases logger that goes offline by itself when no API key is configured (no crash, no network wait)."""

from __future__ import annotations

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
                 mode: str | None = None, **kwargs):
    from lightning.pytorch.loggers import WandbLogger

    mode = resolve_wandb_mode(mode)
    os.environ["WANDB_MODE"] = mode  # also for wandb.init calls made outside the logger
    os.environ.setdefault("WANDB_SILENT", "true")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=project, group=group, tags=list(tags or []), save_dir=save_dir, name=name,
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
