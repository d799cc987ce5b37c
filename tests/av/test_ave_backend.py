"""The ``ave`` audio backend: per-frame embeddings of a (here random-init, tiny) AVE checkpoint, weights from config /
env, a clear error without them, sha256 in the cache key, provenance in the spec and the cache metadata."""

import json

import numpy as np
import pytest
import torch

from lipspace.audio.features import dataset_features, get_backend
from lipspace.audio.inputs import AudioInput, audio_track
from lipspace.av.backend import AVE_WEIGHTS_ENV
from lipspace.av.sync import NOT_OFFICIAL, AVEncoder, save
from lipspace.utils.errors import LipspaceError


def random_ave(path, seed=0, provenance="random init for lipspace tests"):
    torch.manual_seed(seed)
    return save(AVEncoder(width=4), path, {"weights": provenance})


@pytest.fixture(scope="module")
def ave_path(tmp_path_factory):
    return random_ave(tmp_path_factory.mktemp("ave") / "ave.pt")


def test_features_dim_rate_and_values(ave_path):
    b = get_backend("ave", weights=str(ave_path))
    assert (b.name, b.dim, b.rate) == ("ave", 256, 25.0)
    y = (0.2 * np.sin(np.arange(32000) * 0.07)).astype(np.float32)  # 2 s
    f = b.compute(y)
    assert f.dtype == np.float32 and f.shape == (51, 256) and np.isfinite(f).all()  # frames at 0 .. 2.0 s
    mel = get_backend("mel").compute(y)
    torch.testing.assert_close(torch.from_numpy(f), b.model.encode_audio_clip(mel, 51))


def test_provenance_and_sha_in_spec_and_key(ave_path, tmp_path):
    b = get_backend("ave", weights=str(ave_path))
    params = dict(b.spec.params)
    import hashlib

    assert params["weights_sha256"] == hashlib.sha256(ave_path.read_bytes()).hexdigest()
    assert "random init for lipspace tests" in params["provenance"] and NOT_OFFICIAL in params["provenance"]
    other = get_backend("ave", weights=str(random_ave(tmp_path / "other.pt", seed=1)))
    assert other.spec.key() != b.spec.key()


def test_weights_from_env_and_missing_file_error(ave_path, tmp_path, monkeypatch):
    monkeypatch.setenv(AVE_WEIGHTS_ENV, str(ave_path))
    assert get_backend("ave").path == ave_path
    missing = tmp_path / "nothing_here.pt"
    monkeypatch.setenv(AVE_WEIGHTS_ENV, str(missing))
    with pytest.raises(LipspaceError, match="python -m lipspace.av.train") as e:
        get_backend("ave")
    assert str(missing) in str(e.value) and "\n" not in str(e.value)


def test_dataset_windows_cache_metadata_and_dim_check(tiny_dataset, ave_path, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root, ignore=shutil.ignore_patterns("heldout", "features"))
    b = get_backend("ave", weights=str(ave_path))
    feats = dataset_features(root, b)
    meta = [json.loads(p.read_text()) for p in (root / "features").glob("ave-*.json")]
    assert len(meta) == 1 and meta[0]["weights_sha256"] == b.sha256 and NOT_OFFICIAL in meta[0]["label"]
    spec = AudioInput(backend="ave", window=1, context=8, pad="edge", backend_kwargs={"weights": str(ave_path)})
    win = audio_track(root, 20, spec, declared_dim=256)
    assert win.shape == (20, 8, 1, 256)
    np.testing.assert_array_equal(win[10, 4, 0], feats[10])  # window 1 at 25 /s: frame t reads feature t
    with pytest.raises(LipspaceError, match="width 80"):
        audio_track(root, 20, spec, declared_dim=80)
