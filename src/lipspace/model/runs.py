"""Reload a trained run: its config, data module and system with a checkpoint's weights (evaluate and render)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lipspace.model.build import build_system, torso_option
from lipspace.utils.errors import LipspaceError


# Where classes that run configs name by ``_target_`` lived before the package re-layout (issue 16): runs trained
# before it still load.
_MOVED_TARGETS = {"lipspace.system.": "lipspace.model.system.", "lipspace.loggers.": "lipspace.reporting.loggers."}


def _load_config(path: Path):
    """A run's config.yaml, ``_target_`` values naming a pre-re-layout module path rewritten to the current one."""
    text = path.read_text()
    for old, new in _MOVED_TARGETS.items():
        text = text.replace(f"_target_: {old}", f"_target_: {new}")
    return OmegaConf.create(text)


def is_run(path: Path) -> bool:
    """A training run's output directory (it holds config.yaml or run.json)."""
    return (path / "config.yaml").is_file() or (path / "run.json").is_file()


def load_run(run_dir, ckpt: str = "last"):
    """Rebuild datamodule + system from <run_dir>/config.yaml and load a checkpoint's weights."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise LipspaceError(f"{cfg_path}: missing, so {run_dir} is not a lipspace training run. "
                            "Pass run_dir=<the output directory printed by lipspace-train>.")
    cfg = _load_config(cfg_path)
    ckpt_path = run_dir / "checkpoints" / "last.ckpt" if ckpt == "last" else Path(ckpt)
    if not ckpt_path.is_file():
        raise LipspaceError(f"{ckpt_path}: checkpoint not found. Train first (lipspace-train) or pass ckpt=<path>.")
    dm = instantiate(cfg.data)
    dm.load()
    # the checkpoint carries what prepare() trained; run_dir: the AVE checkpoint the run recorded (lipspace.av.record)
    system = build_system(cfg, dm, prepare=False, run_dir=run_dir)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    system.load_state_dict(state["state_dict"])
    system.eval()
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    info.setdefault("torso", torso_option(cfg))  # how the torso is drawn, for every results row
    info["checkpoint"] = str(ckpt_path)
    info["global_step"] = int(state.get("global_step", -1))
    return cfg, dm, system, info
