"""A/V offset estimate: a lip signal driven by the audio energy is found at the lag it was shifted by."""

from __future__ import annotations

import numpy as np
import pytest

from lipspace.prep.avsync import audio_envelope, estimate_av_offset


def _speechlike(seconds=12.0, seed=0):
    rng = np.random.default_rng(seed)
    n_frames = int(seconds * 25)
    syll = (rng.uniform(size=n_frames) < 0.35).astype(float)  # syllable onsets per frame
    loud = np.convolve(syll, np.hanning(5), mode="same")
    t = np.arange(int(seconds * 16000)) / 16000
    gain = np.repeat(loud, 640)[: len(t)]
    audio = (0.3 * gain * np.sin(2 * np.pi * 150 * t) + 0.001 * rng.normal(size=len(t))).astype(np.float32)
    return audio, loud


@pytest.mark.parametrize("late_frames", [0, 5, -3])
def test_offset_found(late_frames):
    audio, loud = _speechlike()
    lip = np.roll(loud, -late_frames)  # audio late by k frames: the lips moved k frames earlier
    res = estimate_av_offset(lip, audio)
    assert res["offset_s"] == pytest.approx(late_frames / 25)
    assert res["correlation"] > 0.5


def test_envelope_frames():
    audio = np.zeros(16000, np.float32)
    audio[6400:7040] = 0.5  # frame 10 only
    env = audio_envelope(audio, 25)
    assert env.argmax() == 10 and env[9] < env[10] and env[11] < env[10]


def test_sequences_shorter_than_the_lag_range_are_handled():
    """A 12-frame sequence (the may clip's held-out tail) with lags of up to 0.5 s = 12 frames: lags longer than the
    sequence are skipped (they used to slice with wrapped negative ends and raise an IndexError)."""
    import numpy as np

    from lipspace.prep.avsync import estimate_av_offset

    rng = np.random.default_rng(0)
    for n in (3, 8, 12, 13):
        res = estimate_av_offset(rng.uniform(0, 1, n), rng.normal(0, 0.1, n * 640).astype(np.float32))
        assert set(res) == {"offset_s", "correlation", "zero_lag"}
