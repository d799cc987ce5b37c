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
from lipspace.data.schema import SAMPLE_RATE
from lipspace.utils.errors import LipspaceError


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


def wav_track(wav, n_frames: int, spec: AudioInput, declared_dim: int | None = None,
              who: str = "conditioner") -> np.ndarray:
    """Like audio_track, for a new driving audio (not cached): a 16 kHz wav file, a :class:`DrivingAudio` or a
    float32 16 kHz mono array."""
    from lipspace.audio.features import read_audio

    spec = AudioInput.of(spec)
    backend = _checked_backend(spec, declared_dim, who)
    audio = wav.audio if isinstance(wav, DrivingAudio) else wav if isinstance(wav, np.ndarray) else read_audio(wav)
    return _frame_windows(backend.compute(audio), backend, spec, n_frames)


def wav_frames(wav: str | Path, fps: float = 25.0) -> int:
    """Number of video frames a driving wav covers at ``fps``."""
    import soundfile as sf

    try:
        info = sf.info(str(wav))
    except (RuntimeError, OSError) as e:
        raise LipspaceError(f"{wav}: cannot read as audio ({' '.join(str(e).split())[:160]}); pass a 16 kHz wav "
                            f"(`ffmpeg -i in -ac 1 -ar 16000 out.wav`)") from None
    return int(info.frames / info.samplerate * fps)


# ------------------------------------------------------------------------------------- driving audio, any wav
SILENCE_DBFS = -60.0  # RMS below this: no speech to sync lips to (speech is typically -30 to -15 dBFS)
SHORT_SECONDS = 1.0  # below this a dub is scored, with a note: too short for the official SyncNet pipeline


@dataclass
class DrivingAudio:
    """A driving audio file read and normalised to lipspace's 16 kHz mono float32 (:func:`load_driving_audio`).

    ``notes`` say what was converted (resampled, downmixed); ``silent`` / ``speech_status`` say when the file holds
    no speech (RMS below ``SILENCE_DBFS``)."""

    path: Path
    audio: np.ndarray
    source_rate: int
    channels: int
    notes: list[str] = field(default_factory=list)

    sample_rate = SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def n_frames(self, fps: float = 25.0) -> int:
        """Video frames the audio covers at ``fps`` (as :func:`wav_frames`)."""
        return int(len(self.audio) / SAMPLE_RATE * fps)

    @property
    def rms_dbfs(self) -> float:
        rms = float(np.sqrt(np.mean(np.square(self.audio, dtype=np.float64)))) if len(self.audio) else 0.0
        return 20 * np.log10(rms) if rms > 0 else -np.inf

    @property
    def silent(self) -> bool:
        return self.rms_dbfs < SILENCE_DBFS

    @property
    def speech_status(self) -> str:
        """'' when the audio may hold speech, else why it holds none."""
        if not self.silent:
            return ""
        return (f"the driving audio {self.path.name} is silent (RMS {self.rms_dbfs:.0f} dBFS, below "
                f"{SILENCE_DBFS:.0f} dBFS): no speech to sync the lips to")

    def short_note(self) -> str:
        """A note for audio shorter than ``SHORT_SECONDS`` ('' otherwise)."""
        if self.seconds >= SHORT_SECONDS:
            return ""
        return (f"{self.seconds:.2f} s: shorter than {SHORT_SECONDS:.0f} s, lip-sync scores are unreliable (the "
                f"official SyncNet pipeline needs a face track of more than 50 frames = 2 s)")

    def write(self, out: str | Path) -> Path:
        """The normalised audio as a 16 kHz mono 16-bit wav at ``out``."""
        import soundfile as sf

        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out), np.clip(self.audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
        return out


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:160]


def _decode_with_pyav(path: Path) -> tuple[np.ndarray, int]:
    """[samples, channels] float32 and the rate of the first audio stream of any container ffmpeg reads."""
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            raise ValueError("no audio stream")
        stream = c.streams.audio[0]
        chunks, rate = [], stream.rate
        for frame in c.decode(stream):
            x = frame.to_ndarray()
            if frame.format.is_planar:
                x = x.T  # [channels, samples] -> [samples, channels]
            else:
                x = x.reshape(-1, len(frame.layout.channels))
            if np.issubdtype(x.dtype, np.integer):
                x = x.astype(np.float32) / np.iinfo(x.dtype).max
            chunks.append(x.astype(np.float32))
            rate = frame.sample_rate or rate
    if not chunks:
        return np.zeros((0, 1), np.float32), int(rate or SAMPLE_RATE)
    return np.concatenate(chunks, 0), int(rate)


def load_driving_audio(path: str | Path) -> DrivingAudio:
    """Read a driving / dubbed audio file into 16 kHz mono float32, or raise one LipspaceError line that names the
    file, says what is wrong with it and how to fix it.

    Any sample rate is resampled (polyphase, ``scipy.signal.resample_poly``) and any channel count is averaged to
    mono, each recorded in ``notes``; files libsndfile cannot read are tried with ffmpeg (PyAV). An empty file,
    a file that is not audio, one with no samples or with non-finite samples is an error."""
    SR = SAMPLE_RATE
    path = Path(path)
    fix = f"pass a speech recording, e.g. converted with `ffmpeg -i <your audio> -ac 1 -ar {SR} {path.stem}_16k.wav`"
    if not path.is_file():
        raise LipspaceError(f"{path}: no such audio file; {fix}")
    if path.stat().st_size == 0:
        raise LipspaceError(f"{path}: empty file (0 bytes), not audio; {fix}")
    import soundfile as sf

    try:
        y, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as e_sf:  # soundfile's LibsndfileError is a RuntimeError
        try:
            y, rate = _decode_with_pyav(path)
        except Exception as e_av:  # PyAV's InvalidDataError & co: ffmpeg cannot read it either
            head = path.read_bytes()[:64]
            kind = ("a text file" if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head)
                    else "an unknown format")
            raise LipspaceError(f"{path}: not an audio file ({kind}: libsndfile says "
                                f"'{_short(e_sf).replace(str(path), path.name)}', ffmpeg says "
                                f"'{_short(e_av).replace(str(path), path.name)}'); {fix}") from None
    if y.shape[0] == 0:
        raise LipspaceError(f"{path}: has no audio samples (a valid header with 0 frames); {fix}")
    if not np.isfinite(y).all():
        raise LipspaceError(f"{path}: holds non-finite samples (NaN / inf), a broken float wav; {fix}")
    notes, channels = [], y.shape[1]
    y = y.mean(axis=1) if channels > 1 else y[:, 0]
    if channels > 1:
        notes.append(f"downmixed from {channels} channels to mono")
    if rate != SR:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(rate), SR)
        y = resample_poly(y, SR // g, int(rate) // g).astype(np.float32)
        notes.insert(0, f"resampled from {int(rate)} Hz to {SR} Hz")
    return DrivingAudio(path, np.ascontiguousarray(y, dtype=np.float32), int(rate), channels, notes)
