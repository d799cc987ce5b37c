"""Stage cache: keys change with version / params / upstream; markers are written last and survive only whole."""

from __future__ import annotations

import numpy as np

from lipspace.prep.cache import StageCache, stage_key


def test_key_depends_on_version_params_and_upstream():
    base = stage_key("crop", 1, {"size": 512}, ["abc"])
    assert base == stage_key("crop", 1, {"size": 512}, ["abc"])
    assert base != stage_key("crop", 2, {"size": 512}, ["abc"])
    assert base != stage_key("crop", 1, {"size": 256}, ["abc"])
    assert base != stage_key("crop", 1, {"size": 512}, ["abd"])
    assert base != stage_key("head", 1, {"size": 512}, ["abc"])


def test_marker_roundtrip_and_invalidate(tmp_path):
    c = StageCache(tmp_path)
    assert not c.is_done("track", "k1")
    c.mark_done("track", "k1", {"valid_fraction": 0.5}, seconds=1.5)
    assert c.is_done("track", "k1") and not c.is_done("track", "k2")
    assert StageCache(tmp_path).marker("track")["info"] == {"valid_fraction": 0.5}
    c.invalidate("track")
    assert not c.is_done("track", "k1")


def test_torn_marker_means_not_done(tmp_path):
    c = StageCache(tmp_path)
    (c.dir / "track.json").write_text('{"key": "k1", "fin')  # a kill in the middle of a (non-atomic) write
    assert not c.is_done("track", "k1")


def test_arrays_roundtrip_without_temp_files(tmp_path):
    c = StageCache(tmp_path)
    c.save_arrays("head", pose=np.eye(4)[None].repeat(3, 0), expr=np.zeros((3, 53), np.float32))
    back = c.load_arrays("head")
    assert back["pose"].shape == (3, 4, 4) and back["expr"].dtype == np.float32
    assert sorted(p.name for p in c.dir.iterdir()) == ["head.npz"]
