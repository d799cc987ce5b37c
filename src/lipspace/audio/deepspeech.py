"""``deepspeech``: AD-NeRF's audio feature, the 29 character logits of the DeepSpeech v0.1.0 frozen graph.

Graph (not shipped, not downloadable by lipspace): ``output_graph.pb`` from the official DeepSpeech v0.1.0 release,
https://github.com/mozilla/DeepSpeech/releases/download/v0.1.0/deepspeech-0.1.0-models.tar.gz
(``models/output_graph.pb`` inside). Give its path as ``DeepSpeechBackend(graph_path=...)`` or in the environment
variable ``LIPSPACE_DEEPSPEECH_GRAPH``; give its sha256 (``sha256=`` or ``LIPSPACE_DEEPSPEECH_SHA256``) to have
the file checked before use: lipspace records no checksum of its own because it could not verify one here.
Running the graph needs TensorFlow (``pip install 'tensorflow<2.16'``), imported only when features are computed.

Preprocessing reproduces AD-NeRF's ``data_util/deepspeech_features/deepspeech_features.py`` (itself from VOCA):

1. audio as int16 samples at 16 kHz (lipspace float audio is scaled by 32768 and rounded: exact for PCM16 wavs);
2. ``python_speech_features.mfcc(signal, 16000, numcep=26)`` with its defaults: 25 ms frames every 10 ms
   (rectangular window, frames padded with zeros at the end), pre-emphasis 0.97, 512-point FFT power spectrum / 512,
   26 triangular mel filters 0-8000 Hz, natural log, orthonormal DCT-II, cepstral lifter 22, coefficient 0 replaced
   by the log frame energy. ``psf_mfcc`` below is a numpy re-implementation (python_speech_features is not needed);
3. every second MFCC frame (``features[::2]``: DeepSpeech's stride 2) -> 50 frames/s;
4. 9 frames of context each side, zero-padded at both ends -> [T, 19, 26];
5. ONE mean and ONE standard deviation over that whole array (padding included), subtracted / divided;
6. the graph: ``input_node`` [1, T, 494], ``input_lengths`` [T] -> ``logits`` [T, 1, 29] -> [T, 29] here.

Timing and rate. Feature k is MFCC frame 2k, whose 25 ms window is centred at k / 50 + 0.0125 s: the spec says
rate 50, first_time_s 0.0125, T = ceil(n_mfcc / 2) with n_mfcc = 1 + ceil((len - 400) / 160). AD-NeRF instead
interpolates the logits to the video frame rate (50 -> 50 at their default, with feature k taken to be at k / 50 s)
and cuts 16-wide windows with stride 2: for 25 fps video frame t that window is features 2t-8 ... 2t+7 with zero
padding outside. ``lipspace.audio.align.frame_windows(f, n, 16, 50, 25, 0.0125)`` picks exactly the same indices
(frame t centred at (t + 0.5) / 25 s -> round(2t + 0.375) = 2t), so AD-NeRF windows are reproduced without the
resampling step; the only difference is at the very end, where AD-NeRF's np.interp repeats the last logit
to reach round(len_s * 50) frames and lipspace zero-pads beyond the last real feature.

The network is injectable: ``DeepSpeechBackend(net=fn)`` with ``fn([T, 19, 26] float32) -> [T, 29]`` runs the whole
backend without TensorFlow (tests use a fixed random projection). Features computed that way are NOT DeepSpeech
features and must not be presented as such.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lipspace.audio.features import AudioBackend, FeatureSpec
from lipspace.data.schema import SAMPLE_RATE
from lipspace.utils.errors import LipspaceError

GRAPH_ENV = "LIPSPACE_DEEPSPEECH_GRAPH"
SHA256_ENV = "LIPSPACE_DEEPSPEECH_SHA256"
GRAPH_URL = "https://github.com/mozilla/DeepSpeech/releases/download/v0.1.0/deepspeech-0.1.0-models.tar.gz"
NUM_CEPSTRUM = 26
NUM_CONTEXT = 9
N_CHARS = 29  # DeepSpeech v0.1 alphabet: space, a-z, apostrophe, CTC blank
RATE = 50.0
FIRST_TIME_S = 0.0125  # centre of MFCC frame 0: (0.025 s window) / 2

Net = Callable[[np.ndarray], np.ndarray]


# --- python_speech_features 0.6 mfcc, in numpy ---------------------------------------------------------------------

def _hz2mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def _mel2hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def psf_filterbanks(nfilt: int = 26, nfft: int = 512, samplerate: int = SAMPLE_RATE, lowfreq: float = 0.0,
                    highfreq: float | None = None) -> np.ndarray:
    """[nfilt, nfft // 2 + 1] triangular mel filters, python_speech_features' ``get_filterbanks``."""
    highfreq = highfreq or samplerate / 2
    mels = np.linspace(_hz2mel(lowfreq), _hz2mel(highfreq), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(mels) / samplerate)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    i = np.arange(nfft // 2 + 1)
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        up = (i >= lo) & (i < mid)
        down = (i >= mid) & (i < hi)
        fb[j, up] = (i[up] - lo) / (mid - lo)
        fb[j, down] = (hi - i[down]) / (hi - mid)
    return fb


def psf_frames(signal: np.ndarray, frame_len: int, frame_step: int) -> np.ndarray:
    """[n, frame_len] frames, python_speech_features' ``framesig`` (ones window, zero-padded at the end)."""
    slen = len(signal)
    n = 1 if slen <= frame_len else 1 + int(np.ceil((slen - frame_len) / frame_step))
    padded = np.concatenate([signal, np.zeros(int((n - 1) * frame_step + frame_len) - slen)])
    idx = np.arange(frame_len)[None, :] + frame_step * np.arange(n)[:, None]
    return padded[idx]


def psf_mfcc(signal: np.ndarray, samplerate: int = SAMPLE_RATE, winlen: float = 0.025, winstep: float = 0.01,
             numcep: int = 13, nfilt: int = 26, nfft: int = 512, lowfreq: float = 0.0, highfreq: float | None = None,
             preemph: float = 0.97, ceplifter: int = 22, append_energy: bool = True) -> np.ndarray:
    """float64 [n_frames, numcep]: ``python_speech_features.mfcc`` (0.6) with the same arguments and defaults."""
    from scipy.fft import dct

    sig = np.asarray(signal, np.float64).reshape(-1)
    if len(sig):
        sig = np.append(sig[0], sig[1:] - preemph * sig[:-1])
    frame_len = int(np.floor(winlen * samplerate + 0.5))  # round half up, as python_speech_features
    frame_step = int(np.floor(winstep * samplerate + 0.5))
    frames = psf_frames(sig, frame_len, frame_step)
    pspec = np.square(np.abs(np.fft.rfft(frames, nfft))) / nfft
    energy = pspec.sum(1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    feat = pspec @ psf_filterbanks(nfilt, nfft, samplerate, lowfreq, highfreq).T
    feat = np.where(feat == 0, np.finfo(float).eps, feat)
    feat = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
    if ceplifter > 0:
        feat = feat * (1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(feat.shape[1]) / ceplifter))
    if append_energy:
        feat[:, 0] = np.log(energy)
    return feat


# --- AD-NeRF's input vectors -------------------------------------------------------------------------------------

def to_int16(audio: np.ndarray) -> np.ndarray:
    """lipspace float audio (+-1) -> the int16 samples AD-NeRF reads from a PCM16 wav."""
    return np.clip(np.round(np.asarray(audio, np.float64).reshape(-1) * 32768.0), -32768, 32767).astype(np.int16)


def input_vectors(audio_int16: np.ndarray, num_cepstrum: int = NUM_CEPSTRUM,
                  num_context: int = NUM_CONTEXT) -> np.ndarray:
    """float32 [T, 2 * num_context + 1, num_cepstrum]: AD-NeRF's ``conv_audio_to_deepspeech_input_vector`` before
    its final flattening (T = every second MFCC frame; zero context at both ends; one global mean/std)."""
    feats = psf_mfcc(audio_int16, SAMPLE_RATE, numcep=num_cepstrum)[::2]
    n = len(feats)
    empty = np.zeros((num_context, num_cepstrum))
    padded = np.concatenate([empty, feats, empty])
    win = 2 * num_context + 1
    x = padded[np.arange(n)[:, None] + np.arange(win)[None, :]]
    std = x.std()
    return ((x - x.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_graph(graph_path: str | Path | None = None, sha256: str | None = None) -> Path:
    """The frozen graph's path (argument, else $LIPSPACE_DEEPSPEECH_GRAPH), checked to exist and, when a sha256 is
    given (argument, else $LIPSPACE_DEEPSPEECH_SHA256), to match it."""
    raw = graph_path or os.environ.get(GRAPH_ENV)
    if not raw:
        raise LipspaceError(f"deepspeech backend needs DeepSpeech v0.1.0's output_graph.pb: set {GRAPH_ENV}=<path> "
                            f"(or audio backend arg graph_path); it is models/output_graph.pb in {GRAPH_URL}")
    path = Path(raw).expanduser()
    if not path.is_file():
        raise LipspaceError(f"{path}: DeepSpeech graph not found; download {GRAPH_URL}, unpack it and point "
                            f"{GRAPH_ENV} at models/output_graph.pb")
    want = (sha256 or os.environ.get(SHA256_ENV) or "").strip().lower()
    if want:
        got = file_sha256(path)
        if got != want:
            raise LipspaceError(f"{path}: sha256 {got} differs from the expected {want}; re-download "
                                f"{GRAPH_URL} (or fix {SHA256_ENV})")
    return path


def tensorflow_net(path: Path) -> Net:
    """A ``Net`` running the frozen graph at ``path`` in a TF1-compat session (AD-NeRF's ``prepare_deepspeech_net``)."""
    try:
        import tensorflow as tf
    except ImportError:
        raise LipspaceError(f"deepspeech backend needs tensorflow (pip install 'tensorflow<2.16') to run {path}; "
                            f"or pick another audio backend (audio.backend=phones)") from None
    try:
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(path.read_bytes())
        graph = tf.Graph()
        with graph.as_default():
            tf.import_graph_def(graph_def, name="deepspeech")
        logits = graph.get_tensor_by_name("deepspeech/logits:0")
        input_node = graph.get_tensor_by_name("deepspeech/input_node:0")
        input_lengths = graph.get_tensor_by_name("deepspeech/input_lengths:0")
    except Exception as e:  # a protobuf DecodeError, a KeyError for a missing node, ...
        raise LipspaceError(f"{path}: not a DeepSpeech v0.1.0 frozen graph ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:120]}); use models/output_graph.pb from {GRAPH_URL}") from None
    sess = tf.compat.v1.Session(graph=graph)

    def run(x: np.ndarray) -> np.ndarray:
        flat = x.reshape(1, x.shape[0], -1)  # [1, T, 19 * 26]
        out = sess.run(logits, feed_dict={input_node: flat, input_lengths: [x.shape[0]]})
        return np.asarray(out)[:, 0]  # [T, 1, 29] -> [T, 29]

    return run


class DeepSpeechBackend(AudioBackend):
    """DeepSpeech v0.1.0 logits, 29 per frame at 50 frames/s, as AD-NeRF (see the module docstring)."""

    def __init__(self, graph_path: str | None = None, sha256: str | None = None, net: Net | None = None):
        self.graph_path, self.sha256, self._net = graph_path, sha256, net
        source = "injected" if net is not None else "graph"
        self.spec = FeatureSpec("deepspeech", N_CHARS, RATE, FIRST_TIME_S,
                                params=(("net", source), ("sha256", sha256 or os.environ.get(SHA256_ENV) or ""),
                                        ("numcep", NUM_CEPSTRUM), ("numcontext", NUM_CONTEXT)))

    def net(self) -> Net:
        if self._net is None:  # check the file before importing tensorflow: the cheaper, likelier fix first
            self._net = tensorflow_net(resolve_graph(self.graph_path, self.sha256))
        return self._net

    def compute(self, audio: np.ndarray) -> np.ndarray:
        x = input_vectors(to_int16(audio))
        out = np.asarray(self.net()(x), np.float32)
        if out.shape != (len(x), N_CHARS):
            raise LipspaceError(f"deepspeech network returned shape {out.shape} for {len(x)} input frames; expected "
                                f"({len(x)}, {N_CHARS}): check the graph is DeepSpeech v0.1.0's output_graph.pb")
        return out
