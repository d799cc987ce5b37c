"""The Head-Sync Stabilizer (prep option ``stabilize``): pose jitter, keypoint tracking, back-projection, the
two-stage bundle adjustment on synthetic ground truth, the option's wiring, and a real clip (slow)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from lipspace.prep.bundle import bundle_adjust, so3_exp
from lipspace.prep.camera import pose_jitter, rotation_angle_deg
from lipspace.prep.keypoints import FACE_OVAL, LEFT_EYE, LOWER_FACE, RIGHT_EYE, rigid_mask, track_keypoints
from lipspace.prep.options import PrepOptions
from lipspace.prep.pipeline import STAGES, Preprocessor
from lipspace.prep.stabilize import backproject, mesh_triangles
from lipspace.utils.errors import LipspaceError


def _poses(rotvec: np.ndarray, trans: np.ndarray) -> np.ndarray:
    p = np.tile(np.eye(4), (len(rotvec), 1, 1))
    p[:, :3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    p[:, :3, 3] = trans
    return p


# ------------------------------------------------------------------------------------------------ jitter measure
def test_pose_jitter_zero_for_constant_velocity_and_known_for_a_kick():
    n = 20
    rv = np.zeros((n, 3))
    rv[:, 1] = np.radians(0.5) * np.arange(n)  # constant angular velocity about y
    t = np.stack([0.01 * np.arange(n), np.zeros(n), np.full(n, 5.0)], -1)  # constant velocity
    j = pose_jitter(_poses(rv, t))
    assert j["rot_acc_deg_mean"] < 1e-6 and j["trans_acc_mean"] < 1e-9
    rv[10, 1] += np.radians(1.0)  # one frame off by 1 degree: accelerations 1, 2, 1 deg/frame² around it
    t[10, 0] += 0.1
    k = pose_jitter(_poses(rv, t))
    assert k["rot_acc_deg_mean"] == pytest.approx(4.0 / 18, rel=1e-4)
    assert k["trans_acc_mean"] == pytest.approx(0.4 / 18, rel=1e-6)
    valid = np.ones(n, bool)
    valid[10] = False  # triples through an invalid frame are left out
    assert pose_jitter(_poses(rv, t), valid)["rot_acc_deg_p95"] < 1e-6
    assert pose_jitter(_poses(rv[:2], t[:2]))["rot_acc_deg_mean"] == 0.0


def test_so3_exp_matches_scipy_and_is_differentiable_at_zero():
    w = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [1e-6, 0.0, 2e-6]], dtype=torch.float64, requires_grad=True)
    r = so3_exp(w)
    np.testing.assert_allclose(r.detach().numpy(), Rotation.from_rotvec(w.detach().numpy()).as_matrix(), atol=1e-12)
    r.sum().backward()
    assert torch.isfinite(w.grad).all()


# ------------------------------------------------------------------------------------------------ keypoints
def _fake_landmarks(center, hw) -> np.ndarray:
    """478 landmarks whose face oval is a circle of radius 40 around ``center``; the mouth/eye parts a speck in the
    corner; the jaw-line part of the oval still cuts a segment off the disc."""
    lmk = np.tile(np.array([[2.0, 2.0]]), (478, 1)) + np.random.default_rng(0).uniform(0, 0.5, (478, 2))
    ang = np.linspace(0, 2 * np.pi, len(FACE_OVAL), endpoint=False)
    lmk[list(FACE_OVAL)] = np.asarray(center) + 40 * np.stack([np.cos(ang), np.sin(ang)], -1)
    lmk[[i for i in LOWER_FACE + RIGHT_EYE + LEFT_EYE if i not in FACE_OVAL]] = [2.0, 2.0]
    return lmk


def test_keypoints_follow_a_known_subpixel_shift_and_stay_in_the_mask():
    rng = np.random.default_rng(1)
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (160, 160)).astype(np.float32), (0, 0), 1.5)
    tex = np.clip((tex - tex.mean()) * 4 + 128, 0, 255)
    n, hw, step = 12, (128, 128), np.array([0.4, -0.3])
    frames, lmks = [], []
    for i in range(n):
        m = np.float32([[1, 0, -16 + step[0] * i], [0, 1, -16 + step[1] * i]])
        img = cv2.warpAffine(tex, m, hw[::-1], flags=cv2.INTER_CUBIC)
        frames.append(np.repeat(img.astype(np.uint8)[..., None], 3, -1))
        lmks.append(_fake_landmarks((64 + step[0] * i, 64 + step[1] * i), hw))
    frames, lmks = np.stack(frames), np.stack(lmks)
    mask = rigid_mask(lmks[0], hw)
    assert mask[64, 64] == 255 and mask[64, 5] == 0
    kp = track_keypoints(lambda idx: frames[idx], lmks, np.ones(n, bool), max_points=100, chunk=5)
    assert kp.n_tracks >= 30 and kp.summary()["points_per_frame_median"] >= 30
    first = {}
    errs = []
    for f, p, uv in zip(kp.frame, kp.track, kp.uv):
        f0, uv0 = first.setdefault(p, (f, uv))
        errs.append(np.linalg.norm(uv - uv0 - step * (f - f0)))
    assert np.median(errs) < 0.1
    assert (kp.seed_frame <= n - 5).all()  # shorter tracks were dropped


def test_backproject_onto_a_plane_recovers_the_points():
    xs, ys = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5))
    verts = np.stack([xs.ravel(), ys.ravel(), np.zeros(25)], -1)
    quads = np.array([[r * 5 + c, r * 5 + c + 1, (r + 1) * 5 + c + 1, (r + 1) * 5 + c] for r in range(4) for c in
                      range(4)])
    tris = mesh_triangles(quads)
    assert tris.shape == (32, 3)
    pose = _poses(np.array([[0.1, -0.2, 0.05]]), np.array([[0.1, 0.0, 5.0]]))[0]
    intr = np.array([200.0, 200.0, 64.0, 64.0])
    truth = np.array([[0.3, -0.4, 0.0], [-0.77, 0.5, 0.0], [0.0, 0.0, 0.0]])
    xc = truth @ pose[:3, :3].T + pose[:3, 3]
    uv = np.concatenate([200 * xc[:, :2] / xc[:, 2:] + 64, [[0.0, 0.0]]])  # the last pixel misses the mesh
    pts, hit = backproject(uv, verts, tris, pose, intr)
    assert hit.tolist() == [True, True, True, False]
    np.testing.assert_allclose(pts[:3], truth, atol=1e-9)
    assert not backproject(np.array([[0.0, 0.0], [1.0, 2.0]]), verts, tris, pose, intr)[1].any()  # all off


# ------------------------------------------------------------------------------------------------ bundle adjustment
def _synthetic_tracks(n=120, p=100, size=128, noise_px=0.15, seed=0):
    rng = np.random.default_rng(seed)
    tt = np.arange(n) / 25
    rv = np.stack([0.15 * np.sin(2 * np.pi * 0.3 * tt), 0.2 * np.sin(2 * np.pi * 0.2 * tt + 1),
                   0.05 * np.sin(2 * np.pi * 0.5 * tt)], -1)
    gt = _poses(rv, np.stack([0.05 * np.sin(tt), 0.03 * np.cos(0.7 * tt), 4.5 + 0.1 * np.sin(0.5 * tt)], -1))
    dirs = rng.normal(size=(p, 3))
    dirs[:, 2] = -2 * np.abs(dirs[:, 2])  # the face side (head space looks along -z)
    x = 0.9 * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    f = 1.9 * size
    intr = np.array([f, f, size / 2, size / 2])
    frame, track, uv = [], [], []
    for k in range(p):
        s = rng.integers(0, n - 20)
        for t in range(s, min(n, s + rng.integers(20, 80))):
            xc = gt[t, :3, :3] @ x[k] + gt[t, :3, 3]
            frame.append(t)
            track.append(k)
            uv.append(f * xc[:2] / xc[2] + size / 2 + rng.normal(0, noise_px, 2))
    noisy = gt.copy()  # a landmark fit: 0.5 degrees and 0.01 units of per-frame noise
    noisy[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, np.radians(0.5), (n, 3))).as_matrix() @ gt[:, :3, :3]
    noisy[:, :3, 3] += rng.normal(0, 0.01, (n, 3))
    x0 = x + rng.normal(0, 0.02, x.shape)  # back-projection error
    return np.array(frame), np.array(track), np.array(uv), x0, noisy, gt, intr


def test_bundle_adjustment_recovers_poses_better_than_the_noisy_fit_and_lowers_jitter():
    frame, track, uv, x0, noisy, gt, intr = _synthetic_tracks()
    valid = np.ones(len(gt), bool)
    pose, pts, used, info = bundle_adjust(frame, track, uv, x0, noisy, intr, valid, 128)
    assert used.mean() > 0.9
    rot_err = rotation_angle_deg(pose[used, :3, :3], gt[used, :3, :3]).mean()
    rot_err0 = rotation_angle_deg(noisy[used, :3, :3], gt[used, :3, :3]).mean()
    t_err = np.linalg.norm(pose[used, :3, 3] - gt[used, :3, 3], axis=1).mean()
    t_err0 = np.linalg.norm(noisy[used, :3, 3] - gt[used, :3, 3], axis=1).mean()
    assert rot_err < 0.5 * rot_err0 and t_err < 0.5 * t_err0, (rot_err, rot_err0, t_err, t_err0)
    j, j0 = pose_jitter(pose, used), pose_jitter(noisy, used)
    assert j["rot_acc_deg_mean"] < 0.25 * j0["rot_acc_deg_mean"]
    assert j["trans_acc_mean"] < 0.25 * j0["trans_acc_mean"]
    assert info["reproj_px_median_joint"] < info["reproj_px_median_poses"] < info["reproj_px_median_init"]


# ------------------------------------------------------------------------------------------------ option wiring
def test_default_option_leaves_the_chain_and_keys_as_before(tmp_path):
    prep = Preprocessor(tmp_path / "v.mp4", tmp_path / "out")
    assert prep.opt.stabilize == "none"
    assert prep.stages == ("decode", "track", "crop", "head", "parsing", "background", "finalize")
    for name in ("crop", "finalize"):  # (the other stages hash model files and the video: same dicts as before)
        assert "stabilize" not in json.dumps(prep._params(name))
    sync = Preprocessor(tmp_path / "v.mp4", tmp_path / "out", PrepOptions(stabilize="sync"))
    assert sync.stages == STAGES and STAGES.index("stabilize") == STAGES.index("finalize") - 1
    assert sync._params("stabilize") == {"method": "sync"}
    with pytest.raises(LipspaceError, match="stabilize='flow'"):
        Preprocessor(tmp_path / "v.mp4", tmp_path / "out", PrepOptions(stabilize="flow"))


def test_cli_parses_the_option():
    from lipspace.cli.prep import parse_args

    _, _, opt = parse_args(["v.mp4", "out", "stabilize=sync", "size=128"])
    assert opt.stabilize == "sync" and opt.size == 128


# ------------------------------------------------------------------------------------------------ real clip
@pytest.mark.slow
def test_real_clip_sync_lowers_jitter_and_redoes_only_the_stabilize_and_finalize_stages(tmp_path, monkeypatch):
    from tests.conftest import REAL_CLIPS, assets_dir, prepared_real_clip

    from lipspace.data.clip import load_clip
    from lipspace.data.schema import validate_dataset
    from lipspace.prep.pipeline import prepare

    base = prepared_real_clip("may", size=128)
    out = tmp_path / "may_sync"
    shutil.copytree(base, out)
    monkeypatch.setenv("LIPSPACE_ASSETS", str(assets_dir()))
    file, offset = REAL_CLIPS["may"]
    res = prepare(assets_dir() / "video" / file, out, PrepOptions(size=128, audio_offset_s=offset, overlays=0,
                                                                   progress=False, stabilize="sync"))
    assert res.cached == ["decode", "track", "crop", "head", "parsing", "background"]
    validate_dataset(out)
    before, after = np.load(base / "tracks.npz"), np.load(out / "tracks.npz")
    np.testing.assert_array_equal(after["pose_fit"], before["pose"])
    assert "pose_fit" not in before.files
    valid = before["valid"]
    j0, j1 = pose_jitter(before["pose"], valid), pose_jitter(after["pose"], valid)
    assert j1["rot_acc_deg_mean"] < j0["rot_acc_deg_mean"] and j1["trans_acc_mean"] < j0["trans_acc_mean"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["stages"]["stabilize"] == 1
    assert meta["prep"]["stabilize"]["jitter"]["stabilized"] == pytest.approx(j1, rel=1e-3)
    assert load_clip(out).head_pose_source == "stabilized" and load_clip(base).head_pose_source == "fitted"
    # back to the default: the chain without stabilize again, only finalize redone, the original tracks
    res = prepare(assets_dir() / "video" / file, out, PrepOptions(size=128, audio_offset_s=offset, overlays=0,
                                                                   progress=False))
    assert res.cached == ["decode", "track", "crop", "head", "parsing", "background"]
    again = np.load(out / "tracks.npz")
    assert sorted(again.files) == sorted(before.files)
    np.testing.assert_array_equal(again["pose"], before["pose"])
