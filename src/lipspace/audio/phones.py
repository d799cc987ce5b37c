"""``phones``: frame-level phone posteriors (one-hot) from an offline phone recogniser, the closest offline stand-in
for DeepSpeech's 29 per-frame character logits.

Recogniser: pocketsphinx (5.x) in all-phone mode with the CMU en-us continuous acoustic model and its phone
language model, both shipped inside the pocketsphinx wheel (``<get_model_path()>/en-us/en-us`` and
``en-us-phone.lm.bin``). Its Viterbi segmentation gives one phone per 10 ms frame; each feature frame is the
one-hot vector of that phone over the fixed inventory ``PHONES`` (dim 41)::

    0-38  the 39 ARPAbet phones AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH
          T TH UH UW V W Y Z ZH (alphabetical; no stress marks)
    39    SIL    silence (also what the model's <s>, </s>, <sil> map to)
    40    NOISE  the model's filler phones +NSN+ (noise) and +SPN+ (speech-like noise), and anything else

``label_smoothing=eps`` > 0 turns each row into (1 - eps) * one_hot + eps / 41 (rows still sum to 1); the default
is 0 (exact one-hot). No soft scores: pocketsphinx's all-phone search keeps no lattice, so per-frame posteriors
are not available cheaply.

Timing. pocketsphinx frame i covers samples [160 i, 160 i + 410) (25.625 ms window, 10 ms shift; measured: its
frame count is len(audio) // 160 and its segment boundaries move by exactly one frame per 160 samples of delay),
so its centre is at i / 100 + 0.0128 s. Segments from ``Decoder.seg()`` have an INCLUSIVE end frame. The backend
resamples these labels onto lipspace's ``center=True`` grid (the same as ``mel``/``mfcc``): T = len // 160 + 1
feature frames, frame j centred at j / 100 s, taking the label of the pocketsphinx frame whose centre is nearest
(i = j - 1, clamped to the ends; error 2.8 ms). Frames no segment covers (pocketsphinx drops the last frame or
two) repeat the previous label, and SIL where there is none.

Determinism. A fresh decoder per call (no state carried between utterances: the model's CMN is per utterance)
with pocketsphinx's own dither at a fixed seed: digital silence (all-zero samples) otherwise decodes as a long
``S`` (log of zero energy); with the dither it decodes as SIL, and the result is bit-for-bit repeatable.
Speed: 0.4-0.7 s per 10 s of audio on one (shared) core here, model loading (~0.1 s) included.
"""

from __future__ import annotations

import os

import numpy as np

from lipspace.audio.features import AudioBackend, FeatureSpec
from lipspace.data.schema import SAMPLE_RATE
from lipspace.utils.errors import LipspaceError

ARPABET = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY",
           "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y",
           "Z", "ZH")
PHONES = ARPABET + ("SIL", "NOISE")  # the feature layout: column k is PHONES[k]
SIL, NOISE = PHONES.index("SIL"), PHONES.index("NOISE")
_INDEX = {p: k for k, p in enumerate(PHONES)} | {"<s>": SIL, "</s>": SIL, "<sil>": SIL}

HOP = 160  # samples per 10 ms frame at 16 kHz
PS_WINDOW = 410  # pocketsphinx's default 25.625 ms analysis window
DITHER_SEED = 1


def phone_index(label: str) -> int:
    """Column of a pocketsphinx phone label in ``PHONES`` (fillers and unknown labels -> NOISE)."""
    return _INDEX.get(label, NOISE)


def _model_paths() -> tuple[str, str]:
    try:
        import pocketsphinx
    except ImportError:
        raise LipspaceError("phones backend needs pocketsphinx (pip install 'pocketsphinx>=5,<6'); or pick another "
                            "audio backend (audio.backend=mel)") from None
    root = pocketsphinx.get_model_path()
    hmm, lm = os.path.join(root, "en-us", "en-us"), os.path.join(root, "en-us", "en-us-phone.lm.bin")
    for p in (hmm, lm):
        if not os.path.exists(p):
            raise LipspaceError(f"{p}: missing from the pocketsphinx install; reinstall it "
                                f"(pip install --force-reinstall 'pocketsphinx>=5,<6')")
    return hmm, lm


class PhoneBackend(AudioBackend):
    """One-hot phones over ``PHONES`` at 100 frames/s (see the module docstring for model, timing, smoothing)."""

    def __init__(self, label_smoothing: float = 0.0, beam: float = 1e-48, pbeam: float = 1e-48):
        if not 0.0 <= label_smoothing < 1.0:
            raise LipspaceError(f"phones backend: label_smoothing={label_smoothing} must be in [0, 1); use 0 for "
                                f"exact one-hot or e.g. 0.1")
        self.label_smoothing, self.beam, self.pbeam = float(label_smoothing), float(beam), float(pbeam)
        self.spec = FeatureSpec("phones", len(PHONES), SAMPLE_RATE / HOP, 0.0,
                                params=(("inventory", " ".join(PHONES)), ("label_smoothing", self.label_smoothing),
                                        ("beam", self.beam), ("pbeam", self.pbeam), ("model", "cmu-en-us-ps5"),
                                        ("dither_seed", DITHER_SEED)))

    def _decoder(self):
        import pocketsphinx

        hmm, lm = _model_paths()
        return pocketsphinx.Decoder(hmm=hmm, allphone=lm, samprate=SAMPLE_RATE, beam=self.beam, pbeam=self.pbeam,
                                    dither=True, seed=DITHER_SEED, loglevel="ERROR")

    def segments(self, audio: np.ndarray) -> list[tuple[str, int, int]]:
        """pocketsphinx's (phone, first frame, last frame INCLUSIVE) segments, frames of 10 ms from sample 0."""
        x = np.asarray(audio, np.float64).reshape(-1)
        if len(x) < PS_WINDOW:  # shorter than one analysis window: nothing to decode
            return []
        pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2").tobytes()
        dec = self._decoder()
        dec.start_utt()
        dec.process_raw(pcm, no_search=False, full_utt=True)
        dec.end_utt()
        return [(s.word, int(s.start_frame), int(s.end_frame)) for s in (dec.seg() or [])]

    def frame_labels(self, audio: np.ndarray) -> np.ndarray:
        """int64 [len // 160 + 1]: the ``PHONES`` index of each feature frame (frame j centred at j / 100 s)."""
        n_out = len(np.asarray(audio).reshape(-1)) // HOP + 1
        segs = self.segments(audio)
        n_ps = max((e + 1 for _, _, e in segs), default=0)
        ps = np.full(max(n_ps, 1), -1, np.int64)
        for label, start, end in segs:
            ps[start:end + 1] = phone_index(label)  # seg() end frames are inclusive
        # forward-fill frames no segment covers (leading ones become SIL)
        last = SIL
        for i in range(len(ps)):
            if ps[i] < 0:
                ps[i] = last
            last = ps[i]
        # pocketsphinx frame centre i/100 + 0.0128 s nearest to j/100 s: i = round(j - 1.28) = j - 1
        src = np.clip(np.arange(n_out) - int(round((PS_WINDOW / 2) / HOP)), 0, len(ps) - 1)
        return ps[src]

    def compute(self, audio: np.ndarray) -> np.ndarray:
        labels = self.frame_labels(audio)
        eps = self.label_smoothing
        out = np.full((len(labels), len(PHONES)), eps / len(PHONES), np.float32)
        out[np.arange(len(labels)), labels] += 1.0 - eps
        return out
