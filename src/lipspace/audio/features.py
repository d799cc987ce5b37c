"""Audio feature backends: each declares its output width and frame rate, computes [T, dim] features from 16 kHz
mono audio, and is cached beside the dataset; `frame_windows` (lipspace.audio.align) turns them into per-video-
frame windows.

Backends here: ``mel`` (log-mel, 80 bands, 100 frames/s) and ``mfcc`` (13 MFCC + deltas + delta-deltas,
100 frames/s), as librosa computes them with ``center=True`` (feature j is centred at j / rate s; the mel
spectrogram by lipspace.audio.melspec, identical to librosa's without importing it). In their own modules:
``phones`` (lipspace.audio.phones: pocketsphinx all-phone decoding, 41 one-hot classes, 100 frames/s) and
``deepspeech`` (lipspace.audio.deepspeech: AD-NeRF's DeepSpeech v0.1 graph, 29 logits, 50 frames/s). ``ave``
(below): 256-d embeddings per video frame (25 /s) of the *locally trained* audio-visual sync encoder
(lipspace.av, SyncTalk-style, NOT SyncTalk's official LRS2 encoder), weights from ``$LIPSPACE_AVE_WEIGHTS`` or
``$LIPSPACE_CACHE/ave_local.pt``, else trained on the run's clip by ``lipspace.av.auto``. The registry
``BACKENDS`` is what configs name (``audio.backend=mel``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lipspace.audio.align import frame_windows
from lipspace.data.schema import FPS, SAMPLE_RATE
from lipspace.assets import file_sha256
from lipspace.errors import LipspaceError

FEATURE_DIR = "features"


@dataclass(frozen=True)
class FeatureSpec:
    """What a backend produces: ``dim`` values per feature frame, ``rate`` frames per second, feature j centred
    at ``first_time_s + j / rate``."""

    backend: str
    dim: int
    rate: float
    first_time_s: float = 0.0
    version: int = 1
    params: tuple = ()  # (name, value) pairs that change the values: part of the cache key

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:16]


class AudioBackend:
    """Base class: subclasses set ``spec`` and implement ``compute``."""

    spec: FeatureSpec

    @property
    def name(self) -> str:
        return self.spec.backend

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def rate(self) -> float:
        return self.spec.rate

    def compute(self, audio: np.ndarray) -> np.ndarray:
        """float32 [T, dim] from float32 mono audio at 16 kHz."""
        raise NotImplementedError

    def metadata(self) -> dict:
        """What the feature cache records beside the array (the spec; subclasses add provenance)."""
        return asdict(self.spec)


class MelBackend(AudioBackend):
    """Log-mel spectrogram: 25 ms Hann windows every 10 ms, ``n_mels`` bands 55-7600 Hz, log10(power + 1e-6)."""

    def __init__(self, n_mels: int = 80, hop_s: float = 0.01, win_s: float = 0.025, fmin: float = 55.0,
                 fmax: float = 7600.0):
        self.hop = int(round(hop_s * SAMPLE_RATE))
        self.win = int(round(win_s * SAMPLE_RATE))
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.n_mels, self.fmin, self.fmax = n_mels, fmin, fmax
        self.spec = FeatureSpec("mel", n_mels, SAMPLE_RATE / self.hop,
                                params=(("n_mels", n_mels), ("hop", self.hop), ("win", self.win), ("fmin", fmin),
                                        ("fmax", fmax)))

    def power_mel(self, audio: np.ndarray) -> np.ndarray:
        # librosa.feature.melspectrogram(..., center=True), bit for bit, without importing librosa (lipspace.audio.
        # melspec: its import and first-use numba JIT cost 2-30 s per process)
        from lipspace.audio.melspec import melspectrogram

        return melspectrogram(np.asarray(audio, np.float32), SAMPLE_RATE, self.n_fft, self.hop, self.win,
                              self.n_mels, self.fmin, self.fmax)

    def compute(self, audio: np.ndarray) -> np.ndarray:
        return np.log10(self.power_mel(audio) + 1e-6).T.astype(np.float32)


class MfccBackend(AudioBackend):
    """``n_mfcc`` MFCCs of the 40-band log-mel spectrogram (dB) plus their deltas and delta-deltas."""

    def __init__(self, n_mfcc: int = 13, deltas: bool = True):
        self.mel = MelBackend(n_mels=40)
        self.n_mfcc, self.deltas = n_mfcc, deltas
        dim = n_mfcc * (3 if deltas else 1)
        self.spec = FeatureSpec("mfcc", dim, self.mel.rate, params=(("n_mfcc", n_mfcc), ("deltas", deltas),
                                                                    ("mel", self.mel.spec.params)))

    def compute(self, audio: np.ndarray) -> np.ndarray:
        import librosa

        mfcc = librosa.feature.mfcc(S=librosa.power_to_db(self.mel.power_mel(audio)), n_mfcc=self.n_mfcc)
        parts = [mfcc]
        if self.deltas:
            width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))  # librosa needs an odd width <= frames
            if width >= 3:
                parts += [librosa.feature.delta(mfcc, width=width), librosa.feature.delta(mfcc, order=2, width=width)]
            else:  # a clip of one or two feature frames has no usable derivative
                parts += [np.zeros_like(mfcc), np.zeros_like(mfcc)]
        return np.concatenate(parts, 0).T.astype(np.float32)


AVE_WEIGHTS_ENV = "LIPSPACE_AVE_WEIGHTS"
DEFAULT_AVE_WEIGHTS = "ave_local.pt"  # in the project cache (lipspace.assets.cache_dir)
_AVE_MODELS: dict[str, object] = {}  # sha256 -> loaded AVEncoder


def default_ave_weights() -> Path:
    """``$LIPSPACE_CACHE/ave_local.pt`` (``~/.cache/lipspace/ave_local.pt`` without it): where `python -m
    lipspace.av.train` writes by default."""
    from lipspace.assets import cache_dir

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
                f"--train <dataset dir> [<dataset dir> ...] --out {path}`, or use conditioner.audio.backend=mel "
                f"(with conditioner.inputs.audio=80)")
        self.path, self.sha256 = path, file_sha256(path)
        model = self.model
        self.provenance = dict(model.provenance)
        self.label = ave_label(self.provenance)
        # feature j is the window centred on video frame j's centre, (j + 0.5) / fps (lipspace.audio.align)
        self.spec = FeatureSpec("ave", int(model.config["dim"]), float(FPS), first_time_s=0.5 / FPS,
                                params=(("weights_sha256", self.sha256), ("provenance", self.label),
                                        ("config", json.dumps(model.config, sort_keys=True))))

    @property
    def model(self):
        if self.sha256 not in _AVE_MODELS:
            from lipspace.av.sync import load

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
    from lipspace.av.sync import NOT_OFFICIAL

    text = str(provenance.get("weights", "locally trained lipspace AVE (no provenance recorded)"))
    return text if NOT_OFFICIAL in text else f"{text} ({NOT_OFFICIAL})"


BACKENDS = {"mel": MelBackend, "mfcc": MfccBackend, "ave": AveBackend}
# "phones" (lipspace.audio.phones.PhoneBackend) and "deepspeech" (lipspace.audio.deepspeech.DeepSpeechBackend)
# subclass AudioBackend above and add themselves to BACKENDS when imported; importing them here completes the
# registry whichever module is imported first (a `from ... import` here would fail when they are imported first).
import lipspace.audio.deepspeech  # noqa: E402,F401
import lipspace.audio.hf  # noqa: E402,F401  (hubert, wav2vec2: transformers, the optional [hf] extra)
import lipspace.audio.phones  # noqa: E402,F401


def get_backend(name: str, **kwargs) -> AudioBackend:
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise LipspaceError(f"audio backend '{name}' is unknown; choose one of {sorted(BACKENDS)}") from None
    return cls(**kwargs)


def read_audio(path: str | Path) -> np.ndarray:
    """float32 mono audio of a dataset's audio.wav or any wav, checked to be 16 kHz."""
    import soundfile as sf

    path = Path(path)
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise LipspaceError(f"{path}: cannot read as audio ({' '.join(str(e).split())[:160]}); pass a wav file "
                            f"(convert with `ffmpeg -i in -ac 1 -ar 16000 out.wav`)") from None
    if sr != SAMPLE_RATE:
        raise LipspaceError(f"{path}: sample rate {sr} Hz, lipspace audio is {SAMPLE_RATE} Hz mono; convert with "
                            f"`ffmpeg -i {path.name} -ac 1 -ar 16000 out.wav`")
    return audio.mean(axis=1)


def dataset_features(root: str | Path, backend: AudioBackend) -> np.ndarray:
    """Features of ``<root>/audio.wav``, cached as ``<root>/features/<backend>-<key>.npy`` (recomputed when the
    audio file changes: its size and mtime are part of the cache name) with ``<backend>-<key>.json`` beside it
    holding ``backend.metadata()``."""
    root = Path(root)
    wav = root / "audio.wav"
    st = wav.stat() if wav.is_file() else None
    if st is None:
        raise LipspaceError(f"{wav}: missing; a lipspace dataset has its speech in audio.wav (regenerate it)")
    tag = hashlib.sha256(f"{backend.spec.key()}-{st.st_size}-{st.st_mtime_ns}".encode()).hexdigest()[:16]
    path = root / FEATURE_DIR / f"{backend.name}-{tag}.npy"
    if path.is_file():
        return np.load(path)
    feats = backend.compute(read_audio(wav))
    try:
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npy")
        np.save(tmp, feats)
        os.replace(tmp, path)
        # what the array is (spec, and e.g. the AVE weights' provenance), for reports reading the cache
        path.with_suffix(".json").write_text(json.dumps(backend.metadata(), indent=2, default=str))
    except OSError:
        pass  # a read-only dataset: features are simply recomputed next time
    return feats


def audio_windows(features: np.ndarray, spec: FeatureSpec, n_frames: int, window: int, fps: float = FPS,
                  pad: str = "zero") -> np.ndarray:
    """float32 [n_frames, window, dim]: the window of feature frames centred on each video frame."""
    return frame_windows(features, n_frames, window, spec.rate, fps, spec.first_time_s, pad=pad).astype(np.float32)


def check_feature_dim(backend: AudioBackend, expected: int, who: str) -> None:
    """One clear line at start-up when a conditioner's configured audio width differs from the backend's."""
    if backend.dim != expected:
        raise LipspaceError(f"{who} expects audio features of width {expected}, but backend '{backend.name}' gives "
                            f"{backend.dim} per frame; set its declared width (e.g. conditioner.inputs.audio) to "
                            f"{backend.dim} or pick a backend of width {expected}")
