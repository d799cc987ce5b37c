"""The conditioner interface: declared inputs -> per-frame condition c [F, out_dim], projected to a shared width."""

from __future__ import annotations

from contextlib import contextmanager
from typing import ClassVar

import torch
from torch import nn

from lipspace.audio.features import backend_class
from lipspace.audio.inputs import AudioInput
from lipspace.utils.errors import LipspaceError

AUTO = "auto"  # an audio input's declared width: the backend's


def _width(name, value) -> int | str:
    if value == AUTO:
        return AUTO
    try:
        return int(value)
    except (TypeError, ValueError):
        raise LipspaceError(f"conditioner.inputs.{name}={value!r}: a width must be an integer (or 'auto' for an "
                            f"input computed from the audio)") from None


class Conditioner(nn.Module):
    """Base class. Subclasses set ``name``, implement ``raw_dim`` and ``encode``; the base owns the optional
    projection to the shared width (``out_dim``; None keeps the raw concatenation, as LipNeRF feeds the NeRF).

    ``inputs`` maps dataset track names to their dims (e.g. ``{"expr": 53}``); the data module checks them
    against the dataset at start-up, so a mismatch is one clear line, never a shape error mid-run. An input computed
    from the audio (``add_audio_input``) may declare ``auto``: the backend's width.

    What evaluation and rendering ask of a conditioner (defaults here; subclasses override, callers never probe):
    ``audio_only`` / ``can_drive_by_audio`` / ``drivable_both_ways`` (which drivers a held-out sequence gets),
    ``driving_by_audio`` + ``inputs_from_audio`` (a drive by a new audio track), ``drive_metrics`` (extra columns
    of an audio-driven row), ``generates_motion`` + ``generate_motion`` (head poses and blinks from the audio).
    """

    name = "base"
    # True where generate_motion() makes head poses and blinks from the audio (DFA-NeRF's GP-VAE): renders driven by
    # audio then use the generated poses, and evaluation adds the motion metrics to the audio-driven row
    generates_motion: ClassVar[bool] = False
    # region attention (SyncTalk's facial-aware masking): {name: (slice of the output c, parsing classes)}, {} for none;
    # a renderer with supports_regions gates those columns per point (lipspace.model.system.region_spec checks them)
    regions: dict = {}

    def __init__(self, inputs: dict[str, int], out_dim: int | None = None):
        super().__init__()
        self.inputs = {str(k): _width(k, v) for k, v in dict(inputs).items()}
        # inputs computed from a dataset's audio (name -> lipspace.audio.inputs.AudioInput); set by subclasses
        self.audio_inputs: dict = {}
        self._drive_by_audio = False  # True inside driving_by_audio()
        # what prepare() trained and how well (held-out errors vs the trivial predictor, cache path): the train task
        # writes it to <run>/prepare.json and logs its numbers as prepare/<name>/...
        self.prepare_info: dict = {}
        self._out_dim = out_dim
        self.proj: nn.Module = nn.Identity()

    def add_audio_input(self, name: str, spec) -> AudioInput:
        """Declare input ``name`` as computed from the audio by ``spec`` (an AudioInput or its config); a width of
        ``auto`` becomes the backend's. Call in ``__init__`` before using ``self.inputs[name]``."""
        spec = AudioInput.of(spec)
        if name not in self.inputs:
            raise LipspaceError(f"conditioner '{self.name}': audio input '{name}' is not among its inputs "
                                f"{sorted(self.inputs)}; add conditioner.inputs.{name}: auto")
        if self.inputs[name] == AUTO:
            self.inputs[name] = backend_class(spec.backend).width(**spec.backend_kwargs)
        self.audio_inputs[name] = spec
        return spec

    def check_declared(self) -> None:
        """Every input has a width once the constructor is done (``build_conditioner`` calls this): ``auto`` is for
        audio inputs, whose backend knows its width; a tracked input's width is the dataset's."""
        left = sorted(k for k, v in self.inputs.items() if v == AUTO)
        if left:
            raise LipspaceError(f"conditioner '{self.name}': inputs {left} declare width 'auto', which only an input "
                                f"computed from the audio can (its backend's width); set conditioner.inputs.{left[0]} "
                                f"to the dataset track's width")

    @classmethod
    def data_kwargs(cls, n_frames: int) -> dict:
        """Constructor arguments that come from the loaded dataset rather than the config (``build_conditioner``
        passes them), e.g. the number of training frames for per-frame latent codes. Default: none."""
        return {}

    def _build_projection(self) -> None:
        """Call at the end of a subclass __init__, once raw_dim is known."""
        if self._out_dim is not None:
            self.proj = nn.Linear(self.raw_dim, self._out_dim)

    @property
    def raw_dim(self) -> int:
        raise NotImplementedError

    @property
    def out_dim(self) -> int:
        return self.raw_dim if self._out_dim is None else int(self._out_dim)

    def encode(self, inputs: dict[str, torch.Tensor], frame_idx: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def check_batch(self, inputs: dict[str, torch.Tensor]) -> None:
        for name, dim in self.inputs.items():
            if name not in inputs:
                raise LipspaceError(f"conditioner '{self.name}': input '{name}' missing from the batch "
                                    f"(got {sorted(inputs)}); the data module was set up for other inputs.")
            if inputs[name].shape[-1] != dim:
                raise LipspaceError(f"conditioner '{self.name}': input '{name}' has dim {inputs[name].shape[-1]}, "
                                    f"declared {dim}. Set conditioner.inputs.{name} to match the data.")

    def forward(self, inputs: dict[str, torch.Tensor], frame_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame conditions [F, out_dim]. ``frame_idx`` indexes training frames (per-frame latents); None
        when driving by new inputs (audio, another clip), where frame-specific state is not defined."""
        self.check_batch(inputs)
        return self.proj(self.encode(inputs, frame_idx))

    def regularizer(self, frame_idx: torch.Tensor | None) -> torch.Tensor:
        """Loss term added to the photometric loss (e.g. latent-code L2); zero by default."""
        return torch.zeros((), device=next(iter(self.parameters()), torch.zeros(())).device)

    def audio_only(self) -> bool:
        """Every input comes from the audio: a held-out utterance driven by it is a real audio-driven result."""
        return bool(self.audio_inputs) and set(self.inputs) <= set(self.audio_inputs)

    def can_drive_by_audio(self) -> bool:
        """Whether a new audio track alone can drive this conditioner (inside ``driving_by_audio()``)."""
        return self.audio_only()

    def drivable_both_ways(self) -> bool:
        """Inputs beyond the audio, which audio alone can also drive (predicted inside ``driving_by_audio()``):
        evaluation scores a held-out sequence driven by its tracked inputs and again by its audio."""
        return not self.audio_only() and self.can_drive_by_audio()

    # how to make a conditioner that cannot be driven by audio drivable (subclasses say, e.g. a config switch)
    audio_drive_hint = "use an audio conditioner or drive it with a dataset directory"

    @contextmanager
    def driving_by_audio(self):
        """Within this block ``self._drive_by_audio`` is True: ``prepare_sequence`` then predicts the inputs that
        do not come from the audio (subclasses that can drive so override ``can_drive_by_audio``)."""
        if not self.can_drive_by_audio():
            raise LipspaceError(f"conditioner '{self.name}' cannot be driven by audio alone (its inputs "
                                f"{sorted(set(self.inputs) - set(self.audio_inputs))} come from face tracks); "
                                f"{self.audio_drive_hint}")
        self._drive_by_audio = True
        try:
            yield self
        finally:
            self._drive_by_audio = False

    def update_step(self, step: int) -> None:
        """Called by the system before every training step with the global step (step-dependent behaviour, e.g. an
        attention net switched on after a warm-up). Default: nothing."""

    def prepare(self, clip, train_idx) -> None:
        """Stage-wise pre-training that must precede the NeRF (e.g. DFA-NeRF's landmark autoencoder, its
        audio -> lip encoder and pose/blink generator). Called once by ``build_system`` with the loaded dataset
        ``clip`` and its *training* frame indices (held-out frames must never be used). Implementations cache
        their result (same data and settings -> no retraining) and keep it in the module's state_dict so that
        checkpoints carry it. Default: nothing to prepare."""

    def prepare_sequence(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inference-time processing of a whole driving sequence ([T, dim] per input), e.g. temporal smoothing."""
        return inputs

    def inputs_from_audio(self, audio_tracks: dict[str, torch.Tensor], n_frames: int) -> dict[str, torch.Tensor]:
        """The per-frame inputs of a drive by a new audio track alone (used inside ``driving_by_audio()``):
        ``audio_tracks`` (one [n_frames, ...] track per ``audio_inputs`` name, computed from the audio) plus a
        placeholder (zeros [n_frames, dim]) for every other input, which ``prepare_sequence`` predicts from the
        audio while driving by it."""
        inputs = dict(audio_tracks)
        for name, dim in self.inputs.items():
            inputs.setdefault(name, torch.zeros(n_frames, dim))
        return inputs

    def drive_metrics(self, inputs: dict[str, torch.Tensor]) -> dict[str, float]:
        """Extra result columns of a held-out sequence driven by its audio (called inside ``driving_by_audio()``
        with the sequence's tracked ``inputs``), e.g. how far the inputs predicted from the audio are from the
        tracked ones. Default: none."""
        return {}

    @property
    def motion_input(self) -> str:
        """The audio input whose per-frame windows ``generate_motion`` takes: the first of ``audio_inputs``."""
        return next(iter(self.audio_inputs))

    def generate_motion(self, audio: torch.Tensor, start_pose=None, seed: int = 0):
        """Where ``generates_motion``: head poses [T, 4, 4] (head -> camera) and blinks [T] generated from the
        windows [T, window, dim] of the ``motion_input`` audio, starting at ``start_pose`` ([4, 4]; None: the
        mean training pose), seeded. Others raise."""
        raise LipspaceError(f"conditioner '{self.name}' does not generate head motion from audio "
                            "(generates_motion is False): poses come from the driving sequence")
