"""The ``ave`` audio feature backend (``audio.backend=ave``, registered in lipspace.audio.features.BACKENDS by
its path): 256-d embeddings per video frame (25 /s) of the *locally trained* audio-visual sync encoder
(lipspace.av.sync, SyncTalk-style, NOT SyncTalk's official LRS2 encoder), weights from ``$LIPSPACE_AVE_WEIGHTS`` or
``$LIPSPACE_CACHE/ave_local.pt``, else trained on the run's clip by ``lipspace.av.auto``. It lives in av/ because
it needs the encoder; audio/ never imports av/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lipspace.utils.assets import cache_dir, file_sha256
from lipspace.audio.features import AudioBackend, FeatureSpec, MelBackend
from lipspace.av.sync import NOT_OFFICIAL, load
from lipspace.data.schema import FPS, SAMPLE_RATE
from lipspace.utils.errors import LipspaceError

AVE_WEIGHTS_ENV = "LIPSPACE_AVE_WEIGHTS"
DEFAULT_AVE_WEIGHTS = "ave_local.pt"  # in the project cache (lipspace.utils.assets.cache_dir)
_AVE_MODELS: dict[str, object] = {}  # sha256 -> loaded AVEncoder


def default_ave_weights() -> Path:
    """``$LIPSPACE_CACHE/ave_local.pt`` (``~/.cache/lipspace/ave_local.pt`` without it): where `python -m
    lipspace.av.train` writes by default."""
    return cache_dir() / DEFAULT_AVE_WEIGHTS


def ave_weights_path(weights: str | Path | None = None) -> Path:
    """The AVE checkpoint: ``weights`` if given, else ``$LIPSPACE_AVE_WEIGHTS``, else :func:`default_ave_weights`.
    Where none of them is a file, training runs and evaluations train one on their clip (``lipspace.av.auto``)."""
    given = weights or os.environ.get(AVE_WEIGHTS_ENV)
    return Path(given).expanduser() if given else default_ave_weights()


class AveBackend(AudioBackend):
    """SyncTalk-style audio features: per video frame (25 /s, feature j centred on frame j: (j + 0.5) / 25 s),
    the ``dim``-d (256) embedding of the locally trained AVE audio encoder (lipspace.av.sync.AudioEncoder) over
    the 20 log-mel frames (0.2 s) centred on that frame, the clip's log-mel standardised per clip and band as in
    its training.

    The weights are required (no silent random init): a missing file is a LipspaceError naming the path and the
    command that trains one. The checkpoint's sha256 is part of the cache key, its provenance (locally trained,
    NOT the official SyncTalk/LRS2 encoder) is in ``spec.params`` and in the feature cache's metadata file.
    """

    def __init__(self, weights: str | Path | None = None):
        path = ave_weights_path(weights)
        if not path.is_file():
            raise LipspaceError(
                f"audio backend 'ave': no AVE checkpoint at {path} (set ${AVE_WEIGHTS_ENV} or "
                f"conditioner.audio.backend_kwargs.weights to one). Train one with `python -m lipspace.av.train "
                f"--train <dataset dir> [<dataset dir> ...] --out {path}`, or use conditioner.audio.backend=mel")
        self.path, self.sha256 = path, file_sha256(path)
        model = self.model
        self.provenance = dict(model.provenance)
        self.label = ave_label(self.provenance)
        # feature j is the window centred on video frame j's centre, (j + 0.5) / fps (lipspace.audio.align)
        self.spec = FeatureSpec("ave", int(model.config["dim"]), float(FPS), first_time_s=0.5 / FPS,
                                params=(("weights_sha256", self.sha256), ("provenance", self.label),
                                        ("config", json.dumps(model.config, sort_keys=True))))

    @classmethod
    def width(cls, weights: str | Path | None = None) -> int:
        """The checkpoint's embedding width where it exists; else the width the automatic stage trains at by
        default (lipspace.av.auto.AutoSettings.dim, 256; a run that sets ave.dim otherwise declares its width)."""
        path = ave_weights_path(weights)
        if path.is_file():
            return cls(weights).dim
        from lipspace.av.auto import AutoSettings

        return AutoSettings().dim

    @property
    def model(self):
        if self.sha256 not in _AVE_MODELS:
            _AVE_MODELS[self.sha256] = load(self.path)
        return _AVE_MODELS[self.sha256]

    def compute(self, audio: np.ndarray) -> np.ndarray:
        model = self.model
        mel = MelBackend(n_mels=int(model.config["n_mels"])).compute(audio)
        n_frames = int(len(audio) * FPS / SAMPLE_RATE) + 1  # every frame the audio reaches, a partial last one too
        return model.encode_audio_clip(mel, n_frames).numpy().astype(np.float32)

    def metadata(self) -> dict:
        return {**super().metadata(), "weights": str(self.path), "weights_sha256": self.sha256,
                "provenance": self.provenance, "label": self.label}


def ave_label(provenance: dict) -> str:
    """One line for reports: how the AVE weights were trained, always saying they are not SyncTalk's own."""
    text = str(provenance.get("weights", "locally trained lipspace AVE (no provenance recorded)"))
    return text if NOT_OFFICIAL in text else f"{text} ({NOT_OFFICIAL})"
