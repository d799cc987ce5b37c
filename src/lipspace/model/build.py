"""Build the conditioner, renderer and system a config describes, checked against the loaded data: shared by the
train task and by run loading (lipspace.model.runs), so neither task imports the other."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig


def _instantiate(node, **kwargs):
    """hydra.utils.instantiate, re-raising a LipspaceError from the constructor as itself (one clear line) rather
    than inside Hydra's InstantiationException."""
    from hydra.errors import InstantiationException

    from lipspace.utils.errors import LipspaceError

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, LipspaceError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def build_conditioner(cfg: DictConfig, n_frames: int):
    """The configured conditioner, given what it declares it needs from the loaded data (``data_kwargs``)."""
    conditioner = _instantiate(cfg.conditioner, **get_class(cfg.conditioner._target_).data_kwargs(n_frames))
    conditioner.check_declared()
    return conditioner


def build_system(cfg: DictConfig, datamodule, output_dir: Path | None = None, prepare: bool = True,
                 run_dir: Path | None = None):
    """Instantiate conditioner (checked against the dataset), renderer and system; used by train and run loading.
    ``prepare=False`` skips the conditioner's pre-training (eval: the checkpoint about to be loaded carries it).
    An ``ave`` audio input gets its checkpoint here (lipspace.av.record: given weights, else the local sync expert
    trained on the training frames), recorded in ``run_dir`` (default ``output_dir``); with ``prepare=False`` the
    checkpoint recorded there is used, so held-out utterances and dubs get the features the model trained on."""
    from lipspace.audio.inputs import AudioInput

    conditioner = build_conditioner(cfg, datamodule.n_frames)
    if any(AudioInput.of(s).backend == "ave" for s in conditioner.audio_inputs.values()):
        from lipspace.av.record import resolve_audio_inputs

        conditioner.audio_inputs = resolve_audio_inputs(conditioner.audio_inputs, datamodule, cfg.get("ave"),
                                                        run_dir if run_dir is not None else output_dir,
                                                        use_record=not prepare)
    datamodule.attach_audio(conditioner.audio_inputs, conditioner.inputs, conditioner.name)
    datamodule.check_inputs(conditioner.inputs, conditioner.name)
    if prepare:
        conditioner.prepare(datamodule.clip, datamodule.split.train)
    renderer = build_renderer(cfg)
    val_dir = str(output_dir / "val") if output_dir is not None else None
    system = _instantiate(cfg.model, conditioner=conditioner, renderer=renderer, val_image_dir=val_dir)
    connect_renderer(system.renderer, datamodule)
    return system


def build_renderer(cfg: DictConfig):
    """The configured renderer (a partial: the system builds it at the conditioner's width), wrapped by the torso
    option's compositing renderer when the option declares one (``torso.composite``, e.g. torso=nerf: AD-NeRF's torso
    NeRF under the head renderer; ``torso.composite_for`` maps the head's declared ``batch_kind`` to settings merged
    into it, e.g. the compositor's class, where an option has one compositor per kind), its field first wrapped by
    the option's ``torso.field_wrapper`` when it declares one (torso=deform: SSP-NeRF's deformation module moves the
    points the field reads)."""
    torso = cfg.get("torso") or {}
    wrapper = torso.get("field_wrapper")
    if wrapper is None:
        renderer = _instantiate(cfg.renderer)
    elif "field" not in cfg.renderer:
        from lipspace.utils.errors import LipspaceError

        raise LipspaceError(f"torso={torso_option(cfg)} moves the points a renderer's field reads; renderer "
                            f"{cfg.renderer._target_} has no `field` (use renderer=mlp or renderer=triplane)")
    else:  # the option's wrapper around the configured field (torso=deform: SSP-NeRF's deformation module)
        renderer = _instantiate(cfg.renderer, field=_instantiate(wrapper, inner=_instantiate(cfg.renderer.field)))
    composite = torso.get("composite")
    if composite is None:
        return renderer
    by_kind = torso.get("composite_for")  # the option's compositor settings for each batch kind of head renderer
    if by_kind is not None:
        from omegaconf import OmegaConf

        from lipspace.model.regions import renderer_class
        from lipspace.utils.errors import LipspaceError

        kind = renderer_class(renderer).batch_kind
        if kind not in by_kind:
            raise LipspaceError(f"torso={torso_option(cfg)} has no compositor for renderers drawing "
                                f"batch_kind '{kind}' ({cfg.renderer._target_}); it has {sorted(by_kind)}: use "
                                "torso=gt or another renderer")
        return _instantiate(composite, head=renderer, **OmegaConf.to_container(by_kind[kind], resolve=True))
    return _instantiate(composite, head=renderer)


def torso_option(cfg: DictConfig) -> str:
    """How the run draws the torso (the results column ``torso``): ``torso.kind``; "gt" for runs configured before
    the option existed (the ground-truth torso pasted behind the head)."""
    return str((cfg.get("torso") or {}).get("kind") or "gt")


def component_options(cfg: DictConfig) -> dict:
    """The SSP-NeRF components a run uses (results columns, for ablations): the parsing branch's loss weight
    ``semantic_weight`` (0: off), the ray ``sampling`` (head_fraction / semantic: dynamic), for semantic sampling the
    loss each class's share follows (``class_loss``: mean / total; None for other samplers), the ``mouth_fraction``
    (the share of rays drawn from mouth pixels; 0: none), and for torso=deform
    whether the deformation module is on (``torso_deform``) and the structured codes' width (``latent_codes``);
    both None for other torso options."""
    composite = (cfg.get("torso") or {}).get("composite") or {}
    deform = torso_option(cfg) == "deform"
    data = cfg.get("data") or {}
    return {"semantic_weight": float((cfg.get("model") or {}).get("semantic_weight") or 0.0),
            "sampling": data.get("sampling"),
            "class_loss": str(data.get("class_loss") or "mean") if data.get("sampling") == "semantic" else None,
            "mouth_fraction": float(data.get("mouth_fraction") or 0.0),
            "torso_deform": bool(composite.get("deform", True)) if deform else None,
            "latent_codes": int(composite.get("latent_codes") or 0) if deform else None}


def connect_renderer(renderer, datamodule) -> None:
    """The renderer takes what it needs from the scene (e.g. the tri-plane's box around the bounds), and the data
    module makes the training batches it declares (rays or whole images)."""
    renderer.setup_scene(datamodule.clip)
    datamodule.set_batch_kind(renderer.batch_kind)
