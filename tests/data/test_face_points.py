"""The optional per-frame track 'face_points' [N,P,3] (head space): schema checks, Clip.face_points, synthetic."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from lipspace.data.clip import load_clip
from lipspace.data.schema import validate_dataset
from lipspace.data.synthetic import generate_synthetic
from lipspace.utils.errors import LipspaceError


def with_face_points(tiny_dataset, tmp_path, points) -> object:
    d = tmp_path / "ds"
    shutil.copytree(tiny_dataset, d)
    tracks = dict(np.load(d / "tracks.npz"))
    tracks["face_points"] = points
    np.savez(d / "tracks.npz", **tracks)
    return d


def without_face_points(tiny_dataset, tmp_path):
    d = tmp_path / "ds_none"
    shutil.copytree(tiny_dataset, d)
    tracks = dict(np.load(d / "tracks.npz"))
    tracks.pop("face_points", None)
    np.savez(d / "tracks.npz", **tracks)
    return d


def test_absent_is_fine_and_clip_gives_none(tiny_dataset, tmp_path):
    d = without_face_points(tiny_dataset, tmp_path)  # a dataset prepared before the track existed
    assert "face_points" not in np.load(d / "tracks.npz")
    validate_dataset(d)
    assert load_clip(d).face_points is None


def test_present_is_validated_and_exposed(tiny_dataset, tmp_path):
    pts = np.random.default_rng(0).normal(size=(20, 7, 3)).astype(np.float32)
    d = with_face_points(tiny_dataset, tmp_path, pts)
    validate_dataset(d)
    clip = load_clip(d)
    assert clip.face_points.dtype == torch.float32
    assert tuple(clip.face_points.shape) == (20, 7, 3)
    np.testing.assert_array_equal(clip.face_points.numpy(), pts)
    np.testing.assert_array_equal(clip.tracks["face_points"], pts)  # the track itself stays as it was


@pytest.mark.parametrize("shape", [(19, 7, 3), (20, 7, 2), (20, 3, 3), (20, 21)])
def test_wrong_shape_is_a_clear_error(tiny_dataset, tmp_path, shape):
    d = with_face_points(tiny_dataset, tmp_path, np.zeros(shape, np.float32))
    with pytest.raises(LipspaceError, match=r"tracks\.npz: array 'face_points' has shape .*n_frames=20, P>=4.*"
                                            r"lipspace-prep.*lipspace-synth"):
        validate_dataset(d)


def test_nan_and_dtype_are_clear_errors(tiny_dataset, tmp_path):
    pts = np.zeros((20, 5, 3), np.float32)
    pts[3, 1, 2] = np.nan
    d = with_face_points(tiny_dataset, tmp_path, pts)
    with pytest.raises(LipspaceError, match=r"tracks\.npz: array 'face_points' contains NaN or inf \(frames \[3\]\)"
                                            r".*Re-run `lipspace-prep`"):
        validate_dataset(d)
    shutil.rmtree(d)
    d = with_face_points(tiny_dataset, tmp_path, np.zeros((20, 5, 3), np.int32))
    with pytest.raises(LipspaceError, match="'face_points' has dtype int32"):
        validate_dataset(d)


# ------------------------------------------------------------------------------------------ synthetic head
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("synth_fp") / "ds", seconds=1.6, resolution=64, seed=1,
                              heldout_utterances=1, heldout_seconds=0.4)


def test_synthetic_writes_face_points(synth):
    from lipspace.data.synthetic.scene import project

    for root in (synth, synth / "heldout" / "utt_00"):
        clip = load_clip(root)
        fp = clip.tracks["face_points"]
        assert fp.dtype == np.float32 and fp.ndim == 3 and fp.shape[0] == clip.n_frames and fp.shape[2] == 3
        assert fp.shape[1] >= 68 + 100
        # rows 0..67 are the 3-D landmarks whose projections are lmk68: pose + intrinsics put them back exactly
        t = clip.tracks
        uv = np.stack([project(fp[i, :68].astype(np.float64), t["pose"][i], t["intrinsics"])
                       for i in range(len(fp))])
        assert np.abs(uv - t["lmk68"]).max() < 1e-3
    p = load_clip(synth).tracks["face_points"]
    assert p.shape[1] == load_clip(synth / "heldout" / "utt_00").tracks["face_points"].shape[1]  # same head, same P


def test_synthetic_face_points_move_with_the_jaw_not_the_pose(synth):
    from lipspace.data.schema import ICT_EXPR_NAMES

    clip = load_clip(synth)
    fp = clip.tracks["face_points"].astype(np.float64)
    jaw = clip.tracks["expr"][:, ICT_EXPR_NAMES.index("jawOpen")]
    motion = np.linalg.norm(fp - fp.mean(0), axis=-1).max(0)  # per point, over the clip
    assert motion[68:].min() == 0.0 and (motion[68:] > 0).any()  # skull / nose points fixed, jaw points move
    chin = fp[:, 8, 1]  # head-space y (down) of the chin landmark follows the jaw opening
    assert np.corrcoef(chin, jaw)[0, 1] > 0.9
    # inside the head sphere in every frame
    c, r = clip.sphere("head_bounds")
    assert np.linalg.norm(fp - c.numpy(), axis=-1).max() <= r
