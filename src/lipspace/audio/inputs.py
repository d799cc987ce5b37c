"""Audio conditioner inputs: the per-video-frame audio windows a conditioner declares, computed from a dataset's
audio.wav through an audio backend and the one alignment helper.

A conditioner that listens to audio sets ``audio_inputs = {name: AudioInput(...)}`` next to its ``inputs``
(``{name: feature width}``); the data side computes ``[N, window, dim]`` (``context`` = 1) or
``[N, context, window, dim]`` arrays for every dataset it loads (training clip, held-out utterances, driving
clips), so a new audio track drives the model through the same code as training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipspace.audio.features import audio_windows, check_feature_dim, dataset_features, get_backend
from lipspace.errors import LipspaceError


@dataclass(frozen=True)
class AudioInput:
    backend: str = "mel"
    window: int = 16  # feature frames per video frame, centred on it (AD-NeRF: 16 DeepSpeech frames)
    context: int = 1  # neighbouring video frames stacked around each frame (AD-NeRF's AudioAttNet: 8)
    pad: str = "zero"  # beyond the audio's ends: zeros (AD-NeRF) or the edge feature
    backend_kwargs: dict = field(default_factory=dict)

    @classmethod
    def of(cls, spec) -> "AudioInput":
        if isinstance(spec, AudioInput):
            return spec
        spec = dict(spec or {})
        unknown = set(spec) - {"backend", "window", "context", "pad", "backend_kwargs"}
        if unknown:
            raise LipspaceError(f"audio input options {sorted(unknown)} are unknown; use backend, window, context, "
                                f"pad, backend_kwargs")
        spec["backend_kwargs"] = dict(spec.get("backend_kwargs") or {})
        return cls(**spec)


def context_indices(n_frames: int, context: int) -> np.ndarray:
    """[n_frames, context] frame indices t - context//2 ... t + context - context//2 - 1, clamped to the clip
    (AD-NeRF's AudioAttNet window of 8 frames: 4 before, the frame, 3 after)."""
    idx = np.arange(n_frames)[:, None] - context // 2 + np.arange(context)[None, :]
    return np.clip(idx, 0, n_frames - 1)


def _checked_backend(spec: AudioInput, declared_dim: int | None, who: str):
    backend = get_backend(spec.backend, **spec.backend_kwargs)
    if declared_dim is not None:
        check_feature_dim(backend, declared_dim, who)
    if spec.window < 1 or spec.context < 1:
        raise LipspaceError(f"{who}: audio window={spec.window} and context={spec.context} must both be >= 1")
    return backend


def _frame_windows(feats: np.ndarray, backend, spec: AudioInput, n_frames: int) -> np.ndarray:
    win = audio_windows(feats, backend.spec, n_frames, spec.window, pad=spec.pad)
    return win if spec.context == 1 else win[context_indices(n_frames, spec.context)]


def audio_track(root: str | Path, n_frames: int, spec: AudioInput, declared_dim: int | None = None,
                who: str = "conditioner") -> np.ndarray:
    """float32 [N, W, D] (context 1) or [N, C, W, D] audio windows for the dataset at ``root``."""
    spec = AudioInput.of(spec)
    backend = _checked_backend(spec, declared_dim, who)
    return _frame_windows(dataset_features(root, backend), backend, spec, n_frames)


def wav_track(wav: str | Path, n_frames: int, spec: AudioInput, declared_dim: int | None = None,
              who: str = "conditioner") -> np.ndarray:
    """Like audio_track, for any 16 kHz wav file (a new driving audio; not cached)."""
    from lipspace.audio.features import read_audio

    spec = AudioInput.of(spec)
    backend = _checked_backend(spec, declared_dim, who)
    return _frame_windows(backend.compute(read_audio(wav)), backend, spec, n_frames)


def wav_frames(wav: str | Path, fps: float = 25.0) -> int:
    """Number of video frames a driving wav covers at ``fps``."""
    import soundfile as sf

    try:
        info = sf.info(str(wav))
    except (RuntimeError, OSError) as e:
        raise LipspaceError(f"{wav}: cannot read as audio ({' '.join(str(e).split())[:160]}); pass a 16 kHz wav "
                            f"(`ffmpeg -i in -ac 1 -ar 16000 out.wav`)") from None
    return int(info.frames / info.samplerate * fps)
