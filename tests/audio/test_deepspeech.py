"""deepspeech backend: AD-NeRF's preprocessing (python_speech_features MFCC, stride 2, context windows, global
normalisation) in numpy, the 50 fps timing against AD-NeRF's windows, and one-line errors for a missing graph /
tensorflow. The real graph is not obtainable here, so the network is a fixed random projection in these tests."""

from __future__ import annotations

import importlib.util
import math
import os
import sys

import numpy as np
import pytest

from lipspace.audio.align import frame_windows
from lipspace.audio.deepspeech import (GRAPH_ENV, SHA256_ENV, DeepSpeechBackend, input_vectors, psf_mfcc,
                                       resolve_graph, to_int16)
from lipspace.audio.features import backend_class, get_backend
from lipspace.utils.errors import LipspaceError

SR = 16000


def _burst(seconds=2.0, at=1.0, dur=0.1, noise=1e-3):
    t = np.arange(int(seconds * SR)) / SR
    y = noise * np.random.default_rng(0).standard_normal(len(t))
    on = (t >= at) & (t < at + dur)
    y[on] += 0.5 * np.sin(2 * np.pi * 1000 * t[on])
    return y.astype(np.float32)


def _reference_mfcc(sig, numcep=26, nfilt=26, nfft=512, preemph=0.97, L=22):
    """python_speech_features 0.6 mfcc, written out loop by loop from its source (independent of psf_mfcc)."""
    sig = np.asarray(sig, float)
    sig = np.append(sig[0], sig[1:] - preemph * sig[:-1])
    flen, fstep = 400, 160
    n = 1 if len(sig) <= flen else 1 + math.ceil((len(sig) - flen) / fstep)
    sig = np.concatenate([sig, np.zeros((n - 1) * fstep + flen - len(sig))])
    lowmel, highmel = 0.0, 2595 * np.log10(1 + 8000 / 700.0)
    hz = [700 * (10 ** (m / 2595.0) - 1) for m in np.linspace(lowmel, highmel, nfilt + 2)]
    b = [math.floor((nfft + 1) * h / SR) for h in hz]
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(b[j], b[j + 1]):
            fb[j, i] = (i - b[j]) / (b[j + 1] - b[j])
        for i in range(b[j + 1], b[j + 2]):
            fb[j, i] = (b[j + 2] - i) / (b[j + 2] - b[j + 1])
    k = np.arange(nfilt)
    dct = np.sqrt(2.0 / nfilt) * np.cos(np.pi * np.outer(np.arange(nfilt), 2 * k + 1) / (2 * nfilt))
    dct[0] /= np.sqrt(2.0)  # orthonormal DCT-II
    out = np.zeros((n, numcep))
    for f in range(n):
        p = np.abs(np.fft.rfft(sig[f * fstep: f * fstep + flen], nfft)) ** 2 / nfft
        e = p.sum() or np.finfo(float).eps
        fe = fb @ p
        fe[fe == 0] = np.finfo(float).eps
        c = (dct @ np.log(fe))[:numcep]
        c *= 1 + (L / 2.0) * np.sin(np.pi * np.arange(numcep) / L)
        c[0] = np.log(e)
        out[f] = c
    return out


def _random_net(seed=0):
    w = np.random.default_rng(seed).standard_normal((19 * 26, 29)).astype(np.float32) / 20

    def net(x):
        assert x.ndim == 3 and x.shape[1:] == (19, 26) and x.dtype == np.float32
        return x.reshape(len(x), -1) @ w

    return net


def test_mfcc_matches_a_loop_by_loop_python_speech_features_reference():
    y = to_int16(_burst(0.5, at=0.2))
    ours = psf_mfcc(y, numcep=26)
    ref = _reference_mfcc(y)
    assert ours.shape == ref.shape == (1 + math.ceil((len(y) - 400) / 160), 26)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_mfcc_matches_python_speech_features_when_installed():
    if importlib.util.find_spec("python_speech_features") is None:
        pytest.skip("python_speech_features is not installed (the loop-by-loop reference test covers the formulas)")
    from python_speech_features import mfcc

    y = to_int16(_burst(0.7, at=0.3))
    np.testing.assert_allclose(psf_mfcc(y, numcep=26), mfcc(y, samplerate=SR, numcep=26), rtol=1e-7, atol=1e-7)


def test_mfcc_energy_follows_the_burst_like_librosa_rms():
    import librosa

    y = _burst(2.0, at=1.0, dur=0.1)
    c0 = psf_mfcc(to_int16(y), numcep=26)[:, 0]  # log frame energy
    rms = librosa.feature.rms(y=y, frame_length=400, hop_length=160, center=False)[0]
    n = min(len(c0), len(rms))
    assert np.corrcoef(c0[:n], np.log(rms[:n] ** 2 + 1e-12))[0, 1] > 0.99
    loud = np.nonzero(c0 > c0.min() + 0.5 * (c0.max() - c0.min()))[0]
    # burst 1.00-1.10 s; frame i covers [i/100, i/100 + 0.025) s
    assert 97 <= loud.min() <= 100 and 108 <= loud.max() <= 110


@pytest.mark.parametrize("n", [0, 1, 399, 400, 401, 560, 561, 16000, 32000])
def test_input_vectors_count_context_and_padding(n):
    y = to_int16(np.random.default_rng(n).uniform(-0.5, 0.5, n))
    x = input_vectors(y)
    n_mfcc = 1 if n <= 400 else 1 + math.ceil((n - 400) / 160)
    assert x.shape == ((n_mfcc + 1) // 2, 19, 26) and x.dtype == np.float32
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-4  # one global mean / std
    # un-normalised, the zero padding is one constant value: the first 9 context rows of feature 0 and the last
    # 9 of the last feature
    pad = x[0, :9]
    assert np.allclose(pad, pad.flat[0]) and np.allclose(x[-1, 10:], pad.flat[0])
    if len(x) > 1:  # each window is the previous one shifted by one (stride-2) MFCC frame
        np.testing.assert_array_equal(x[1:, :-1], x[:-1, 1:])
        assert not np.allclose(x[0, 9], pad.flat[0])
    # the centre row is MFCC frame 2k, normalised
    raw = psf_mfcc(y, numcep=26)[::2]
    a, b = np.polyfit(raw.ravel(), x[:, 9].ravel(), 1) if raw.size > 26 else (None, None)
    if a is not None:
        np.testing.assert_allclose(a * raw + b, x[:, 9], atol=1e-4)


def test_declared_rate_and_adnerf_windows():
    b = DeepSpeechBackend(net=_random_net())
    assert backend_class("deepspeech") is DeepSpeechBackend
    assert (b.dim, b.rate, b.spec.first_time_s) == (29, 50.0, 0.0125)
    y = _burst(3.0)
    f = b.compute(y)
    assert f.shape == (150, 29) and f.dtype == np.float32 and np.isfinite(f).all()
    # AD-NeRF: logits "interpolated" 50 -> 50 fps (identity, np.interp clamps the end) to round(len_s * 50) frames,
    # zero-padded by 8 each side, 16-wide windows with stride 2 -> one window per 25 fps video frame
    n_out = int(round(len(y) / SR * 50))
    ts = np.arange(len(f)) / 50.0
    interp = np.stack([np.interp(np.arange(n_out) / 50.0, ts, f[:, k]) for k in range(29)], 1)
    padded = np.concatenate([np.zeros((8, 29)), interp, np.zeros((8, 29))])
    adnerf = np.array([padded[i:i + 16] for i in range(0, len(padded) - 16, 2)])
    n_video = len(adnerf)
    assert n_video == 75
    ours = frame_windows(f, n_video, 16, b.rate, 25.0, b.spec.first_time_s)
    np.testing.assert_allclose(ours, adnerf.astype(np.float32), rtol=0, atol=0)
    np.testing.assert_array_equal(b.compute(y), f)  # deterministic


def test_missing_graph_tensorflow_and_checksum_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(GRAPH_ENV, raising=False)
    monkeypatch.delenv(SHA256_ENV, raising=False)
    y = _burst(0.5)
    errors = []
    with pytest.raises(LipspaceError, match=rf"set {GRAPH_ENV}=<path>.*deepspeech-0\.1\.0-models\.tar\.gz") as e:
        get_backend("deepspeech").compute(y)
    errors.append(e)
    missing = tmp_path / "nope" / "output_graph.pb"
    with pytest.raises(LipspaceError, match=r"nope/output_graph\.pb: DeepSpeech graph not found; download") as e:
        DeepSpeechBackend(graph_path=str(missing)).compute(y)
    errors.append(e)
    graph = tmp_path / "output_graph.pb"
    graph.write_bytes(b"not really a graph")
    monkeypatch.setenv(GRAPH_ENV, str(graph))
    with pytest.raises(LipspaceError, match=r"output_graph\.pb: sha256 [0-9a-f]{64} differs from the expected") as e:
        DeepSpeechBackend(sha256="0" * 64).compute(y)
    errors.append(e)
    import hashlib

    assert resolve_graph(sha256=hashlib.sha256(b"not really a graph").hexdigest()) == graph
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` raises ImportError
    with pytest.raises(LipspaceError, match=r"deepspeech backend needs tensorflow \(pip install 'tensorflow<2\.16'\)") \
            as e:
        get_backend("deepspeech").compute(y)
    errors.append(e)
    bad = DeepSpeechBackend(net=lambda x: np.zeros((len(x), 28), np.float32))
    with pytest.raises(LipspaceError, match=r"returned shape \(\d+, 28\).*expected \(\d+, 29\)") as e:
        bad.compute(y)
    errors.append(e)
    for e in errors:
        assert "\n" not in str(e.value) and e.value.__cause__ is None


def test_real_deepspeech_graph():
    path = os.environ.get(GRAPH_ENV)
    if not path or not os.path.isfile(path) or importlib.util.find_spec("tensorflow") is None:
        pytest.skip(f"DeepSpeech graph not available here (set {GRAPH_ENV} to DeepSpeech v0.1.0's output_graph.pb "
                    f"and install tensorflow<2.16)")
    b = DeepSpeechBackend()
    y = _burst(2.0)
    f = b.compute(y)
    assert f.shape == (100, 29) and np.isfinite(f).all()
