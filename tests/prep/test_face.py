"""Face tracking (MediaPipe Tasks FaceLandmarker, VIDEO mode) on a real clip, plus invalid-frame handling."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from lipspace.utils.errors import LipspaceError
from lipspace.prep.face import invalid_ranges

ASSETS = Path(os.environ.get("LIPSPACE_ASSETS", Path(__file__).resolve().parents[3] / "shared" / "assets"))
MODEL = ASSETS / "models" / "face_landmarker.task"
CLIP = ASSETS / "video" / "may_en_25fps_5s.mp4"


# ---- invalid_ranges: pure numpy, no mediapipe --------------------------------------------------------------

def test_invalid_ranges_all_valid_and_empty():
    assert invalid_ranges(np.ones(10, bool)) == []
    assert invalid_ranges(np.zeros(0, bool)) == []


def test_invalid_ranges_runs_at_edges_and_middle():
    v = np.ones(20, bool)
    v[0:2] = False
    v[10] = False
    v[17:] = False
    assert invalid_ranges(v) == [(0.0, 0.08), (0.4, 0.44), (0.68, 0.8)]
    assert invalid_ranges(v, fps=10) == [(0.0, 0.2), (1.0, 1.1), (1.7, 2.0)]
    assert invalid_ranges(np.zeros(5, bool)) == [(0.0, 0.2)]


# ---- real data ---------------------------------------------------------------------------------------------

needs_assets = pytest.mark.skipif(
    not (MODEL.is_file() and CLIP.is_file()),
    reason=f"real assets not present ({MODEL} and {CLIP}; set LIPSPACE_ASSETS to the shared assets folder)")


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    pytest.importorskip("mediapipe", reason="mediapipe not installed (pip install -c constraints.txt mediapipe==1.2.2)")
    from lipspace.prep.io import decode_video_25fps

    frames, _ = decode_video_25fps(CLIP, max_seconds=2)
    return frames


@pytest.fixture(scope="module")
def tracks(clip):
    from lipspace.prep.face import track_faces

    return track_faces(clip, MODEL, source=str(CLIP))


@needs_assets
def test_real_clip_all_valid_and_sensible(clip, tracks):
    n, h, w = clip.shape[:3]
    assert n == 50
    assert tracks.landmarks.shape == (n, 478, 3) and tracks.landmarks.dtype == np.float32
    assert tracks.blendshapes.shape == (n, 52) and len(tracks.names) == 52 and tracks.names[0] == "_neutral"
    assert tracks.transforms.shape == (n, 4, 4)
    assert tracks.valid.all() and (tracks.n_faces == 1).all()
    xy = tracks.landmarks[..., :2]
    assert (xy[..., 0] >= 0).all() and (xy[..., 0] < w).all() and (xy[..., 1] >= 0).all() and (xy[..., 1] < h).all()
    # The face covers a good part of this close-up: not a degenerate point cloud.
    assert (np.ptp(xy[..., 0], axis=1) > 0.2 * w).all() and (np.ptp(xy[..., 1], axis=1) > 0.2 * h).all()
    assert np.isfinite(tracks.landmarks).all()
    assert ((tracks.blendshapes >= 0) & (tracks.blendshapes <= 1)).all()
    # Facial transformation: rigid rotation + translation in front of the camera (MediaPipe's cm, -z forward).
    R = tracks.transforms[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-3)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-3)
    np.testing.assert_allclose(tracks.transforms[:, 3], np.broadcast_to([0, 0, 0, 1], (n, 4)), atol=1e-6)
    assert (tracks.transforms[:, 2, 3] < 0).all()
    # Smooth in time: a talking head moves little between frames at 25 fps.
    assert np.abs(np.diff(xy, axis=0)).mean() < 5.0


@needs_assets
def test_noise_and_blank_frames_invalid(clip, caplog):
    from lipspace.prep.face import track_faces

    frames = clip[:25].copy()
    frames[10] = np.random.default_rng(0).integers(0, 256, frames[10].shape, dtype=np.uint8)
    frames[20:22] = 0
    with caplog.at_level(logging.WARNING, logger="lipspace.prep.face"):
        tr = track_faces(frames, MODEL, source="clip_with_gaps.mp4")
    assert not tr.valid[10] and not tr.valid[20] and not tr.valid[21]
    assert tr.valid.sum() == 22 and tr.n_faces[[10, 20, 21]].tolist() == [0, 0, 0]
    assert (tr.landmarks[[10, 20, 21]] == 0).all()
    assert invalid_ranges(tr.valid) == [(0.4, 0.44), (0.8, 0.88)]
    msg = "\n".join(r.getMessage() for r in caplog.records)
    assert "clip_with_gaps.mp4" in msg and "0.40-0.44s" in msg and "0.80-0.88s" in msg


@needs_assets
def test_too_many_invalid_frames_error(clip):
    from lipspace.prep.face import track_faces

    frames = clip[:10].copy()
    frames[5:] = 0
    with pytest.raises(LipspaceError) as e:
        track_faces(frames, MODEL, max_invalid_fraction=0.2, source="mostly_empty.mp4")
    msg = str(e.value)
    assert "\n" not in msg and "mostly_empty.mp4" in msg and "50.0%" in msg and "0.20-0.40s" in msg
    assert "max_invalid_fraction" in msg and "trim" in msg
    # The same clip passes with a looser threshold.
    tr = track_faces(frames, MODEL, max_invalid_fraction=0.6, source="mostly_empty.mp4")
    assert tr.valid.tolist() == [True] * 5 + [False] * 5


@needs_assets
def test_all_blank_clip_error():
    pytest.importorskip("mediapipe")
    from lipspace.prep.face import track_faces

    with pytest.raises(LipspaceError, match=r"blank\.mp4: no face found in any of the 4 frames"):
        track_faces(np.zeros((4, 128, 128, 3), np.uint8), MODEL, source="blank.mp4")


@needs_assets
def test_two_faces_keeps_largest(clip, tracks, caplog):
    import cv2

    from lipspace.prep.face import track_faces

    big = clip[0]
    h, w = big.shape[:2]
    small = cv2.resize(big, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    right = np.zeros((h, w // 2, 3), np.uint8)
    right[h // 4: h // 4 + h // 2] = small
    two = np.repeat(np.concatenate([big, right], axis=1)[None], 3, axis=0)
    with caplog.at_level(logging.WARNING, logger="lipspace.prep.face"):
        tr = track_faces(two, MODEL, source="two_people.mp4")
    assert (tr.n_faces == 2).all() and tr.valid.all()
    assert (tr.landmarks[:, :, 0] < w).all()  # all on the big (left) face
    assert np.abs(tr.landmarks[0, :, :2] - tracks.landmarks[0, :, :2]).mean() < 3.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "two_people.mp4" in warnings[0] and "0, 1, 2" in warnings[0]


def test_bad_inputs_one_line_errors(tmp_path):
    pytest.importorskip("mediapipe")
    from lipspace.prep.face import track_faces

    with pytest.raises(LipspaceError, match="uint8 RGB frames"):
        track_faces(np.zeros((2, 8, 8), np.uint8), tmp_path / "x.task")
    with pytest.raises(LipspaceError, match="face landmarker model not found"):
        track_faces(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "missing.task")
    bad = tmp_path / "bad.task"
    bad.write_bytes(b"not a model")
    with pytest.raises(LipspaceError, match="cannot load as a MediaPipe FaceLandmarker") as e:
        track_faces(np.zeros((2, 8, 8, 3), np.uint8), bad)
    assert "\n" not in str(e.value)
