"""phones backend: fixed inventory, declared rate, inclusive segment ends, timing vs the speech onset, real speech."""

from __future__ import annotations

import numpy as np
import pytest

from lipspace.audio.align import frame_windows
from lipspace.audio.features import backend_class, get_backend
from lipspace.audio.phones import ARPABET, NOISE, PHONES, SIL, PhoneBackend, phone_index
from lipspace.utils.errors import LipspaceError
from tests.conftest import assets_dir

SR = 16000


def _speech(seconds: float = 10.0) -> np.ndarray:
    a = assets_dir()
    wav = a / "audio" / "speech_en_60s.wav" if a else None
    if wav is None or not wav.is_file():
        pytest.skip("real English speech (shared/assets/audio/speech_en_60s.wav) not available; set LIPSPACE_ASSETS")
    import soundfile as sf

    y, sr = sf.read(str(wav), dtype="float32", frames=int(seconds * SR))
    assert sr == SR
    return y


def test_inventory_is_fixed_and_registered():
    assert len(ARPABET) == 39 and len(set(ARPABET)) == 39
    assert PHONES[-2:] == ("SIL", "NOISE") and len(PHONES) == 41
    assert phone_index("AA") == 0 and phone_index("ZH") == 38
    assert phone_index("<sil>") == SIL and phone_index("+NSN+") == NOISE and phone_index("+SPN+") == NOISE
    assert phone_index("QQ") == NOISE
    assert backend_class("phones") is PhoneBackend
    b = get_backend("phones")
    assert (b.dim, b.rate, b.spec.first_time_s) == (41, 100.0, 0.0)


def test_tone_and_noise_are_one_hot_silence_at_the_declared_rate():
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * SR)) / SR
    b = PhoneBackend()
    for y in ((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
              (0.05 * rng.standard_normal(len(t))).astype(np.float32),
              np.zeros(len(t), np.float32)):  # digital silence: decodes as a long "S" without pocketsphinx's dither
        f = b.compute(y)
        assert f.dtype == np.float32 and f.shape == (len(y) // 160 + 1, 41)
        np.testing.assert_array_equal(f.sum(1), 1.0)
        assert set(np.unique(f)) <= {0.0, 1.0}
        lab = f.argmax(1)
        assert np.isin(lab, [SIL, NOISE]).mean() >= 0.9, [PHONES[i] for i in np.unique(lab)]
        np.testing.assert_array_equal(b.compute(y), f)  # deterministic


def test_label_smoothing_and_short_audio():
    y = np.zeros(SR // 2, np.float32)
    f = PhoneBackend(label_smoothing=0.1).compute(y)
    np.testing.assert_allclose(f.sum(1), 1.0, rtol=1e-6)
    assert np.allclose(f.max(1), 0.9 + 0.1 / 41) and np.allclose(f.min(1), 0.1 / 41)
    assert PhoneBackend().spec.key() != PhoneBackend(label_smoothing=0.1).spec.key()
    for n in (0, 1, 200, 409, 410):  # shorter than one analysis window -> SIL
        f = PhoneBackend().compute(np.zeros(n, np.float32))
        assert f.shape == (n // 160 + 1, 41) and np.isfinite(f).all()
    with pytest.raises(LipspaceError, match=r"label_smoothing=1\.5 must be in \[0, 1\)"):
        PhoneBackend(label_smoothing=1.5)


def test_segments_map_to_frames_with_inclusive_ends(monkeypatch):
    b = PhoneBackend()
    # pocketsphinx frames 0..2 SIL, 3..5 AA (end inclusive), 6 uncovered (-> forward fill), 7..9 B
    monkeypatch.setattr(b, "segments", lambda audio: [("SIL", 0, 2), ("AA", 3, 5), ("B", 7, 9)])
    lab = b.frame_labels(np.zeros(1600, np.float32))  # 11 output frames centred at j / 100 s
    # output frame j takes pocketsphinx frame j - 1 (centre j/100 + 0.0028 s), clamped at 0 and at the end
    expect = [SIL, SIL, SIL, SIL, 0, 0, 0, 0, ARPABET.index("B"), ARPABET.index("B"), ARPABET.index("B")]
    np.testing.assert_array_equal(lab, expect)


def test_real_speech_phones_follow_the_speech():
    y = _speech(10.0)
    prefix = 1.0
    x = np.concatenate([np.zeros(int(prefix * SR), np.float32), y])
    b = PhoneBackend()
    f = b.compute(x)
    assert f.shape == (len(x) // 160 + 1, 41)
    lab = f.argmax(1)
    assert (lab[: int(prefix * 100)] == SIL).all()  # the generated silence prefix
    # speech onset from energy (10 ms frames): the first non-SIL phone lies within 60 ms of it
    rms = np.sqrt(np.mean(x[: len(x) // 160 * 160].reshape(-1, 160) ** 2, 1))
    onset = int(np.argmax(rms > 0.1 * rms.max()))
    first_phone = int(np.argmax(lab != SIL))
    assert abs(first_phone - onset) <= 6, (first_phone, onset)
    speech = lab[onset:]
    assert (speech != SIL).mean() > 0.7  # mostly phones while someone talks
    assert len(np.unique(speech)) >= 20  # and many different ones
    changes = np.count_nonzero(np.diff(lab)) + 1
    assert 40 <= changes <= 200  # a few phones per second of speech (~60-80 segments measured)
    # feature j is centred at j / 100 s: a 16-wide window around 25 fps video frame t is centred on feature 4t + 2
    w = frame_windows(f, 250, 16, b.rate, 25.0, b.spec.first_time_s)
    np.testing.assert_array_equal(w[150, 8], f[602])
