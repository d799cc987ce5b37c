"""Parsing (class masks) from landmark polygons + person/hair maps: synthetic faces always, real clip with assets."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lipspace.data.schema import PARSING_CLASSES
from lipspace.prep import parsing as P
from lipspace.prep import parsing_clip as PC
from lipspace.prep.parsing import head_mask, parse_frame
from lipspace.prep.parsing_clip import parse_frames
from tests.conftest import assets_dir

S = 512


def _ellipse(ids, centre, radii, start_deg, sign):
    out = {}
    for k, i in enumerate(ids):
        t = np.deg2rad(start_deg + sign * 360.0 * k / len(ids))
        out[i] = (centre[0] + radii[0] * np.cos(t), centre[1] + radii[1] * np.sin(t))
    return out


def synthetic_landmarks(mouth_open: float = 14.0, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """A plausible frontal MediaPipe 478-point layout (only the points parsing uses are placed with care)."""
    lm = np.zeros((478, 3), np.float32)
    lm[:, :2] = (205, 275)  # unplaced points: on the left cheek
    pts = {}
    pts.update(_ellipse(P.FACE_OVAL, (256, 250), (100, 130), -90, 1))
    pts.update(_ellipse(P.LIPS_OUTER, (256, 322), (40, 10 + mouth_open / 2), 180, -1))
    pts.update(_ellipse(P.LIPS_INNER, (256, 322), (30, mouth_open / 2), 180, -1))
    pts.update(_ellipse(P.RIGHT_EYE, (215, 210), (22, 8), 180, -1))
    pts.update(_ellipse(P.LEFT_EYE, (297, 210), (22, 8), 0, 1))
    for brow, xs in ((P.RIGHT_BROW, np.linspace(180, 240, 5)), (P.LEFT_BROW, np.linspace(332, 272, 5))):
        for k, i in enumerate(brow[:5]):
            pts[i] = (xs[k], 186)
        for k, i in enumerate(brow[5:]):
            pts[i] = (xs[::-1][k], 176)
    for k, i in enumerate((168, 6, 197, 195, 5, 4, 1, 19, 94, 2)):
        pts[i] = (256, 200 + 9 * k)
    side = (98, 97, 326, 327, 294, 278, 344, 440, 275, 45, 220, 115, 48, 64)
    for k, i in enumerate(side):
        pts[i] = (256 + (-1) ** k * (8 + 2 * (k % 7)), 262 + 2 * (k % 7))
    for i, (x, y) in pts.items():
        lm[i, :2] = (x + dx, y + dy)
    return lm


def synthetic_maps(dx: float = 0.0, dy: float = 0.0):
    """person: head ellipse + neck + shoulders; hair: a cap over the top of the head. uint8 0..255."""
    person = np.zeros((S, S), np.uint8)
    cx, cy = int(256 + dx), int(dy)
    cv2.ellipse(person, (cx, cy + 240), (125, 160), 0, 0, 360, 255, -1)
    cv2.rectangle(person, (cx - 60, cy + 360), (cx + 60, cy + 470), 255, -1)
    cv2.rectangle(person, (cx - 230, cy + 440), (cx + 230, S), 255, -1)
    hair = np.zeros((S, S), np.uint8)
    cv2.ellipse(hair, (cx, cy + 230), (125, 150), 0, 180, 360, 255, -1)
    hair[cy + 135:] = 0
    return cv2.GaussianBlur(person, (0, 0), 2), cv2.GaussianBlur(hair, (0, 0), 2)


def synthetic_frame(dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    person, _ = synthetic_maps(dx, dy)
    f = np.zeros((S, S, 3), np.uint8)
    f[:] = (40, 90, 40)
    f[person > 128] = (205, 150, 120)  # skin everywhere on the person: the neck passes the colour test
    return f


def is_simple(mask: np.ndarray) -> bool:
    """One 4/8-connected region without holes."""
    m = mask.astype(np.uint8)
    n, _ = cv2.connectedComponents(m, connectivity=8)
    if n != 2:
        return False
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(m)
    cv2.drawContours(filled, contours, -1, 1, cv2.FILLED)
    return bool((filled.astype(bool) == mask.astype(bool)).all())


def poly_mask(lm, ids) -> np.ndarray:
    m = np.zeros((S, S), np.uint8)
    cv2.fillPoly(m, [np.round(lm[list(ids), :2]).astype(np.int32)], 1)
    return m.astype(bool)


# ---- synthetic -------------------------------------------------------------------------------------------------

def test_synthetic_all_classes_and_geometry():
    lm = synthetic_landmarks()
    person, hair = synthetic_maps()
    out = parse_frame(person, hair, lm, frame=synthetic_frame())
    assert out.shape == (S, S) and out.dtype == np.uint8
    assert set(np.unique(out)) == set(PARSING_CLASSES), np.unique(out)
    # mouth interior strictly inside the outer lips, lips around it
    assert poly_mask(lm, P.LIPS_OUTER)[out == P.MOUTH].all()
    assert out[322, 256] == P.MOUTH and out[int(322 + 7 + 5), 256] == P.LIPS
    assert out[210, 215] == P.EYES and out[210, 297] == P.EYES
    assert out[181, 210] == P.BROWS and out[250, 256] == P.NOSE
    assert out[150, 256] == P.SKIN  # forehead above the brows, below the hair cap
    assert out[100, 256] == P.HAIR
    assert out[5, 5] == P.BACKGROUND and out[5, S - 6] == P.BACKGROUND
    assert out[400, 256] == P.NECK  # below the chin (y=380)
    assert out[S - 3, 60] == P.TORSO and out[S - 3, 256] == P.TORSO  # below the torso line
    # the head mask: one region without holes, covering the face oval
    hm = head_mask(out)
    assert is_simple(hm)
    assert hm[poly_mask(lm, P.FACE_OVAL)].mean() > 0.99
    assert not hm[out == P.NECK].any() and head_mask(out, neck=True)[out == P.NECK].all()


def test_closed_mouth_has_no_interior_and_brow_thickness_scales():
    lm = synthetic_landmarks(mouth_open=0.0)
    person, hair = synthetic_maps()
    out = parse_frame(person, hair, lm)
    assert (out == P.MOUTH).sum() == 0 and (out == P.LIPS).sum() > 300
    thin = (parse_frame(person, hair, lm, brow_thickness=0.01) == P.BROWS).sum()
    thick = (parse_frame(person, hair, lm, brow_thickness=0.06) == P.BROWS).sum()
    assert thick > thin * 1.3


def test_head_mask_connected_and_hole_free_despite_bad_maps():
    lm = synthetic_landmarks()
    person, hair = synthetic_maps()
    person = person.copy()
    hair = hair.copy()
    person[140:160, 240:270] = 0  # a hole in the person mask on the forehead
    hair[140:160, 240:270] = 0
    hair[100:115, 200:220] = 0  # a hole in hair and person (a gap between strands)
    person[100:115, 200:220] = 0
    hair[480:500, 20:60] = 255  # stray hair far from the head, on the torso
    person[480:500, 20:60] = 255
    out = parse_frame(person, hair, lm)
    hm = head_mask(out)
    assert is_simple(hm)
    assert out[150, 255] == P.SKIN and out[107, 210] == P.HAIR  # holes filled: skin in the oval, hair outside
    assert not hm[480:500, 20:60].any()  # the stray blob is not head


def test_neck_colour_test_cuts_clothes():
    lm = synthetic_landmarks()
    person, hair = synthetic_maps()
    frame = synthetic_frame()
    frame[420:, :] = (250, 250, 250)  # a white shirt from y=420 down
    out = parse_frame(person, hair, lm, frame=frame)
    assert out[400, 256] == P.NECK and out[440, 256] == P.TORSO
    out_nocheck = parse_frame(person, hair, lm, frame=frame, skin_threshold=0)
    assert out_nocheck[440, 256] == P.NECK


def test_landmark_free_parse_has_no_head():
    person, hair = synthetic_maps()
    out = parse_frame(person, hair, None)
    assert set(np.unique(out)) == {P.BACKGROUND, P.HAIR, P.TORSO}
    np.testing.assert_array_equal(out == P.HAIR, (person >= 128) & (hair >= 128))


def test_float_maps_equal_uint8_maps():
    lm = synthetic_landmarks()
    person, hair = synthetic_maps()
    a = parse_frame(person, hair, lm)
    b = parse_frame(person.astype(np.float32) / 255, hair.astype(np.float32) / 255, lm)
    assert (a != b).mean() < 1e-3


def test_bad_inputs_raise():
    from lipspace.utils.errors import LipspaceError

    person, hair = synthetic_maps()
    with pytest.raises(LipspaceError, match="478"):
        parse_frame(person, hair, np.zeros((68, 2)))
    with pytest.raises(LipspaceError, match="hair map"):
        parse_frame(person, hair[:10], synthetic_landmarks())


class FakeSegmenters:
    """Stands in for lipspace.prep.segment.Segmenters: maps follow the frame's (dx, dy) shift."""

    def __init__(self, shifts, multiclass=False, clothes_from=None):
        self.shifts = shifts  # frame id (stored in pixel [0,0,0]) -> (dx, dy)
        self.has_multiclass = multiclass
        self.calls = {"person": 0, "hair": 0, "multiclass": 0}
        self.clothes_from = clothes_from

    def _maps(self, frame):
        return synthetic_maps(*self.shifts[int(frame[0, 0, 0])])

    def person(self, frame):
        self.calls["person"] += 1
        return self._maps(frame)[0]

    def hair(self, frame):
        self.calls["hair"] += 1
        return self._maps(frame)[1]

    def multiclass(self, frame):
        self.calls["multiclass"] += 1
        person, hair = self._maps(frame)
        bg = 255 - person
        clothes = np.zeros_like(person)
        clothes[self.clothes_from:] = person[self.clothes_from:]
        body = person.copy()
        body[self.clothes_from:] = 0
        return np.stack([bg, hair, body, person // 2, clothes, np.zeros_like(person)])


def _clip(n=9, step=3.0):
    shifts = {i: (step * i, 0.0) for i in range(n)}
    frames = np.stack([synthetic_frame(*shifts[i]) for i in range(n)])
    frames[:, 0, 0, 0] = np.arange(n)
    lms = np.stack([synthetic_landmarks(dx=shifts[i][0]) for i in range(n)])
    return frames, lms, shifts


def test_parse_frames_invalid_frames_stride_and_progress():
    frames, lms, shifts = _clip(9)
    valid = np.ones(9, bool)
    valid[4] = False  # nearest valid frame is 1 away: borrows its landmarks
    seg = FakeSegmenters(shifts)
    ticks = []
    out = parse_frames(frames, lms, valid, seg, progress=ticks.append, hair_stride=3)
    assert out.shape == (9, S, S) and out.dtype == np.uint8 and sum(ticks) == 9
    assert seg.calls == {"person": 9, "hair": 3, "multiclass": 0}
    for i in range(9):
        assert is_simple(head_mask(out[i])), i
        assert out[i, 322, int(256 + 3 * i)] == P.MOUTH
    # strided hair warped by the landmark similarity: frame 0's hair came from frame 1, shifted back by 3 px
    ref = parse_frames(frames, lms, np.ones(9, bool), FakeSegmenters(shifts), hair_stride=1, threads=False)
    assert ((out[0] == P.HAIR) != (ref[0] == P.HAIR)).mean() < 0.002
    # too far from any valid frame: landmark-free parse
    valid2 = np.zeros(9, bool)
    valid2[0] = True
    out2 = parse_frames(frames, lms, valid2, FakeSegmenters(shifts), max_gap=2, threads=False)
    assert (out2[1] == P.MOUTH).any() and (out2[1] == P.NECK).any()
    assert set(np.unique(out2[5])) == {P.BACKGROUND, P.HAIR, P.TORSO}  # no face classes


def test_parse_frames_threads_match_serial():
    frames, lms, shifts = _clip(5)
    v = np.ones(5, bool)
    a = parse_frames(frames, lms, v, FakeSegmenters(shifts), hair_stride=2, threads=True)
    b = parse_frames(frames, lms, v, FakeSegmenters(shifts), hair_stride=2, threads=False)
    assert (a == b).all()


def test_parse_frames_multiclass_uses_body_skin_for_the_neck():
    frames, lms, shifts = _clip(3, step=0.0)
    frames[:, 420:] = (250, 250, 250)  # would fail the colour test: the 6-class maps must decide instead
    seg = FakeSegmenters(shifts, multiclass=True, clothes_from=430)
    out = parse_frames(frames, lms, np.ones(3, bool), seg)
    assert seg.calls["multiclass"] == 3 and seg.calls["person"] == seg.calls["hair"] == 0
    assert out[0, 425, 256] == P.NECK  # body-skin: neck although white
    assert out[0, 440, 256] == P.TORSO  # clothes
    assert is_simple(head_mask(out[0]))


def test_nearest_valid():
    v = np.array([False, True, False, False, False, False, True, False])
    np.testing.assert_array_equal(PC._nearest_valid(v, 1), [1, 1, 1, -1, -1, 6, 6, 6])
    np.testing.assert_array_equal(PC._nearest_valid(np.zeros(3, bool), 5), [-1, -1, -1])


def test_similarity_recovers_a_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (12, 2))
    a = np.deg2rad(7)
    m = 1.1 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    dst = src @ m.T + (5, -3)
    np.testing.assert_allclose(PC._similarity(src, dst), np.c_[m, (5, -3)], atol=1e-9)


def test_polygons_match_mediapipe_topology():
    pytest.importorskip("mediapipe", reason="mediapipe not installed")
    from mediapipe.tasks.python.vision import FaceLandmarksConnections as F

    def edges(conns):
        return {frozenset((c.start, c.end)) for c in conns}

    def loop(ids):
        return {frozenset((a, b)) for a, b in zip(ids, ids[1:] + ids[:1])}

    assert loop(P.FACE_OVAL) == edges(F.FACE_LANDMARKS_FACE_OVAL)
    assert loop(P.LIPS_OUTER) | loop(P.LIPS_INNER) == edges(F.FACE_LANDMARKS_LIPS)
    assert loop(P.LEFT_EYE) == edges(F.FACE_LANDMARKS_LEFT_EYE)
    assert loop(P.RIGHT_EYE) == edges(F.FACE_LANDMARKS_RIGHT_EYE)
    for brow, conns in ((P.LEFT_BROW, F.FACE_LANDMARKS_LEFT_EYEBROW), (P.RIGHT_BROW, F.FACE_LANDMARKS_RIGHT_EYEBROW)):
        assert edges(conns) <= loop(brow) and set(brow) == {i for e in edges(conns) for i in e}
    assert set(P.NOSE_POINTS) == {i for e in edges(F.FACE_LANDMARKS_NOSE) for i in e}


# ---- real clip -------------------------------------------------------------------------------------------------

ASSETS = assets_dir()
needs_assets = pytest.mark.skipif(
    ASSETS is None or not (ASSETS / "video" / "may_en_25fps_5s.mp4").is_file(),
    reason="shared assets not present (../shared/assets or $LIPSPACE_ASSETS with video/may_en_25fps_5s.mp4)")


@needs_assets
def test_real_clip_parsing(monkeypatch, tmp_path):
    pytest.importorskip("mediapipe", reason="mediapipe not installed")
    monkeypatch.setenv("LIPSPACE_ASSETS", str(ASSETS))
    from lipspace.utils.assets import resolve_known
    from lipspace.prep.crop import crop_frames, face_crop_box
    from lipspace.prep.face import track_faces
    from lipspace.prep.io import decode_video_25fps
    from lipspace.prep.segment import Segmenters

    frames, _ = decode_video_25fps(ASSETS / "video" / "may_en_25fps_5s.mp4", max_seconds=0.8)
    frames = frames[:20]
    tr = track_faces(frames, resolve_known("face_landmarker.task"))
    box = face_crop_box(tr.landmarks, tr.valid, frames.shape[1:3])
    crops = crop_frames(frames, box, S)
    lm = tr.landmarks.copy()
    lm[..., :2] = (lm[..., :2] - (box.x0, box.y0)) * S / box.side
    with Segmenters(resolve_known("selfie_segmenter.tflite"), resolve_known("hair_segmenter_derived.tflite")) as seg:
        out = parse_frames(crops, lm, tr.valid, seg, hair_stride=2)
    assert out.shape == (20, S, S)
    present = set(np.unique(out))
    assert set(PARSING_CLASSES) - {P.MOUTH} <= present, present
    for i in range(0, 20, 3):
        hm = head_mask(out[i])
        assert is_simple(hm), i
        assert hm[poly_mask(lm[i], P.FACE_OVAL)].mean() > 0.99
        assert is_simple(head_mask(out[i], neck=True)), i
        # background at the top corners (the crop shows the room behind the head), none in the face
        assert (out[i, :20, :20] == 0).mean() > 0.9
        assert (out[i, :20, -20:] == 0).mean() > 0.9
        # lips around the mouth centre (between landmarks 13 and 14)
        mx, my = np.round((lm[i, 13, :2] + lm[i, 14, :2]) / 2).astype(int)
        assert out[i, my, mx] in (P.LIPS, P.MOUTH)
        assert (out[i, my - 25:my + 26, mx - 40:mx + 41] == P.LIPS).sum() > 200
        # the neck is below the chin, the torso at the bottom
        cx, cy = np.round(lm[i, 152, :2]).astype(int)
        assert out[i, min(cy + 15, S - 1), cx] == P.NECK
    from lipspace.prep.overlays import colourise

    i = 10
    over = (crops[i] * 0.45 + colourise(out[i]) * 0.55).astype(np.uint8)
    cv2.imwrite(f"/tmp/parsing_check_may_{i}.png", np.concatenate([crops[i], over], 1)[:, :, ::-1])
