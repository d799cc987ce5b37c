"""Per-frame parsing (class masks, lipspace.data.schema.PARSING_CLASSES) from MediaPipe landmarks + segmenters.

Inputs per frame: person and hair probability maps (lipspace.prep.segment, uint8 0..255 or float 0..1) and the
478 FaceLandmarker points in pixels. Heuristics (face frame: ``up`` = chin 152 -> forehead 10, face height
``fh`` = |10 - 152|, face width ``fw`` = |234 - 454|, ``r`` = unit vector perpendicular to ``up`` towards 454):

- background (0): not person (selfie < 0.5), except hair above the jaw and the face core (below).
- head region: the area above the jaw line (face oval 361 -> chin -> 132, extended along ``r`` to
  ``head_width * fw / 2`` either side of the face centre and upwards without limit). Person pixels in it are
  face skin (2) — this covers the forehead up to the hairline, the ears and the skin MediaPipe's oval stops short of.
- hair (1): hair >= 0.5 and (inside the head region, or person above the torso line) — the selfie model
  sometimes cuts hair volume. Hair below the torso line (over the shoulders) is torso: it moves with the body, the
  hair model fires on dark clothes there, and the renderer takes the torso from the ground truth anyway.
- face core: the oval from 454 via the chin to 234 closed over the brows' upper edges; always face skin, hair never
  overrides it (the hair model fires on brows and beards) and the person mask is not needed there.
- features, painted in order over skin: nose (7) = convex hull of MediaPipe's nose landmarks; brows (6) = the brow
  polygon (lower + upper line) plus a stroke ``brow_thickness * fw`` wide; eyes (5) = eyelid contours; lips (3) =
  outer lip contour; mouth interior (4) = inside the inner lip contour (none when its area is under 1 px times the
  mouth width: a closed mouth).
- neck (8): person pixels below the jaw line in a band ``neck_width * fw`` wide around the face axis (flared to
  the head width between the jaw line and the chin, so the skin under the ears is neck), down to the torso line
  ``neck_length * fh`` below the chin (perpendicular to ``up``), and skin-coloured: chroma (YCrCb) within
  Mahalanobis distance sqrt(skin_threshold) of the face's skin sampled around cheek/forehead/chin landmarks (this
  cuts collars, shirts and scarves; the first 0.12 fh below the chin skip the test: the shadow under the chin has
  unreliable chroma). With the 6-class model, body-skin >= clothes replaces the colour test.
- torso (9): every other person pixel below the jaw / outside the head region.
- head mask (1-7) is made one connected, hole-free region: the outer contour containing the nose tip is kept
  (other head pieces become neck/torso/background), holes inside it are filled (face skin inside the oval, hair
  outside). Then the same for head + neck: stray neck pieces become torso, holes become neck.

A clip's frames are parsed by lipspace.prep.parsing_clip.parse_frames (segmenters, hair stride, frames without
landmarks); speed figures are in lipspace.prep.parsing_bench.

Landmark index lists: MediaPipe face mesh topology, ``mediapipe.tasks.python.vision.FaceLandmarksConnections``
(1.2.2; same lists as the legacy ``mediapipe/python/solutions/face_mesh_connections.py``), chained into ordered
polygons here so that importing mediapipe is not needed (tests check them against mediapipe's lists).
"""

from __future__ import annotations

import cv2
import numpy as np

from lipspace.data.schema import HEAD_CLASSES
from lipspace.utils.errors import LipspaceError

BACKGROUND, HAIR, SKIN, LIPS, MOUTH, EYES, BROWS, NOSE, NECK, TORSO = range(10)

# Ordered polygons (closed) from FaceLandmarksConnections.FACE_LANDMARKS_* (see module doc).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
# Brows: lower line (outer -> inner) then upper line (inner -> outer).
LEFT_BROW = (276, 283, 282, 295, 285, 336, 296, 334, 293, 300)
RIGHT_BROW = (46, 53, 52, 65, 55, 107, 66, 105, 63, 70)
NOSE_POINTS = (168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 97, 326, 327, 294, 278, 344, 440, 275, 45, 220, 115, 48,
               64)
# Jaw chain 361 -> chin -> 132 (part of FACE_OVAL) and the face core (oval 454 -> chin -> 234 + brow upper edges).
JAW = FACE_OVAL[10:27]
FACE_CORE = FACE_OVAL[8:29] + (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
# Skin colour samples: cheeks, forehead, chin.
_SKIN_SAMPLES = (50, 280, 101, 330, 205, 425, 151, 9, 199, 36, 266, 117, 346)
CHIN, FOREHEAD, FACE_RIGHT, FACE_LEFT, NOSE_TIP = 152, 10, 454, 234, 1

_UPPER = 10  # region image only: person pixels above the torso line outside neck band and head region
_SURE_NECK = 11  # region image only: neck band down to _SURE_NECK_LENGTH * fh below the chin, no colour test
_SURE_NECK_LENGTH = 0.12
_SHIFT = 2  # fillPoly fixed-point bits: polygons at 1/4 pixel


def _prob(m: np.ndarray | None, shape, name: str) -> np.ndarray | None:
    """uint8 0..255 view of a probability map (float 0..1 accepted)."""
    if m is None:
        return None
    m = np.asarray(m)
    if m.shape != shape:
        raise LipspaceError(f"parse_frame: {name} map has shape {m.shape}, expected {shape}")
    if m.dtype == np.uint8:
        return m
    return cv2.convertScaleAbs(np.asarray(m, np.float32), alpha=255.0)


def _poly(pts: np.ndarray) -> np.ndarray:
    return np.round(pts * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _fill(img: np.ndarray, pts: np.ndarray, value: int) -> None:
    cv2.fillPoly(img, [_poly(pts)], value, lineType=cv2.LINE_8, shift=_SHIFT)


def parse_frame(person, hair, landmarks, *, frame=None, body_skin=None, clothes=None, head_width: float = 1.5,
                neck_width: float = 0.85, neck_length: float = 0.4, brow_thickness: float = 0.025,
                skin_threshold: float = 16.0) -> np.ndarray:
    """Class mask uint8 [H,W] (PARSING_CLASSES) of one frame; see the module doc for the heuristics.

    person, hair: [H,W] probabilities (uint8 0..255 or float 0..1); landmarks: [478,2|3] pixels, or None for a
    landmark-free parse. frame: the uint8 RGB frame [H,W,3], for the neck's skin-colour test (skipped when None
    or skin_threshold <= 0). body_skin, clothes: optional [H,W] maps from the 6-class model; they replace the colour
    test (neck = body-skin >= clothes)."""
    person = np.asarray(person)
    if person.ndim != 2:
        raise LipspaceError(f"parse_frame: person map must be [H,W], got {person.shape}")
    shape = person.shape
    p = _prob(person, shape, "person") >= 128
    hr = _prob(hair, shape, "hair") >= 128
    out = np.zeros(shape, np.uint8)
    if landmarks is None:
        out[p] = TORSO
        out[p & hr] = HAIR
        return out
    lm = np.asarray(landmarks, np.float64)[:, :2]
    if lm.shape[0] < 478 or not np.isfinite(lm).all():
        raise LipspaceError(f"parse_frame: landmarks must be 478 finite MediaPipe points [478,2|3], got {lm.shape}")

    up = lm[FOREHEAD] - lm[CHIN]
    fh = float(np.hypot(*up))
    fw = float(np.hypot(*(lm[FACE_RIGHT] - lm[FACE_LEFT])))
    if fh < 1 or fw < 1:
        return parse_frame(person, hair, None)
    up /= fh
    r = np.array([-up[1], up[0]])
    if np.dot(r, lm[FACE_RIGHT] - lm[FACE_LEFT]) < 0:
        r = -r
    centre = 0.5 * (lm[FACE_LEFT] + lm[FACE_RIGHT])
    far = 4.0 * max(shape) + 4 * fh  # "without limit" upwards: well past the frame

    # Region image: torso; above the torso line; the neck (flared up to the head width between the jaw line and
    # the chin so the skin under the ears is neck, a band below the chin); the head region on top.
    region = np.full(shape, TORSO, np.uint8)
    chin = lm[CHIN]
    nw = 0.5 * neck_width * fw
    nl = neck_length * fh
    bottom = chin - nl * up
    _fill(region, np.array([bottom - far * r, bottom + far * r, bottom + far * (r + up), bottom + far * (up - r)]),
          _UPPER)  # above the torso line: torso, but hair is allowed
    hw = 0.5 * head_width * fw
    jaw = lm[list(JAW)]  # 361 ... 132: from the +r side to the -r side
    a = jaw[-1] + (-hw - np.dot(jaw[-1] - centre, r)) * r
    d = jaw[0] + (hw - np.dot(jaw[0] - centre, r)) * r
    _fill(region, np.array([a, d, chin + nw * r, bottom + nw * r, bottom - nw * r, chin - nw * r]), NECK)
    sure = chin - _SURE_NECK_LENGTH * fh * up  # neck whatever its colour above this line (shadow under the chin)
    _fill(region, np.array([a, d, chin + nw * r, sure + nw * r, sure - nw * r, chin - nw * r]), _SURE_NECK)
    head_poly = np.concatenate([jaw, [a, a + far * up, d + far * up, d]])
    _fill(region, head_poly, SKIN)
    in_head = region == SKIN

    out[p] = region[p]
    out[out == _UPPER] = TORSO
    if body_skin is not None and clothes is not None:
        bs = _prob(body_skin, shape, "body_skin")
        cl = _prob(clothes, shape, "clothes")
        out[(out == NECK) & (bs < cl)] = TORSO
    elif frame is not None and skin_threshold > 0:
        out[(out == NECK) & ~_skin_like(frame, lm, skin_threshold)] = TORSO
    out[out == _SURE_NECK] = NECK
    out[hr & ((p & (region != TORSO)) | in_head)] = HAIR
    _fill(out, lm[list(FACE_CORE)], SKIN)
    _fill(out, cv2.convexHull(lm[list(NOSE_POINTS)].astype(np.float32)).reshape(-1, 2), NOSE)
    thick = max(1, int(round(brow_thickness * fw)))
    for brow in (LEFT_BROW, RIGHT_BROW):
        pts = lm[list(brow)]
        _fill(out, pts, BROWS)
        cv2.polylines(out, [_poly(pts)], True, BROWS, thickness=thick, lineType=cv2.LINE_8, shift=_SHIFT)
    for eye in (LEFT_EYE, RIGHT_EYE):
        _fill(out, lm[list(eye)], EYES)
    _fill(out, lm[list(LIPS_OUTER)], LIPS)
    inner = lm[list(LIPS_INNER)]
    width = float(np.hypot(*(inner[0] - inner[10])))  # corner 78 to corner 308
    if abs(cv2.contourArea(inner.astype(np.float32))) > width * 1.0:  # open by more than ~1 px on average
        _fill(out, inner, MOUTH)

    _make_head_simple(out, region, p, lm)
    return out


def _skin_like(frame: np.ndarray, lm: np.ndarray, threshold: float, scale: int = 4) -> np.ndarray:
    """bool [H,W]: chroma (YCrCb Cr, Cb) within Mahalanobis distance sqrt(threshold) of the face's skin colour,
    sampled in 3x3 patches around cheek / forehead / chin landmarks; computed at 1/scale resolution."""
    frame = np.asarray(frame)
    h, w = frame.shape[:2]
    small = cv2.resize(frame, (max(1, w // scale), max(1, h // scale)), interpolation=cv2.INTER_AREA)
    crcb = cv2.cvtColor(small, cv2.COLOR_RGB2YCrCb)[:, :, 1:].astype(np.float32)
    sh, sw = crcb.shape[:2]
    pts = np.round(lm[list(_SKIN_SAMPLES)] / scale).astype(int)
    pts = pts[(pts[:, 0] >= 1) & (pts[:, 0] < sw - 1) & (pts[:, 1] >= 1) & (pts[:, 1] < sh - 1)]
    if len(pts) < 3:
        return np.ones((h, w), bool)
    offs = np.array([(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    xy = (pts[:, None, :] + offs[None]).reshape(-1, 2)
    sample = crcb[xy[:, 1], xy[:, 0]]
    mean = sample.mean(0)
    cov = np.cov(sample.T) + np.eye(2) * 4.0  # floor: ~2 chroma levels of spread
    d = crcb - mean
    ic = np.linalg.inv(cov).astype(np.float32)
    d2 = d[..., 0] ** 2 * ic[0, 0] + 2 * d[..., 0] * d[..., 1] * ic[0, 1] + d[..., 1] ** 2 * ic[1, 1]
    m = cv2.medianBlur((d2 < threshold).astype(np.uint8) * 255, 3)
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) >= 128


def _simple_piece(mask: np.ndarray, lm: np.ndarray) -> np.ndarray | None:
    """Filled outer contour (bool) of the piece of ``mask`` containing the nose tip (else the largest piece)."""
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    tip = (float(lm[NOSE_TIP, 0]), float(lm[NOSE_TIP, 1]))
    keep = next((c for c in contours if cv2.pointPolygonTest(c, tip, False) >= 0), None)
    if keep is None:
        keep = max(contours, key=cv2.contourArea)
    filled = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(filled, [keep], -1, 1, thickness=cv2.FILLED)
    return filled.view(bool)


def _make_head_simple(out: np.ndarray, region: np.ndarray, person: np.ndarray, lm: np.ndarray) -> None:
    """In place: the head (classes 1-7) and head + neck become single hole-free pieces (those at the nose tip).

    Head pieces cut off from the face become neck / torso / background by region; holes in the head become face
    skin inside the oval, hair outside. Then neck pieces cut off become torso and holes in head + neck neck."""
    head = (out >= HAIR) & (out <= NOSE)
    filled = _simple_piece(head, lm)
    if filled is None:
        return
    stray = head & ~filled
    if stray.any():
        out[stray] = np.where(person[stray], region[stray], BACKGROUND)
        out[stray & ((out == SKIN) | (out == _UPPER))] = TORSO  # head region pixels cut off from the head
        out[stray & (out == _SURE_NECK)] = NECK
    holes = filled & ~head
    if holes.any():
        oval = np.zeros_like(out)
        _fill(oval, lm[list(FACE_OVAL)], 1)
        out[holes] = np.where(oval[holes] > 0, SKIN, HAIR)
    neck = out == NECK
    if not neck.any():
        return
    both = filled | neck
    filled2 = _simple_piece(both, lm)
    out[neck & ~filled2] = TORSO
    out[filled2 & ~both] = NECK


def head_mask(parsing: np.ndarray, neck: bool = False) -> np.ndarray:
    """bool mask of the head classes (1-7), plus the neck (8) when ``neck`` (what a head NeRF renders)."""
    parsing = np.asarray(parsing)
    m = (parsing >= min(HEAD_CLASSES)) & (parsing <= max(HEAD_CLASSES))
    return m | (parsing == NECK) if neck else m

