"""Blink and lip signals from MediaPipe face tracks: eye aspect ratio + eyeBlink blendshapes, mouth geometry."""

from __future__ import annotations

import numpy as np

from lipspace.data.schema import FPS
from lipspace.utils.errors import LipspaceError
from lipspace.prep.face import FaceTracks
from lipspace.prep.runs import true_runs

# 6-point eye contours in the MediaPipe 478-point mesh, ordered p1..p6 as in Soukupová & Čech (2016):
# p1/p4 the eye corners, p2/p3 upper lid, p6/p5 the lower-lid points facing them.
RIGHT_EYE = (33, 160, 158, 133, 153, 144)
LEFT_EYE = (362, 385, 387, 263, 373, 380)
INNER_LIP = (13, 14)
MOUTH_CORNERS = (61, 291)
OUTER_EYE_CORNERS = (33, 263)  # inter-ocular distance: the scale reference for lip features
OPEN_PERCENTILE = 90.0


def _dist(lmk: np.ndarray, a: int, b: int) -> np.ndarray:
    # Image-plane (x, y) only: MediaPipe z is a coarse depth estimate and would add noise.
    return np.linalg.norm(lmk[:, a, :2] - lmk[:, b, :2], axis=-1)


def eye_aspect_ratio(landmarks: np.ndarray, eye=RIGHT_EYE) -> np.ndarray:
    """EAR = (|p2-p6| + |p3-p5|) / (2 |p1-p4|) per frame of landmarks [N,478,>=2]; 0 where the eye has no width."""
    lmk = np.asarray(landmarks, np.float64)
    p1, p2, p3, p4, p5, p6 = eye
    width = _dist(lmk, p1, p4)
    height = _dist(lmk, p2, p6) + _dist(lmk, p3, p5)
    return np.where(width > 0, height / (2 * np.maximum(width, 1e-12)), 0.0)


def _interpolate_invalid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill rows of x [N] or [N,K] where ~valid by linear interpolation (edges held); all invalid -> zeros."""
    x = np.array(x, np.float64)
    if not valid.any():
        return np.zeros_like(x)
    idx = np.arange(len(valid))
    good = np.flatnonzero(valid)
    cols = x.reshape(len(x), -1)
    for k in range(cols.shape[1]):
        cols[:, k] = np.interp(idx, good, cols[good, k])
    return cols.reshape(x.shape)


def _blendshape(tracks: FaceTracks, name: str) -> np.ndarray:
    try:
        return np.asarray(tracks.blendshapes, np.float64)[:, list(tracks.names).index(name)]
    except ValueError:
        raise LipspaceError(f"face tracks have no '{name}' blendshape; they must use MediaPipe's 52 blendshape "
                            f"names (lipspace.data.schema.MP_BLENDSHAPE_NAMES)") from None


def _ear_blink(tracks: FaceTracks, valid: np.ndarray) -> np.ndarray:
    """Per-clip normalised EAR closure: 0 at the clip's open level (90th percentile), 1 at EAR = 0."""
    ear = 0.5 * (eye_aspect_ratio(tracks.landmarks, RIGHT_EYE) + eye_aspect_ratio(tracks.landmarks, LEFT_EYE))
    out = np.zeros(len(ear))
    if not valid.any():
        return out
    # The eyes are open most of the time, so a high percentile is the open level without being set by outliers.
    open_level = np.percentile(ear[valid], OPEN_PERCENTILE)
    if open_level <= 0:
        return out
    out[valid] = np.clip(1.0 - ear[valid] / open_level, 0.0, 1.0)
    return out


def blink_signal(tracks: FaceTracks) -> np.ndarray:
    """float32 [N] in [0, 1] (0 open, 1 closed): mean of the normalised-EAR closure and the eyeBlink blendshapes;
    invalid frames are linearly interpolated from their valid neighbours (all invalid -> zeros)."""
    valid = np.asarray(tracks.valid, bool)
    bs = 0.5 * (_blendshape(tracks, "eyeBlinkLeft") + _blendshape(tracks, "eyeBlinkRight"))
    # Geometry and the blendshape regressor fail differently (EAR on head pitch, blendshapes on odd lighting);
    # averaging them damps either one's errors.
    blink = 0.5 * (_ear_blink(tracks, valid) + np.clip(bs, 0.0, 1.0))
    return np.clip(_interpolate_invalid(blink, valid), 0.0, 1.0).astype(np.float32)


def blink_events(blink: np.ndarray, fps: float = FPS, threshold: float = 0.5, min_frames: int = 2,
                 max_seconds: float | None = None) -> list[tuple[int, int]]:
    """Blinks as (start_frame, end_frame) with end exclusive: runs of blink >= threshold lasting at least
    `min_frames` frames (and at most `max_seconds` at `fps` when given: longer closures are not blinks)."""
    closed = np.asarray(blink, np.float64).reshape(-1) >= threshold
    longest = np.inf if max_seconds is None else max_seconds * fps
    return [(s, e) for s, e in true_runs(closed) if min_frames <= e - s <= longest]


def blinks_per_second(blink: np.ndarray, fps: float = FPS, threshold: float = 0.5, min_frames: int = 2,
                      max_seconds: float | None = None) -> float:
    """Blink rate over the whole signal (events from blink_events divided by its duration); 0 for an empty one."""
    n = len(np.asarray(blink).reshape(-1))
    if n == 0:
        return 0.0
    return len(blink_events(blink, fps, threshold, min_frames, max_seconds)) / (n / fps)


def lip_features(tracks: FaceTracks) -> np.ndarray:
    """float32 [N,4]: inner-lip opening (13-14) and mouth width (61-291), both over the inter-ocular distance
    (33-263) so they do not depend on face size, then the jawOpen and mouthPucker blendshapes."""
    lmk = np.asarray(tracks.landmarks, np.float64)
    iod = _dist(lmk, *OUTER_EYE_CORNERS)
    # A frame with no eye spacing has no usable scale; treat it like a frame without a face.
    valid = np.asarray(tracks.valid, bool) & (iod > 0)
    safe = np.where(valid, iod, 1.0)
    feats = np.stack([_dist(lmk, *INNER_LIP) / safe, _dist(lmk, *MOUTH_CORNERS) / safe,
                      _blendshape(tracks, "jawOpen"), _blendshape(tracks, "mouthPucker")], axis=-1)
    return _interpolate_invalid(feats, valid).astype(np.float32)
