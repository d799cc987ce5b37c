"""Face points of prepared clips (tracks.npz 'face_points'): the fixed vertex sample of the face model and the
finalize stage's fallback when the model cannot be loaded. The real-clip check is in test_pipeline.py."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from lipspace.prep.facemodel import FACE_POINTS, FaceModel, face_point_indices, face_region, load_ict
from lipspace.utils.errors import LipspaceError
from tests.conftest import assets_dir

ASSETS = assets_dir()
ICT = None if ASSETS is None else ASSETS / "models" / "ict_face_light.npz"
needs_ict = pytest.mark.skipif(ICT is None or not ICT.is_file(), reason="ICT-FaceKit asset not present "
                               "(models/ict_face_light.npz under LIPSPACE_ASSETS)")


def _toy_model(v=400, seed=0) -> FaceModel:
    rng = np.random.default_rng(seed)
    neutral = rng.uniform(-1, 1, (v, 3)).astype(np.float32)
    neutral[:68, 2] = -1.0  # landmarks on the front
    neutral[[0, 16], 2] = -0.2
    neutral[8, 1] = 0.8
    return FaceModel(neutral=neutral, id_basis=np.zeros((2, v, 3), np.float32),
                     expr_basis=rng.normal(size=(3, v, 3)).astype(np.float32), expr_names=("a", "b", "c"),
                     faces=np.zeros((0, 3), np.int64), lmk68=np.arange(68, dtype=np.int64))


def test_indices_landmarks_first_deterministic_in_region():
    m = _toy_model()
    idx = face_point_indices(m, 120)
    assert idx.shape == (120,) and len(np.unique(idx)) == 120
    np.testing.assert_array_equal(idx[:68], m.lmk68)
    np.testing.assert_array_equal(idx, face_point_indices(m, 120))
    region = set(face_region(m).tolist())
    assert set(idx[68:].tolist()) <= region
    v = m.neutral[idx[68:]]
    assert (v[:, 2] <= -0.2).all() and (v[:, 1] <= 0.85).all()
    # farthest-point: the first sampled vertex is the region's vertex farthest from all the landmarks
    reg = face_region(m)
    far = np.linalg.norm(m.neutral[reg][:, None] - m.neutral[:68][None], axis=-1).min(1)
    assert idx[68] == reg[np.argmax(far)]
    with pytest.raises(LipspaceError, match="at least 68"):
        face_point_indices(m, 10)


def test_indices_stop_when_the_region_is_exhausted():
    m = _toy_model(v=100)
    idx = face_point_indices(m, 512)
    assert len(idx) == 68 + len(set(face_region(m).tolist()) - set(range(68)))


@needs_ict
def test_ict_face_points_cover_the_face():
    m = load_ict(ICT)
    idx = face_point_indices(m)
    assert idx.shape == (FACE_POINTS,) and len(np.unique(idx)) == FACE_POINTS
    v = m.neutral[idx]
    lmk = m.neutral[m.lmk68]
    assert v[:, 1].max() <= lmk[8, 1] + 0.051 and v[:, 2].max() <= max(lmk[0, 2], lmk[16, 2]) + 1e-6
    assert v[:, 1].min() < lmk[19, 1] - 0.3  # the forehead is sampled
    # mouth expressions move the mouth points, not the forehead ones
    jaw = m.expr_names.index("jawOpen")
    e = np.zeros(m.n_expr, np.float32)
    e[jaw] = 1.0
    d = np.linalg.norm(m.subset(idx).vertices(None, e) - v, axis=-1)
    assert d[57] > 0.1 and np.median(d[v[:, 1] < lmk[19, 1]]) < 0.01


def test_finalize_leaves_the_track_out_when_the_model_is_missing(tmp_path, caplog):
    from lipspace.prep.finalize import _face_points
    from lipspace.prep.options import PrepOptions
    from lipspace.prep.pipeline import Preprocessor

    prep = Preprocessor(tmp_path / "v.mp4", tmp_path / "out", PrepOptions(face_model=str(tmp_path / "gone.npz")))
    with caplog.at_level(logging.WARNING, logger="lipspace.prep.pipeline"):
        assert _face_points(prep, np.zeros(100, np.float32), np.zeros((3, 53), np.float32)) is None
    rec = [r for r in caplog.records if "face_points" in r.getMessage()]
    assert len(rec) == 1 and "gone.npz" in rec[0].getMessage()


@needs_ict
def test_finalize_face_points_are_the_fitted_vertices(tmp_path, monkeypatch):
    from lipspace.prep.finalize import _face_points
    from lipspace.prep.options import PrepOptions
    from lipspace.prep.pipeline import Preprocessor

    monkeypatch.setenv("LIPSPACE_ASSETS", str(ASSETS))
    m = load_ict(ICT)
    rng = np.random.default_rng(0)
    ident = rng.normal(size=m.n_id).astype(np.float32)
    expr = rng.uniform(0, 1, (4, m.n_expr)).astype(np.float32)
    prep = Preprocessor(tmp_path / "v.mp4", tmp_path / "out", PrepOptions())
    fp = _face_points(prep, ident, expr)
    assert fp.shape == (4, FACE_POINTS, 3) and fp.dtype == np.float32
    full = m.vertices(ident, expr)
    np.testing.assert_allclose(fp, full[:, face_point_indices(m)], atol=1e-5)
    np.testing.assert_allclose(fp[:, :68], full[:, m.lmk68], atol=1e-5)
    # a fit with other dimensions (another model) is refused, not mis-read
    assert _face_points(prep, ident[:10], expr) is None
