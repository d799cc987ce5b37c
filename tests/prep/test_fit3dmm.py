"""Head fit (focal search, pose, identity, expressions) on synthesised landmarks and on a real clip."""

from __future__ import annotations

import numpy as np
import pytest

from lipspace.utils.errors import LipspaceError
from lipspace.prep.camera import intrinsics_for, project, rodrigues, rotation_angle_deg
from lipspace.prep.facemodel import MP_TO_LMK68, FaceModel, load_ict
from lipspace.prep.fit3dmm import fit_head, lmk68_correspondence
from tests.conftest import assets_dir

ASSETS = assets_dir()
ICT = None if ASSETS is None else ASSETS / "models" / "ict_face_light.npz"
HAVE_ICT = ICT is not None and ICT.is_file()
HW = (512, 512)


def tiny_model(seed: int = 0) -> FaceModel:
    """68 vertices on the front of an ellipsoid 'face', 6 random identity modes, 3 expressions (0 = jaw)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.55, 0.55, 68)
    y = rng.uniform(-0.45, 0.95, 68)
    z = -0.95 * np.sqrt(np.clip(1 - (x / 0.8) ** 2 - (y / 1.2) ** 2, 0.05, None))
    neutral = np.stack([x, y, z], 1).astype(np.float32)
    expr = np.zeros((3, 68, 3), np.float32)
    expr[0, y > 0.45, 1] = 0.15 * (y[y > 0.45] - 0.3)  # "jawOpen": the lower face drops
    expr[1, :, 0] = 0.05 * np.sign(x)  # widen
    expr[2, y < 0.0, 1] = -0.05  # brows up
    return FaceModel(neutral=neutral, id_basis=(0.03 * rng.normal(size=(6, 68, 3))).astype(np.float32),
                     expr_basis=expr, expr_names=("jaw", "wide", "brow"), faces=np.zeros((0, 3), np.int64),
                     lmk68=np.arange(68), kind="tiny", source="<tiny>")


def synth(model: FaceModel, n=60, focal=1000.0, noise=0.1, seed=0):
    """MediaPipe-shaped landmarks [n,478,2] of the model under known identity/expressions/poses/focal."""
    rng = np.random.default_rng(seed)
    tt = np.arange(n) / 25.0
    rot = rodrigues(np.stack([0.12 * np.sin(tt * 1.1), 0.3 * np.sin(tt * 0.9 + 1), 0.06 * np.sin(tt * 1.7)], 1))
    t = np.stack([0.05 * np.sin(tt), 0.25 + 0.03 * np.cos(tt * 1.3), 4.5 + 0.2 * np.sin(tt * 0.5)], 1)
    expr = np.zeros((n, model.n_expr))
    jaw = model.expr_names.index("jawOpen") if "jawOpen" in model.expr_names else 0
    expr[:, jaw] = np.clip(0.5 + 0.6 * np.sin(tt * 5), 0, 1)
    ident = rng.normal(0, 0.7, model.n_id)
    verts = model.vertices(ident, expr)[:, model.lmk68]
    xc = np.einsum("nij,nlj->nli", rot, verts) + t[:, None]
    lm = np.zeros((n, 478, 2))
    lm[:, MP_TO_LMK68] = project(xc, intrinsics_for(focal, HW)) + rng.normal(0, noise, (n, 68, 2))
    return lm.astype(np.float32), rot, expr, jaw


def _check_fit(fit, rot, expr, jaw, focal, valid, rel_focal, max_rot_deg, max_px):
    n = len(valid)
    assert fit.intrinsics.dtype == np.float32 and fit.pose.shape == (n, 4, 4) and fit.pose.dtype == np.float32
    assert fit.intrinsics[2:].tolist() == [256.0, 256.0]
    assert fit.intrinsics[0] == pytest.approx(focal, rel=rel_focal)
    err = rotation_angle_deg(fit.pose[:, :3, :3].astype(np.float64), rot)
    assert np.median(err) < max_rot_deg / 2 and err.max() < max_rot_deg, err.max()
    s = fit.summary()
    assert s["reproj_px_median"] < max_px and s["fit_px_median"] < max_px
    assert np.isnan(fit.reproj_px[~valid]).all() and np.isfinite(fit.reproj_px[valid]).all()
    assert fit.expr.shape == expr.shape and fit.expr.min() >= 0 and fit.expr.max() <= 1
    assert np.corrcoef(fit.expr[:, jaw], expr[:, jaw])[0, 1] > 0.9
    assert fit.lmk68.shape == (n, 68, 2) and len(fit.focal_curve) >= 8


def test_fit_tiny_model_recovers_pose_focal_expressions():
    model = tiny_model()
    lm, rot, expr, jaw = synth(model, focal=900.0, noise=0.05)
    valid = np.ones(len(lm), bool)
    valid[[20, 21, 22]] = False
    lm[~valid] = np.nan  # invalid frames carry garbage
    fit = fit_head(lm, valid, HW, model)
    _check_fit(fit, rot, expr, jaw, 900.0, valid, rel_focal=0.15, max_rot_deg=2.0, max_px=0.5)
    # Smoothing reduces frame-to-frame jitter of the raw fit.
    jit = lambda p: np.linalg.norm(np.diff(p[:, :3, 3], 2, axis=0), axis=1).mean()  # noqa: E731
    assert jit(fit.pose) < jit(fit.pose_raw)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_ICT, reason="ICT-FaceKit asset not present (models/ict_face_light.npz)")
def test_fit_ict_synthetic():
    model = load_ict(ICT)
    lm, rot, expr, jaw = synth(model, focal=1100.0, noise=0.1)
    valid = np.ones(len(lm), bool)
    valid[[0, 30, 31]] = False
    fit = fit_head(lm, valid, HW, model)
    _check_fit(fit, rot, expr, jaw, 1100.0, valid, rel_focal=0.15, max_rot_deg=1.5, max_px=0.5)
    assert fit.identity.shape == (100,) and fit.expr.shape[1] == 53


def test_fixed_focal_is_deterministic_and_bad_inputs_fail():
    model = tiny_model()
    lm, *_ = synth(model, n=20)
    valid = np.ones(20, bool)
    a = fit_head(lm, valid, HW, model, focal=1000.0)
    b = fit_head(lm, valid, HW, model, focal=1000.0)
    np.testing.assert_array_equal(a.pose, b.pose)
    np.testing.assert_array_equal(a.expr, b.expr)
    assert a.focal_curve == [] and a.intrinsics[0] == 1000.0
    with pytest.raises(LipspaceError, match="none of the 20 frames has valid"):
        fit_head(lm, np.zeros(20, bool), HW, model)
    with pytest.raises(LipspaceError, match=r"\[N,478,>=2\]"):
        fit_head(lm[:, :68], valid, HW, model)
    with pytest.raises(LipspaceError, match="valid must be"):
        fit_head(lm, valid[:5], HW, model)
    with pytest.raises(LipspaceError, match="blendshapes"):
        fit_head(lm, valid, HW, model, blendshapes=np.zeros((3, 52)))
    corr = lmk68_correspondence(model, jaw_weight=0.0)
    assert len(corr) == 51 and corr.report.all()


# ---- real data ---------------------------------------------------------------------------------------------

CLIP = None if ASSETS is None else ASSETS / "video" / "may_en_25fps_5s.mp4"
LANDMARKER = None if ASSETS is None else ASSETS / "models" / "face_landmarker.task"


@pytest.mark.slow
@pytest.mark.skipif(not (HAVE_ICT and CLIP.is_file() and LANDMARKER.is_file()),
                    reason="real assets not present (ICT model, May clip, face_landmarker.task under LIPSPACE_ASSETS)")
def test_real_clip_fit():
    pytest.importorskip("mediapipe", reason="mediapipe not installed")
    from lipspace.prep.face import track_faces
    from lipspace.prep.facemodel import lmk68_from_mediapipe
    from lipspace.prep.io import decode_video_25fps

    frames, _ = decode_video_25fps(CLIP, max_seconds=2)
    tracks = track_faces(frames, LANDMARKER, source=str(CLIP))
    l68 = lmk68_from_mediapipe(tracks.landmarks)
    # dlib order on a frontal face: 36 (subject's right outer eye corner) and 48 (right mouth corner) on the image left.
    assert (l68[:, 36, 0] < l68[:, 39, 0]).all() and (l68[:, 42, 0] < l68[:, 45, 0]).all()
    assert (l68[:, 48, 0] < l68[:, 54, 0]).all() and (l68[:, 8, 1] > l68[:, 57, 1]).all()
    fit = fit_head(tracks.landmarks, tracks.valid, frames.shape[1:3], load_ict(ICT), blendshapes=tracks.blendshapes)
    s = fit.summary()
    assert s["reproj_px_median"] < 3.0 and s["reproj_px_p95"] < 5.0, s
    assert 0.5 * 512 <= s["focal_px"] <= 6 * 512
    # Roughly frontal: the head's forward axis (-z) points at the camera within 25 degrees, head in front of it.
    fwd = -fit.pose[:, :3, 2]
    assert (np.degrees(np.arccos(np.clip(-fwd[:, 2], -1, 1))) < 25).all()
    assert (fit.pose[:, 2, 3] > 1.0).all()
    # The fitted mouth follows the tracked mouth: projected model points 48-67 within a few px.
    assert np.median(np.linalg.norm(fit.lmk68[:, 48:] - l68[:, 48:], axis=-1)) < 3.0
