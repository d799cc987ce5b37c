"""Face model loading (ICT npz, BFM .mat), head-space conventions, MediaPipe -> iBUG-68 and blendshape maps."""

from __future__ import annotations

import numpy as np
import pytest

from lipspace.data.schema import ICT_EXPR_NAMES, MP_BLENDSHAPE_NAMES
from lipspace.utils.errors import LipspaceError
from lipspace.prep.facemodel import (
    EYE_CORNER_DIST_CM, HEAD_UNIT_CM, MP_FOR_ICT, MP_TO_LMK68, load_bfm, load_face_model, load_ict,
    lmk68_from_mediapipe, mp_blendshapes_to_expr,
)
from tests.conftest import assets_dir

ASSETS = assets_dir()
ICT = None if ASSETS is None else ASSETS / "models" / "ict_face_light.npz"
needs_ict = pytest.mark.skipif(ICT is None or not ICT.is_file(), reason="ICT-FaceKit asset not present "
                               "(models/ict_face_light.npz under LIPSPACE_ASSETS)")


def _write_ict_like(path, v=80, **override):
    rng = np.random.default_rng(0)
    d = {"neutral": rng.normal(size=(v, 3)).astype(np.float32), "quads": np.zeros((4, 4), np.int32),
         "expr_names": np.array(ICT_EXPR_NAMES), "expr_basis": np.zeros((53, v, 3), np.float16),
         "id_basis": np.zeros((3, v, 3), np.float16), "lmk68": np.arange(68, dtype=np.int32)}
    d.update(override)
    np.savez(path, **{k: x for k, x in d.items() if x is not None})
    return path


@needs_ict
def test_ict_loads_in_head_space():
    m = load_ict(ICT)
    assert m.neutral.shape == (9409, 3) and m.neutral.dtype == np.float32
    assert m.id_basis.shape == (100, 9409, 3) and m.expr_basis.shape == (53, 9409, 3)
    assert m.expr_names == ICT_EXPR_NAMES and m.expr_range == (0.0, 1.0)
    p = m.neutral[m.lmk68]
    # Origin/scale: outer-eye-corner midpoint at (0, -0.08, -0.80) head units; corners 8.9 cm apart.
    np.testing.assert_allclose(0.5 * (p[36] + p[45]), [0, -0.08, -0.80], atol=1e-5)
    assert np.linalg.norm(p[36] - p[45]) * HEAD_UNIT_CM == pytest.approx(EYE_CORNER_DIST_CM, abs=0.02)
    # Axes: subject's right eye (36) at -x, chin (8) below the eyes (+y), nose tip (30) towards the camera (-z).
    assert p[36, 0] < 0 < p[45, 0]
    assert p[8, 1] > p[36, 1] + 0.5 and p[30, 2] < p[36, 2] - 0.2
    assert 1.0 < np.ptp(m.neutral[:, 0]) < 2.5  # head-sized in units of ~11 cm
    # Side convention: eyeBlink_L closes the subject's LEFT eye (+x); jawOpen moves the chin down (+y).
    blink = m.expr_basis[ICT_EXPR_NAMES.index("eyeBlink_L")]
    moved = np.linalg.norm(blink, axis=1) > 0.3 * np.linalg.norm(blink, axis=1).max()
    assert m.neutral[moved, 0].mean() > 0.2
    assert m.expr_basis[ICT_EXPR_NAMES.index("jawOpen")][m.lmk68[8], 1] > 0.1
    assert load_face_model(ICT).neutral.shape == m.neutral.shape


def test_ict_errors_name_the_file(tmp_path):
    with pytest.raises(LipspaceError, match="not found"):
        load_ict(tmp_path / "missing.npz")
    bad = tmp_path / "text.npz"
    bad.write_text("not a zip")
    with pytest.raises(LipspaceError, match="text.npz: cannot read"):
        load_ict(bad)
    with pytest.raises(LipspaceError, match="lacks key.*id_basis"):
        load_ict(_write_ict_like(tmp_path / "nokey.npz", id_basis=None))
    with pytest.raises(LipspaceError, match="'expr_basis' must be"):
        load_ict(_write_ict_like(tmp_path / "shape.npz", expr_basis=np.zeros((53, 7, 3))))
    with pytest.raises(LipspaceError, match="lmk68"):
        load_ict(_write_ict_like(tmp_path / "lmk.npz", lmk68=np.arange(10)))
    with pytest.raises(LipspaceError, match="ICT_EXPR_NAMES"):
        load_ict(_write_ict_like(tmp_path / "names.npz", expr_names=np.array(ICT_EXPR_NAMES[::-1])))
    m = load_ict(_write_ict_like(tmp_path / "ok.npz"))
    assert m.n_id == 3 and m.n_expr == 53 and m.id_basis.dtype == np.float32


def test_bfm_mat_layout_loads(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    v = 100
    mean = rng.normal(size=(v, 3)) * 0.5  # unit deliberately not cm: the loader rescales by the eye corners
    mean[20] = [-0.45, 0.3, 0.8]  # keypoint 36 (subject right outer eye corner), y up, z to the viewer
    mean[21] = [0.45, 0.3, 0.8]  # keypoint 45
    kp = np.arange(68) + 1
    kp[36], kp[45] = 21, 22
    savemat(tmp_path / "BFM_model_front.mat", {
        "meanshape": mean.reshape(1, -1), "idBase": rng.normal(size=(3 * v, 80)),
        "exBase": rng.normal(size=(3 * v, 64)),
        "tri": np.array([[1, 2, 3]]), "keypoints": kp[None]})
    m = load_face_model(tmp_path / "BFM_model_front.mat", kind="bfm")
    assert m.n_id == 80 and m.n_expr == 64 and m.expr_range is None and m.kind == "bfm"
    p = m.neutral[m.lmk68]
    assert np.linalg.norm(p[36] - p[45]) * HEAD_UNIT_CM == pytest.approx(EYE_CORNER_DIST_CM, rel=1e-4)
    np.testing.assert_allclose(0.5 * (p[36] + p[45]), [0, -0.08, -0.80], atol=1e-5)
    assert p[36, 0] < p[45, 0] and m.faces.tolist() == [[0, 1, 2]]
    savemat(tmp_path / "bad.mat", {"meanshape": mean.reshape(1, -1)})
    with pytest.raises(LipspaceError, match="bad.mat: BFM .mat lacks key"):
        load_bfm(tmp_path / "bad.mat")
    with pytest.raises(LipspaceError, match="unknown face model kind 'flame'"):
        load_face_model(tmp_path / "bad.mat", kind="flame")


def test_mp_to_lmk68_table_and_extraction():
    assert MP_TO_LMK68.shape == (68,) and len(set(MP_TO_LMK68.tolist())) == 68 and MP_TO_LMK68.max() < 468
    assert MP_TO_LMK68[36] == 33 and MP_TO_LMK68[45] == 263 and MP_TO_LMK68[8] == 152  # eye corners, chin
    lm = np.random.default_rng(0).uniform(0, 512, (3, 478, 3)).astype(np.float32)
    out = lmk68_from_mediapipe(lm)
    assert out.shape == (3, 68, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 48], lm[:, 61, :2])
    with pytest.raises(LipspaceError, match=r"\[N,478,>=2\]"):
        lmk68_from_mediapipe(lm[:, :68])


def test_blendshape_map_same_subject_side():
    assert len(MP_FOR_ICT) == 53
    names = [MP_BLENDSHAPE_NAMES[i] for i in MP_FOR_ICT]
    assert names[ICT_EXPR_NAMES.index("eyeBlink_L")] == "eyeBlinkLeft"
    assert names[ICT_EXPR_NAMES.index("mouthSmile_R")] == "mouthSmileRight"
    assert names[ICT_EXPR_NAMES.index("browInnerUp_L")] == names[ICT_EXPR_NAMES.index("browInnerUp_R")] == "browInnerUp"
    assert "tongueOut" not in names and "_neutral" not in names
    bs = np.zeros((2, 52), np.float32)
    bs[1, MP_BLENDSHAPE_NAMES.index("jawOpen")] = 0.7
    ex = mp_blendshapes_to_expr(bs)
    assert ex.shape == (2, 53) and ex[1, ICT_EXPR_NAMES.index("jawOpen")] == pytest.approx(0.7)
    assert ex.sum() == pytest.approx(0.7)
    assert mp_blendshapes_to_expr(bs, expr_names=("a", "b")) is None
    with pytest.raises(LipspaceError, match="blendshapes"):
        mp_blendshapes_to_expr(bs[:, :10])
