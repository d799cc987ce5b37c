"""The synthetic dub: another voice saying other syllables, cached as a wav."""

import numpy as np
import pytest
import soundfile as sf

from lipspace.data.schema import SAMPLE_RATE
from lipspace.data.synthetic.dub import dub_wav, synthesize_dub
from lipspace.utils.errors import LipspaceError


def _pitch(x: np.ndarray) -> float:
    """Median autocorrelation pitch (Hz) over voiced 40 ms windows."""
    w, out = int(0.04 * SAMPLE_RATE), []
    for s in range(0, len(x) - w, w):
        seg = x[s:s + w] - x[s:s + w].mean()
        if np.sqrt((seg ** 2).mean()) < 0.01:
            continue
        ac = np.correlate(seg, seg, "full")[w - 1:]
        lo, hi = SAMPLE_RATE // 400, SAMPLE_RATE // 60
        out.append(SAMPLE_RATE / (lo + np.argmax(ac[lo:hi])))
    return float(np.median(out))


def test_dub_is_speech_at_the_requested_pitch():
    low, high = synthesize_dub(3.0, f0=120.0), synthesize_dub(3.0, f0=240.0)
    assert low.shape == (3 * SAMPLE_RATE,) and low.dtype == np.float32
    assert 0.02 < np.abs(low).max() <= 1.0
    # voiced and silent stretches: speech, not a tone
    frame_rms = np.sqrt((low[: len(low) // 400 * 400].reshape(-1, 400) ** 2).mean(1))
    assert frame_rms.max() > 10 * np.percentile(frame_rms, 5)
    assert 1.6 < _pitch(high) / _pitch(low) < 2.5  # the prosody moves f0 around its base; the ratio stays


def test_dub_wav_is_cached_and_rewritten_when_parameters_change(tmp_path):
    a = dub_wav(tmp_path, seconds=1.0)
    mtime = a.stat().st_mtime_ns
    assert dub_wav(tmp_path, seconds=1.0).stat().st_mtime_ns == mtime
    audio, sr = sf.read(a)
    assert sr == SAMPLE_RATE and len(audio) == SAMPLE_RATE
    b = dub_wav(tmp_path, seconds=2.0)
    assert b == a and len(sf.read(b)[0]) == 2 * SAMPLE_RATE


def test_dub_rejects_impossible_parameters():
    with pytest.raises(LipspaceError, match="f0"):
        synthesize_dub(1.0, f0=5.0)
