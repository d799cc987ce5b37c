import numpy as np
import pytest

from lipspace.utils.errors import LipspaceError
from lipspace.prep.crop import CropBox, crop_frames, face_crop_box


def face_track(n=10, centre=(300.0, 200.0), size=80.0, jitter=5.0, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(-size / 2, size / 2, (478, 2))
    lm = np.zeros((n, 478, 3), np.float32)
    for i in range(n):
        lm[i, :, :2] = base + np.array(centre) + rng.uniform(-jitter, jitter, 2)
    return lm


def test_box_is_square_inside_frame_and_contains_every_face():
    lm = face_track()
    box = face_crop_box(lm, np.ones(10, bool), (480, 640))
    assert 0 <= box.x0 and box.x0 + box.side <= 640 and 0 <= box.y0 and box.y0 + box.side <= 480
    pts = lm[..., :2].reshape(-1, 2)
    assert (pts[:, 0] >= box.x0).all() and (pts[:, 0] <= box.x0 + box.side).all()
    assert (pts[:, 1] >= box.y0).all() and (pts[:, 1] <= box.y0 + box.side).all()
    assert box.side == pytest.approx(2.2 * 80, abs=12)


def test_box_clamped_at_frame_edge_and_to_frame_size():
    lm = face_track(centre=(20.0, 20.0))
    box = face_crop_box(lm, np.ones(10, bool), (480, 640))
    assert (box.x0, box.y0) == (0, 0)
    big = face_crop_box(face_track(size=400.0, centre=(320.0, 240.0)), np.ones(10, bool), (480, 640))
    assert big.side == 480 and big.y0 == 0


def test_invalid_frames_ignored_and_all_invalid_is_an_error():
    lm = face_track()
    lm[3] = 0  # an invalid frame has zero landmarks: must not drag the box to the corner
    valid = np.ones(10, bool)
    valid[3] = False
    assert face_crop_box(lm, valid, (480, 640)) == face_crop_box(np.delete(lm, 3, 0), np.delete(valid, 3), (480, 640))
    with pytest.raises(LipspaceError, match="clip.mp4: no frame has a tracked face"):
        face_crop_box(lm, np.zeros(10, bool), (480, 640), source="clip.mp4")


def test_crop_frames_and_intrinsics_agree():
    frames = np.zeros((2, 100, 120, 3), np.uint8)
    frames[:, 40, 60] = 255  # a point at pixel (60, 40)
    box = CropBox(x0=30, y0=20, side=50)
    out = crop_frames(frames, box, 100)  # 2x enlargement
    assert out.shape == (2, 100, 100, 3)
    fx, fy, cx, cy = box.apply_to_intrinsics(200.0, 200.0, 60.5, 40.5, 100)
    # the principal point was set at that pixel's centre: it must land on the bright spot after cropping
    y, x = np.unravel_index(out[0, :, :, 0].argmax(), (100, 100))
    assert abs(x + 0.5 - cx) <= 1.5 and abs(y + 0.5 - cy) <= 1.5 and fx == 400.0
    # landmarks map with the same transform as the intrinsics (continuous pixel coordinates, z scaled too)
    lm = box.apply_to_landmarks(np.array([[[60.5, 40.5, 3.0]]]), 100)
    assert np.allclose(lm[0, 0], [cx, cy, 6.0])
