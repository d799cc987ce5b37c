"""Blink (EAR + eyeBlink blendshapes) and lip features from hand-made FaceTracks, plus one real clip."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lipspace.data.schema import MP_BLENDSHAPE_NAMES
from lipspace.utils.errors import LipspaceError
from lipspace.prep.blink import (LEFT_EYE, RIGHT_EYE, blink_events, blink_signal, blinks_per_second,
                                 eye_aspect_ratio, lip_features)
from lipspace.prep.face import FaceTracks

ASSETS = Path(os.environ.get("LIPSPACE_ASSETS", Path(__file__).resolve().parents[3] / "shared" / "assets"))
MODEL = ASSETS / "models" / "face_landmarker.task"
CLIP = ASSETS / "video" / "may_en_25fps_5s.mp4"

BS = {name: i for i, name in enumerate(MP_BLENDSHAPE_NAMES)}


def _eye(lmk: np.ndarray, eye, x0: float, half_height: float) -> None:
    # p1/p4 corners 4 px apart; p2,p3 above and p6,p5 below by half_height: EAR = half_height / 2.
    p1, p2, p3, p4, p5, p6 = eye
    y0 = 100.0
    lmk[p1, :2] = (x0, y0)
    lmk[p4, :2] = (x0 + 4, y0)
    lmk[p2, :2] = (x0 + 1, y0 - half_height)
    lmk[p6, :2] = (x0 + 1, y0 + half_height)
    lmk[p3, :2] = (x0 + 3, y0 - half_height)
    lmk[p5, :2] = (x0 + 3, y0 + half_height)


def _face(half_height: float) -> np.ndarray:
    lmk = np.zeros((478, 3), np.float32)
    _eye(lmk, RIGHT_EYE, 100.0, half_height)
    _eye(lmk, LEFT_EYE, 120.0, half_height)  # 33 at x=100, 263 at x=124: inter-ocular distance 24
    lmk[13, :2], lmk[14, :2] = (112, 140), (112, 146)  # inner-lip opening 6
    lmk[61, :2], lmk[291, :2] = (100, 143), (124, 143)  # mouth width 24
    return lmk


def _tracks(half_heights, eye_blink, valid=None) -> FaceTracks:
    n = len(half_heights)
    lmk = np.stack([_face(h) for h in half_heights])
    bs = np.zeros((n, 52), np.float32)
    bs[:, BS["eyeBlinkLeft"]] = eye_blink
    bs[:, BS["eyeBlinkRight"]] = eye_blink
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    lmk[~valid] = 0  # what track_faces leaves in frames without a face
    bs[~valid] = 0
    return FaceTracks(landmarks=lmk, blendshapes=bs, transforms=np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
                      valid=valid, n_faces=valid.astype(np.int64))


def test_ear_exact_on_known_geometry():
    lmk = np.stack([_face(1.0), _face(0.1), _face(0.0)])
    for eye in (RIGHT_EYE, LEFT_EYE):
        np.testing.assert_allclose(eye_aspect_ratio(lmk, eye), [0.5, 0.05, 0.0], atol=1e-6)
    assert eye_aspect_ratio(np.zeros((1, 478, 3)), RIGHT_EYE)[0] == 0.0  # no eye width: no division by zero


def _blink_sequence():
    n = 20
    half = np.full(n, 1.0)
    blend = np.full(n, 0.05)
    half[8:11], blend[8:11] = 0.1, 0.9
    return half, blend


def test_simulated_blink_gives_one_event():
    half, blend = _blink_sequence()
    b = blink_signal(_tracks(half, blend))
    assert b.dtype == np.float32 and b.shape == (20,)
    # Open: EAR term 0, blendshape 0.05 -> 0.025. Closed: EAR term 1 - 0.05/0.5 = 0.9, blendshape 0.9 -> 0.9.
    np.testing.assert_allclose(b[8:11], 0.9, atol=1e-6)
    np.testing.assert_allclose(np.delete(b, [8, 9, 10]), 0.025, atol=1e-6)
    assert blink_events(b) == [(8, 11)]
    assert blink_events(b, min_frames=4) == []
    assert blink_events(b, max_seconds=0.1) == []  # 3 frames = 0.12 s at 25 fps
    assert blinks_per_second(b) == pytest.approx(1 / 0.8)
    assert blinks_per_second(np.zeros(0)) == 0.0


def test_invalid_frames_are_interpolated():
    half, blend = _blink_sequence()
    valid = np.ones(20, bool)
    valid[[0, 1, 9, 19]] = False
    ref = blink_signal(_tracks(half, blend))
    b = blink_signal(_tracks(half, blend, valid))
    assert np.isfinite(b).all() and (b >= 0).all() and (b <= 1).all()
    np.testing.assert_allclose(b[[0, 1]], b[2], atol=1e-6)  # leading edge held
    np.testing.assert_allclose(b[9], 0.5 * (b[8] + b[10]), atol=1e-6)
    np.testing.assert_allclose(b[19], b[18], atol=1e-6)
    np.testing.assert_allclose(b[valid], ref[valid], atol=1e-6)
    lip = lip_features(_tracks(half, blend, valid))
    np.testing.assert_allclose(lip[0], lip[2], atol=1e-6)
    assert np.isfinite(lip).all()


def test_all_invalid_gives_zeros():
    t = _tracks(np.ones(5), np.zeros(5), np.zeros(5, bool))
    assert np.array_equal(blink_signal(t), np.zeros(5, np.float32))
    assert np.array_equal(lip_features(t), np.zeros((5, 4), np.float32))


def test_lip_features_values_and_scale_invariance():
    t = _tracks(np.ones(3), np.zeros(3))
    t.blendshapes[:, BS["jawOpen"]] = [0.1, 0.2, 0.3]
    t.blendshapes[:, BS["mouthPucker"]] = 0.4
    f = lip_features(t)
    assert f.dtype == np.float32 and f.shape == (3, 4)
    np.testing.assert_allclose(f[:, 0], 6 / 24, atol=1e-6)
    np.testing.assert_allclose(f[:, 1], 1.0, atol=1e-6)
    np.testing.assert_allclose(f[:, 2], [0.1, 0.2, 0.3], atol=1e-6)
    np.testing.assert_allclose(f[:, 3], 0.4, atol=1e-6)

    rng = np.random.default_rng(0)
    t.landmarks[:] = rng.uniform(0, 300, t.landmarks.shape)
    before = lip_features(t)
    t.landmarks *= 2
    np.testing.assert_allclose(lip_features(t), before, rtol=1e-5)


def test_missing_blendshape_name_raises():
    t = _tracks(np.ones(3), np.zeros(3))
    t.names = ["x"] * 52
    with pytest.raises(LipspaceError, match="eyeBlinkLeft"):
        blink_signal(t)


@pytest.mark.skipif(not (MODEL.is_file() and CLIP.is_file()),
                    reason=f"real assets not present ({MODEL} and {CLIP}; set LIPSPACE_ASSETS to the shared assets "
                           f"folder)")
def test_real_clip_blink_in_range():
    pytest.importorskip("mediapipe", reason="mediapipe not installed (pip install -c constraints.txt mediapipe==1.2.2)")
    from lipspace.prep.face import track_faces
    from lipspace.prep.io import decode_video_25fps

    frames, _ = decode_video_25fps(CLIP, max_seconds=2)
    tracks = track_faces(frames, MODEL, source=str(CLIP))
    b = blink_signal(tracks)
    assert b.shape == (len(frames),) and np.isfinite(b).all()
    assert (b >= 0).all() and (b <= 1).all()
    lip = lip_features(tracks)
    assert lip.shape == (len(frames), 4) and np.isfinite(lip).all()
