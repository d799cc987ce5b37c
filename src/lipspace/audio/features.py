"""Audio feature backends: each declares its output width and frame rate, computes [T, dim] features from 16 kHz
mono audio, and is cached beside the dataset; `frame_windows` (lipspace.audio.align) turns them into per-video-
frame windows.

Backends here: ``mel`` (log-mel, 80 bands, 100 frames/s) and ``mfcc`` (13 MFCC + deltas + delta-deltas,
100 frames/s), as librosa computes them with ``center=True`` (feature j is centred at j / rate s; the mel
spectrogram by lipspace.audio.melspec, identical to librosa's without importing it). In their own modules:
``phones`` (lipspace.audio.phones: pocketsphinx all-phone decoding, 41 one-hot classes, 100 frames/s) and
``deepspeech`` (lipspace.audio.deepspeech: AD-NeRF's DeepSpeech v0.1 graph, 29 logits, 50 frames/s), ``hubert`` and
``wav2vec2`` (lipspace.audio.hf). ``ave`` (lipspace.av.backend): 256-d embeddings per video frame (25 /s) of the
*locally trained* audio-visual sync encoder (lipspace.av, SyncTalk-style, NOT SyncTalk's official LRS2 encoder).
The registry ``BACKENDS`` (name -> "module:Class", resolved on first use) is what configs name
(``audio.backend=mel``); ``register_backend`` adds one.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from lipspace.audio.align import frame_windows
from lipspace.data.schema import FPS, SAMPLE_RATE
from lipspace.utils.errors import LipspaceError

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
    # model-based backends (hubert, wav2vec2): the model loaded when no ``model=`` is given; recorded in run.json
    default_model: ClassVar[str | None] = None

    @classmethod
    def width(cls, **kwargs) -> int:
        """Feature width with these options, known before any feature is computed: what a conditioner's audio
        input declared as ``auto`` becomes. Default: construct the backend (cheap: models load on first use)."""
        return cls(**kwargs).dim

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


# name -> "module:Class", imported on first use (get_backend): a backend's optional dependencies (pocketsphinx,
# TensorFlow, transformers, the AVE's torch model) load only when it is used, and audio/ imports none of the modules
# that implement a backend. ``ave`` lives in lipspace.av (it needs the sync encoder); audio/ never imports av/.
BACKENDS: dict[str, str] = {
    "mel": "lipspace.audio.features:MelBackend",
    "mfcc": "lipspace.audio.features:MfccBackend",
    "phones": "lipspace.audio.phones:PhoneBackend",
    "deepspeech": "lipspace.audio.deepspeech:DeepSpeechBackend",
    "hubert": "lipspace.audio.hf:HubertBackend",  # hubert, wav2vec2: transformers, the optional [hf] extra
    "wav2vec2": "lipspace.audio.hf:Wav2Vec2Backend",
    "ave": "lipspace.av.backend:AveBackend",
}


def register_backend(name: str, target: str) -> None:
    """Make ``audio.backend=<name>`` resolve to ``target`` ("package.module:Class", an AudioBackend subclass)."""
    if ":" not in target:
        raise LipspaceError(f"audio backend '{name}': target {target!r} must be 'package.module:Class'")
    BACKENDS[name] = target


def backend_class(name: str) -> type[AudioBackend]:
    """The AudioBackend subclass registered as ``name`` (or named by a "package.module:Class" path), its module
    imported now."""
    target = BACKENDS.get(name, name if ":" in name else None)
    if target is None:
        raise LipspaceError(f"audio backend '{name}' is unknown; choose one of {sorted(BACKENDS)} or give a "
                            f"'package.module:Class' path")
    module, _, cls = target.partition(":")
    try:
        found = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise LipspaceError(f"audio backend '{name}': cannot import {target} ({e})") from None
    if not (isinstance(found, type) and issubclass(found, AudioBackend)):
        raise LipspaceError(f"audio backend '{name}': {target} is not an AudioBackend subclass")
    return found


def get_backend(name: str, **kwargs) -> AudioBackend:
    return backend_class(name)(**kwargs)


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
