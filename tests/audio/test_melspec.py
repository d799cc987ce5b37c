"""lipspace.audio.melspec computes librosa's mel spectrogram (the mel / mfcc backends' and the AVE's features)."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

from lipspace.audio import melspec
from lipspace.audio.features import MelBackend
from tests.conftest import assets_dir

librosa = pytest.importorskip("librosa")


def _librosa_mel(y, n_mels):
    return librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=160, win_length=400, n_mels=n_mels,
                                          fmin=55.0, fmax=7600.0, center=True)


def test_window_and_filters_are_librosas():
    import scipy.signal

    win = melspec.hann_window(400, 512)
    assert np.array_equal(win, librosa.util.pad_center(scipy.signal.get_window("hann", 400, fftbins=True), size=512))
    for n_mels in (80, 40, 20):
        ours = melspec.mel_filters(16000.0, 512, n_mels, 55.0, 7600.0)
        assert ours.dtype == np.float32
        assert np.array_equal(ours, librosa.filters.mel(sr=16000, n_fft=512, n_mels=n_mels, fmin=55.0, fmax=7600.0))


@pytest.mark.parametrize("n", [0, 1, 100, 511, 512, 513, 1000, 16000, 64003])
@pytest.mark.parametrize("n_mels", [80, 40])
def test_melspectrogram_equals_librosa(n, n_mels):
    """Noise with a tone and silence in it: every length class of librosa's centred STFT (shorter than a window,
    exactly one, head/tail frames computed apart, several memory blocks)."""
    rng = np.random.default_rng(n)
    t = np.arange(n) / 16000
    y = (0.1 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * 220 * t) * (t > 0.5)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa: n_fft too large for the shortest inputs
        ref = _librosa_mel(y, n_mels)
    ours = melspec.melspectrogram(y, 16000, 512, 160, 400, n_mels, 55.0, 7600.0)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype == np.float32
    # bit for bit on this machine; the stated tolerance allows another BLAS / FFT build to round differently
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-12)
    assert np.array_equal(ours, ref)


def test_mel_backend_log_mel_of_real_speech_equals_librosas():
    from lipspace.audio.features import read_audio

    assets = assets_dir()
    if assets is None or not (assets / "audio" / "dub_de_1.wav").is_file():
        pytest.skip("shared assets not present (audio/dub_de_1.wav)")
    y = read_audio(assets / "audio" / "dub_de_1.wav")
    ref = np.log10(_librosa_mel(y, 80) + 1e-6).T.astype(np.float32)
    assert np.array_equal(MelBackend().compute(y), ref)


def test_mel_backend_does_not_import_librosa():
    code = ("import sys, numpy as np; from lipspace.audio.features import MelBackend; "
            "MelBackend().compute(np.zeros(16000, np.float32)); "
            "print('librosa' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
