"""The train task: build data, conditioner, renderer and system from config, fit (resuming), always close loggers."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lipspace.model.build import build_system, component_options, torso_option
from lipspace.utils.config import check_config
from lipspace.reporting.loggers import finish_wandb

log = logging.getLogger(__name__)


def resolve_resume(cfg: DictConfig, output_dir: Path) -> str | None:
    if cfg.ckpt_path in (None, "null"):
        return None
    if cfg.ckpt_path == "auto":
        last = output_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    path = Path(cfg.ckpt_path)
    if not path.is_file():
        from lipspace.utils.errors import LipspaceError

        raise LipspaceError(f"{path}: checkpoint to resume from does not exist. Pass an existing .ckpt, "
                            "ckpt_path=auto (resume from <run>/checkpoints/last.ckpt if present) or ckpt_path=null.")
    return str(path)


def run_info(cfg: DictConfig, choices: dict | None = None) -> dict:
    """Provenance carried into every result row: what was trained, on what, with which seed and budget."""
    choices = choices or {}
    return {
        "conditioner": choices.get("conditioner", cfg.conditioner._target_.rsplit(".", 1)[-1]),
        "renderer": choices.get("renderer", cfg.renderer._target_.rsplit(".", 1)[-1]),
        "experiment": choices.get("experiment"),
        "budget": cfg.get("budget_name"),
        "seed": int(cfg.seed),
        "dataset": str(cfg.data.root),
        "clip_seconds": cfg.data.get("clip_seconds"),
        "gt_background_classes": list(cfg.data.get("gt_background_classes") or []),
        "torso": torso_option(cfg),  # gt: ground-truth torso pasted behind the head; nerf, deform: modelled
        **component_options(cfg),  # SSP-NeRF's parsing branch, dynamic sampling, deformation, structured codes
        "bounds": cfg.data.get("bounds"),
        "study": cfg.get("study"),
        "max_steps": int(cfg.trainer.max_steps),
        "conditioner_lr": (cfg.get("model") or {}).get("conditioner_lr"),  # None: the conditioner trains at model.lr
        **audio_info(cfg),
    }


def audio_info(cfg: DictConfig) -> dict:
    """The conditioner's audio backend and, for model-based backends (hubert, wav2vec2), the model id or path."""
    audio = (cfg.get("conditioner") or {}).get("audio") or {}
    backend = audio.get("backend")
    if backend is None:
        return {"audio_backend": None, "audio_model": None}
    from lipspace.audio.hf import default_model

    return {"audio_backend": str(backend),
            "audio_model": (audio.get("backend_kwargs") or {}).get("model") or default_model(backend)}


def write_prepare_info(conditioner, out: Path) -> dict:
    """The conditioner's stage-wise pre-training report (``prepare_info``: held-out errors against the trivial
    predictor, cache path) -> ``<run>/prepare.json``; returns its numbers flattened as ``prepare/...`` metrics
    for the loggers (empty when nothing was prepared)."""
    info = conditioner.prepare_info
    if not info:
        return {}
    (out / "prepare.json").write_text(json.dumps(info, indent=2, default=str))
    flat: dict = {}

    def walk(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}/{k}", x)
        elif isinstance(v, bool | int | float) and not isinstance(v, str):
            flat[prefix] = float(v)

    walk(f"prepare/{conditioner.name}", info)
    return flat


# Lightning warnings that do not apply here: ray batches are made in-process (no workers), and checkpoints
# holding the post-step state are exactly what a resumed run needs.
_IGNORED_WARNINGS = (".*IterableDataset.*has .__len__. defined.*", "Using ModelCheckpoint with manual optimization.*",
                     ".*does not have many workers.*", ".*LeafSpec.*is deprecated.*",
                     r".*module\(s\) in eval mode.*")  # conditioners freeze pre-trained parts in eval mode


def check_distributed(cfg: DictConfig, world_size: int) -> None:
    """Refuse a multi-process run (``world_size`` > 1: trainer=ddp) of a renderer that declares it cannot be
    trained by DDP (``Renderer.supports_ddp``), before anything is built or prepared."""
    if world_size <= 1:
        return
    from lipspace.model.build import build_renderer
    from lipspace.model.regions import renderer_class
    from lipspace.utils.errors import LipspaceError

    cls = renderer_class(build_renderer(cfg))
    if not cls.supports_ddp:
        raise LipspaceError(f"renderer {cls.__name__} cannot be trained by {world_size} DDP processes (its "
                            "parameters change size during training: Gaussian densification); train it in one "
                            "process (trainer=cpu or trainer=gpu, devices=1) or sweep runs in parallel instead "
                            "(hydra/launcher=joblib or submitit_slurm)")


def train(cfg: DictConfig, output_dir: str | Path, choices: dict | None = None) -> dict:
    """Fit one model; returns the final logged metrics. Writes run.json + config.yaml into ``output_dir``."""
    for pattern in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    check_config(cfg)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(int(cfg.seed), workers=True)
    info = run_info(cfg, choices)
    (out / "run.json").write_text(json.dumps(info, indent=2))
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)

    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    check_distributed(cfg, trainer.world_size)
    datamodule = instantiate(cfg.data)
    datamodule.load()
    system = build_system(cfg, datamodule, out)
    prepared = write_prepare_info(system.conditioner, out)
    hparams = {**OmegaConf.to_container(cfg, resolve=True), "run": info}
    for lg in loggers:
        lg.log_hyperparams(hparams)
        if prepared:
            lg.log_metrics(prepared, step=0)
    ckpt = resolve_resume(cfg, out)
    if ckpt:
        log.info("resuming from %s", ckpt)
    sync_cmd = None
    try:
        trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt)
    finally:
        sync_cmd = finish_wandb()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics["global_step"] = int(trainer.global_step)
    if sync_cmd and trainer.is_global_zero:
        print(f"W&B run saved offline; upload with: {sync_cmd}")
    return metrics
