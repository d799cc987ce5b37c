"""Config location, one-line errors for unknown group options, and value checks made before anything heavy runs."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lipspace.utils.errors import LipspaceError

# The configs ship inside the package (lipspace/conf, package data): a wheel install runs `lipspace-train` with
# them, and the repository's top-level conf/ is a link to this directory. $LIPSPACE_CONF points at another copy.
PACKAGE_CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CONF_DIR = Path(os.environ.get("LIPSPACE_CONF") or PACKAGE_CONF_DIR)

# ${lipspace_cwd:} - the launch directory. paths.root_dir uses it rather than ${hydra:runtime.cwd}, which a
# multirun's sweeper resolves (hydra.sweep.dir -> paths.log_dir -> paths.root_dir) before Hydra's config is set:
# every sweep stopped with "HydraConfig was not set" unless $LIPSPACE_ROOT was exported (hydra.job.chdir is false,
# so every job's cwd is the launch directory too).
OmegaConf.register_new_resolver("lipspace_cwd", os.getcwd, replace=True)


def _torso_tag(follow, lag_s) -> str:
    """``${lipspace_torso_tag:follow,lag_s}`` - the data.root suffix of a synthetic dataset whose torso follows the
    head ("" for the static torso, so its directory keeps the name it had before the option)."""
    return "" if not follow else f"_torso{float(follow):g}lag{float(lag_s):g}"


OmegaConf.register_new_resolver("lipspace_torso_tag", _torso_tag, replace=True)


def user_config_dirs(argv: list[str]) -> list[Path]:
    """Config folders a command line adds to lipspace's own (``--config-dir X`` / ``-cd X`` and the ``file://``
    entries of ``hydra.searchpath=[...]``): where a user's own conditioner or renderer yaml lives
    (docs/extending.md)."""
    dirs: list[Path] = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(Path(argv[i + 1]))
        elif arg.startswith(("--config-dir=", "-cd=")):
            dirs.append(Path(arg.split("=", 1)[1]))
        elif arg.startswith("hydra.searchpath="):
            for item in arg.split("=", 1)[1].strip("[]").split(","):
                item = item.strip().strip("'\"")
                if item.startswith("file://"):
                    dirs.append(Path(item[len("file://"):]))
    return dirs


def group_options(group: str, extra_dirs=()) -> list[str]:
    """The options of config group ``group``: its yaml files in lipspace's configs and in ``extra_dirs``."""
    return sorted({p.stem for d in (CONF_DIR, *extra_dirs) for p in (Path(d) / group).glob("*.yaml")})


def check_group_overrides(argv: list[str]) -> None:
    """`experiment=lipnref` -> one clear line naming the options, instead of Hydra's multi-line report."""
    extra = user_config_dirs(argv)
    for arg in argv:
        if "=" not in arg or arg.startswith(("-", "hydra.", "+", "~")):
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+")
        if "." in key or not (CONF_DIR / key).is_dir() or value in ("null", "") or "," in value or "(" in value:
            continue
        options = group_options(key, extra)
        if value not in options:
            where = ", ".join(str(d / key) for d in (CONF_DIR, *extra))
            raise LipspaceError(f"unknown {key} '{value}' (no {value}.yaml in {where}); "
                                f"available: {', '.join(options)}")


def _positive(cfg: DictConfig, dotted: str, integer: bool = True) -> None:
    node = cfg
    for part in dotted.split("."):
        if node is None or part not in node:
            return
        node = node[part]
    ok = isinstance(node, int) if integer else isinstance(node, (int, float))
    if not ok or isinstance(node, bool) or node <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise LipspaceError(f"config value {dotted}={node!r} must be {kind}.")


def check_config(cfg: DictConfig) -> None:
    """Catch wrong values that would otherwise fail deep inside torch or Lightning."""
    for key in ("data.rays_per_batch", "data.frames_per_batch", "data.steps_per_epoch", "data.val_downscale",
                "renderer.n_coarse", "renderer.field.hidden", "renderer.field.n_layers", "trainer.max_steps",
                "renderer.eval_chunk_rays"):
        _positive(cfg, key)
    _positive(cfg, "model.optimizer.lr", integer=False)
    _positive(cfg, "model.lr_final", integer=False)
    if cfg.get("renderer") is not None and cfg.renderer.get("n_fine", 0) < 0:
        raise LipspaceError(f"config value renderer.n_fine={cfg.renderer.n_fine} must be >= 0.")
    cs = cfg.get("data", {}).get("clip_seconds")
    if cs is not None and (not isinstance(cs, (int, float)) or cs <= 0):
        raise LipspaceError(f"config value data.clip_seconds={cs!r} must be a positive number of seconds or null.")
    metrics = (cfg.get("evaluation") or {}).get("metrics")
    if metrics is not None:  # unknown keys and download's auto / true / false: before training, not after it
        from lipspace.eval.scoring import EvalSettings

        EvalSettings.of(metrics)


def compose_train(overrides: list[str], output_dir, root_dir=None) -> DictConfig:
    """Compose conf/train.yaml outside a Hydra app (demo, tests, notebooks), with the run directory given."""
    from hydra import compose, initialize_config_dir

    check_group_overrides(overrides)
    root = Path(root_dir or os.getcwd()).resolve()
    fixed = [f"paths.root_dir={root}", f"paths.output_dir={Path(output_dir).resolve()}"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=fixed + list(overrides))


def choices_from_overrides(overrides: list[str]) -> dict:
    """Group choices (conditioner, renderer, experiment, ...) after composing ``overrides`` over the train.yaml
    defaults, as Hydra's runtime.choices records them: an ``experiment=`` preset's group overrides included
    (experiment=adnerf -> conditioner=deepspeech), which a parse of the override strings alone would miss."""
    from hydra import compose, initialize_config_dir

    check_group_overrides(overrides)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    return {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra")}
