"""LocalSyncExpert: one loaded expert scoring many sequences gives exactly the one-call lse_local values, and a
render and its ground truth with the same audio share one audio embedding."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from lipspace.eval.lse import lse_local
from lipspace.eval.lse_local import LocalSyncExpert
from tests.conftest import make_tiny_dataset
from tests.eval.test_lse import _dataset_arrays, _random_ave


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("LIPSPACE_AVE_WEIGHTS", raising=False)
    monkeypatch.setenv("LIPSPACE_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)


def _speech_like(path, n_frames, seed):
    rng = np.random.default_rng(seed)  # loudness and spectrum change every frame
    envelope = np.repeat(rng.uniform(0, 1, n_frames), 640)
    sf.write(path, (0.2 * envelope * rng.normal(size=envelope.size)).astype(np.float32), 16000, subtype="PCM_16")
    return path


def test_a_reused_expert_gives_the_one_call_values(tmp_path, monkeypatch):
    from lipspace.audio import features

    root = make_tiny_dataset(tmp_path / "ds", n=30, heldout=0)
    frames, lmk = _dataset_arrays(root)
    other_frames = np.ascontiguousarray(frames[::-1])
    wav_a, wav_b = _speech_like(tmp_path / "a.wav", 30, 0), _speech_like(tmp_path / "b.wav", 30, 1)
    weights = _random_ave(tmp_path / "ave.pt")
    expected = [lse_local(f, lmk, w, weights=weights)
                for f, w in ((frames, wav_a), (other_frames, wav_a), (frames, wav_b), (frames, wav_a))]
    mel_calls = []
    compute = features.MelBackend.compute
    monkeypatch.setattr(features.MelBackend, "compute", lambda self, y: mel_calls.append(len(y)) or compute(self, y))
    expert = LocalSyncExpert(weights)
    got = [expert.score(f, lmk, w) for f, w in ((frames, wav_a), (other_frames, wav_a), (frames, wav_b),
                                                 (frames, wav_a))]
    assert got == expected  # exactly: the same computation, the expert loaded once
    assert got[0]["lse_d_local"] != got[2]["lse_d_local"]  # another audio is not served from the cache
    assert len(mel_calls) == 2, "audio a (render and ground truth, and again later) and audio b: two mel spectra"
    # the cache is keyed by the samples, not the file name: new samples under the same name are recomputed
    _speech_like(wav_a, 30, 2)
    assert expert.score(frames, lmk, wav_a) != got[0]
    assert len(mel_calls) == 3
    assert expert.score(frames, lmk, wav_a) == lse_local(frames, lmk, wav_a, weights=weights)


def test_missing_checkpoint_and_bad_input_as_the_one_call_form(tmp_path):
    from lipspace.utils.errors import LipspaceError

    expert = LocalSyncExpert(tmp_path / "none.pt")
    frames, lmk = np.zeros((8, 24, 24, 3), np.uint8), np.zeros((8, 68, 2))
    assert expert.score(frames, lmk, tmp_path / "a.wav") == lse_local(frames, lmk, tmp_path / "a.wav",
                                                                      weights=tmp_path / "none.pt")
    with pytest.raises(LipspaceError, match="need at least 5"):  # input errors come first, as before
        expert.score(frames[:3], lmk[:3], tmp_path / "a.wav")
