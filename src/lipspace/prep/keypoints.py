"""Facial keypoints tracked by optical flow for the Head-Sync Stabilizer (lipspace.prep.stabilize).

Features (cv2.goodFeaturesToTrack) are seeded inside the rigid part of the face: the convex hull of the MediaPipe
face oval minus the mouth-and-chin region and the eyes (both dilated), which move with speech and blinks. They are
tracked frame to frame with pyramidal Lucas-Kanade (cv2.calcOpticalFlowPyrLK) and kept only while the
forward-backward check passes (tracking back to the previous frame lands within ``fb_px``) and the point stays in
the current frame's rigid region. New features are seeded every ``reseed_every`` frames (and whenever fewer than
80 % of ``max_points`` survive) away from the live ones. An invalid frame (no face) ends every track.

Frames are read in chunks of ``chunk`` from frames/ (``read_frames(indices)`` -> [k,H,W,3]), so memory stays
bounded for any clip length. Observations are returned sparse: one row per (frame, track).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LOWER_FACE = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,  # lips
              361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132)  # jaw line
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)


@dataclass
class KeypointTracks:
    """Sparse 2-D observations: row k says track ``track[k]`` is at ``uv[k]`` (pixels) in frame ``frame[k]``."""

    frame: np.ndarray  # [O] int64
    track: np.ndarray  # [O] int64, 0..n_tracks-1
    uv: np.ndarray  # [O,2] float64
    seed_frame: np.ndarray  # [P] int64: the frame where each track starts

    @property
    def n_tracks(self) -> int:
        return len(self.seed_frame)

    def summary(self) -> dict:
        length = np.bincount(self.track, minlength=self.n_tracks)
        per_frame = np.bincount(self.frame)
        return {"n_tracks": int(self.n_tracks), "n_observations": int(len(self.frame)),
                "track_len_median": float(np.median(length)) if len(length) else 0.0,
                "points_per_frame_median": float(np.median(per_frame[per_frame > 0])) if per_frame.any() else 0.0}


def rigid_mask(landmarks: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """uint8 [H,W] mask (255 = rigid face) from one frame's MediaPipe landmarks [478,>=2] in pixels."""
    h, w = hw
    pts = np.round(np.asarray(landmarks)[:, :2]).astype(np.int32)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(pts[list(FACE_OVAL)]), 255)
    cut = np.zeros_like(mask)
    for part in (LOWER_FACE, RIGHT_EYE, LEFT_EYE):
        cv2.fillConvexPoly(cut, cv2.convexHull(pts[list(part)]), 255)
    k = max(3, (max(h, w) // 64) | 1)
    cut = cv2.dilate(cut, np.ones((k, k), np.uint8))
    mask[cut > 0] = 0
    return mask


def track_keypoints(read_frames: Callable[[np.ndarray], np.ndarray], landmarks: np.ndarray, valid: np.ndarray,
                    max_points: int = 300, reseed_every: int = 5, min_track_len: int = 5, chunk: int = 64,
                    fb_px: float | None = None, progress: Callable[[int], None] | None = None) -> KeypointTracks:
    """Track rigid-face keypoints through all frames (see the module docstring). ``landmarks`` [N,478,>=2] in the
    frames' pixels, ``valid`` [N]. Tracks shorter than ``min_track_len`` frames are dropped."""
    n = len(landmarks)
    valid = np.asarray(valid, bool)
    frames_o, tracks_o, uv_o, seeds = [], [], [], []
    live = np.zeros((0, 2), np.float32)
    ids = np.zeros(0, np.int64)
    prev = None
    since_seed = reseed_every
    for start in range(0, n, chunk):
        idx = np.arange(start, min(n, start + chunk))
        rgb = read_frames(idx)
        for f, img in zip(idx, rgb):
            if not valid[f]:
                live, ids, prev = live[:0], ids[:0], None
                continue
            gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            h, w = gray.shape
            mask = rigid_mask(landmarks[f], (h, w))
            lk = {"winSize": (max(7, (w // 24) | 1),) * 2, "maxLevel": 3,
                  "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)}
            fb = fb_px if fb_px is not None else max(0.25, 0.5 * w / 512)
            if prev is not None and len(live):
                nxt, st, _ = cv2.calcOpticalFlowPyrLK(prev, gray, live, None, **lk)
                back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, prev, nxt, None, **lk)
                ok = (st[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm(back - live, axis=1) < fb)
                xi, yi = np.round(nxt[:, 0]).astype(int), np.round(nxt[:, 1]).astype(int)
                inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
                ok &= inside
                ok[ok] = mask[yi[ok], xi[ok]] > 0
                live, ids = nxt[ok], ids[ok]
            since_seed += 1
            if since_seed >= reseed_every or len(live) < 0.8 * max_points:
                n_before = len(ids)
                live, ids = _seed(gray, mask, live, ids, max_points, len(seeds))
                seeds += [f] * (len(ids) - n_before)
                since_seed = 0
            frames_o.append(np.full(len(ids), f, np.int64))
            tracks_o.append(ids.copy())
            uv_o.append(live.astype(np.float64))
            prev = gray
        if progress:
            progress(len(idx))
    return _compact(frames_o, tracks_o, uv_o, np.asarray(seeds, np.int64), min_track_len)


def _seed(gray, mask, live, ids, max_points, next_id):
    """Add features away from the live ones until ``max_points``; new ids count up from ``next_id``."""
    want = max_points - len(live)
    if want <= 0:
        return live, ids
    h, w = gray.shape
    spacing = max(2, int(round(w / 96)))
    free = mask.copy()
    for x, y in np.round(live).astype(int):
        cv2.circle(free, (int(x), int(y)), spacing, 0, -1)
    new = cv2.goodFeaturesToTrack(gray, want, 0.005, spacing, mask=free, blockSize=3)
    if new is None:
        return live, ids
    new = new.reshape(-1, 2).astype(np.float32)
    return np.concatenate([live, new]), np.concatenate([ids, next_id + np.arange(len(new))])


def _compact(frames_o, tracks_o, uv_o, seeds, min_len) -> KeypointTracks:
    if not frames_o:
        return KeypointTracks(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0, np.int64))
    frame, track, uv = np.concatenate(frames_o), np.concatenate(tracks_o), np.concatenate(uv_o)
    length = np.bincount(track, minlength=len(seeds))
    keep_track = length >= min_len
    remap = np.cumsum(keep_track) - 1
    keep = keep_track[track]
    return KeypointTracks(frame[keep], remap[track[keep]], uv[keep], seeds[keep_track])
