"""iBUG-68 landmarks from the 3-D head model (same mouth/eye/brow curves the renderer paints), projected to pixels,
and the per-frame face points (tracks.npz 'face_points'): those 68 landmarks in head space, then a fixed grid of
material points on the front of the skull, nose and jaw.

Order follows LMK68_GROUPS: 0-16 jaw (image left to right via the chin), 17-21 / 22-26 brows, 27-35 nose,
36-41 / 42-47 eyes (the image-left eye is the subject's right: x < 0 in head space), 48-59 outer lips,
60-67 inner lips.
"""

from __future__ import annotations

import numpy as np

from lipspace.data.synthetic import head as hd
from lipspace.data.synthetic.scene import project


def _on_surface(m: hd.HeadModel, xy: np.ndarray, jaw: float, prims=(hd.SKULL, hd.JAW)) -> np.ndarray:
    z = hd.front_z(m, xy[:, 0], xy[:, 1], jaw, prims)
    return np.stack([xy[:, 0], xy[:, 1], z], 1)


def _outline(m: hd.HeadModel, jaw: float) -> np.ndarray:
    """17 points on the face outline from ear level on the image left, through the chin, to the image right:
    the farther of the skull / jaw cross-sections (at their widest z) along rays from a point below the eyes."""
    c, a = hd.primitives(m, jaw)
    o = np.array([0.0, float(m.eye[1]) + 0.1])
    phi = np.linspace(-np.pi / 2, np.pi / 2, 17)
    dirs = np.stack([np.sin(phi), np.cos(phi)], 1)
    pts = []
    for k in (hd.SKULL, hd.JAW):
        # Solve |(o + r d - c) / a|^2 = 1 for the positive root r (o lies inside both ellipses).
        oc = (o - c[k, :2]) / a[k, :2]
        dd = dirs / a[k, :2]
        qa, qb, qc = (dd ** 2).sum(1), dd @ oc, oc @ oc - 1.0
        r = (-qb + np.sqrt(np.clip(qb * qb - qa * qc, 0, None))) / qa
        pts.append((r, np.full(17, c[k, 2])))
    use_jaw = pts[1][0] > pts[0][0]
    r = np.where(use_jaw, pts[1][0], pts[0][0])
    xy = o + r[:, None] * dirs
    return np.concatenate([xy, np.where(use_jaw, pts[1][1], pts[0][1])[:, None]], 1)


def landmarks3d(m: hd.HeadModel, st: dict) -> np.ndarray:
    """[68,3] head-space landmark positions for one frame state (jaw, round, spread, close, blink, brow)."""
    jaw = float(st["jaw"])
    out = np.zeros((68, 3))
    out[0:17] = _outline(m, jaw)
    # Brows: 17-21 image-left brow outer->inner, 22-26 image-right brow inner->outer.
    bx = np.linspace(-0.9, 0.9, 5) * float(m.brow[1])
    cx = float(m.eye[0]) + 0.02
    yb = hd.brow_curve(m, bx, float(st["brow"]))
    out[17:22] = _on_surface(m, np.stack([-cx + bx, yb], 1), jaw)
    out[22:27] = _on_surface(m, np.stack([cx + bx, yb], 1), jaw)
    # Nose: bridge 27-30 from between the eyes down the ridge to the tip, 31-35 along the base.
    nc, na = m.centres[hd.NOSE], m.axes[hd.NOSE]
    ridge = np.stack([np.zeros(4), np.linspace(float(m.eye[1]), float(nc[1]), 4)], 1)
    out[27:31] = _on_surface(m, ridge, jaw, (hd.SKULL, hd.JAW, hd.NOSE))
    base = np.stack([np.linspace(-1, 1, 5) * 0.9 * float(na[0]), np.full(5, float(nc[1]) + 0.7 * float(na[1]))], 1)
    out[31:36] = _on_surface(m, base, jaw, (hd.SKULL, hd.JAW, hd.NOSE))
    # Eyes: corner, two upper-lid points, corner, two lower-lid points (clockwise in the image).
    ew = float(m.eye[2])
    for first, sign in ((36, -1.0), (42, 1.0)):
        xe = np.array([-1.0, -0.35, 0.35, 1.0, 0.35, -0.35]) * ew  # image-left to right, then back
        y_lid, y_low = hd.eye_curves(m, xe, float(st["blink"]))
        y = np.where(np.arange(6) < 4, y_lid, y_low)
        y[[0, 3]] = float(m.eye[1])
        out[first:first + 6] = _on_surface(m, np.stack([sign * float(m.eye[0]) + xe, y], 1), jaw)
    # Lips: outer 48 (left corner) .. 54 (right corner) along the upper lip, back along the lower lip.
    ms = hd.mouth_shape(m, jaw, float(st["round"]), float(st["spread"]), float(st["close"]))
    xo = np.array([-1.0, -0.6, -0.25, 0.0, 0.25, 0.6, 1.0, 0.6, 0.25, 0.0, -0.25, -0.6]) * ms.w
    y_uo, _, _, y_lo = hd.mouth_curves(xo, ms)
    yo = np.where(np.arange(12) <= 6, y_uo, y_lo)
    yo[[0, 6]] = ms.cy
    out[48:60] = _on_surface(m, np.stack([xo, yo], 1), jaw)
    xi = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 0.5, 0.0, -0.5]) * ms.wi
    _, y_ui, y_li, _ = hd.mouth_curves(xi, ms)
    yi = np.where(np.arange(8) <= 4, y_ui, y_li)
    yi[[0, 4]] = ms.cy
    out[60:68] = _on_surface(m, np.stack([xi, yi], 1), jaw)
    return out


def landmarks68(m: hd.HeadModel, states: list[dict], poses: np.ndarray, K: np.ndarray) -> np.ndarray:
    """[N,68,2] float32 pixel landmarks for every frame."""
    return np.stack([project(landmarks3d(m, s), p, K) for s, p in zip(states, poses, strict=True)]).astype(np.float32)


FACE_GRID_STEP = 0.1  # head units between the grid points on the face surface
FACE_GRID_Y = (-0.6, 1.0)  # head-space y range of the grid: forehead to below the chin
FACE_GRID_MAX_Z = -0.3  # keep points on the front of the head (the face looks along -z)


def face_grid(m: hd.HeadModel) -> tuple[np.ndarray, np.ndarray]:
    """Material points on the front surface of the head at rest (jaw closed): a regular (x, y) grid
    ``FACE_GRID_STEP`` apart, each point on the frontmost of skull / jaw / nose there. Returns the points [G,3] and
    whether each belongs to the jaw [G] (those ride with the jaw: the renderer's skin texture does too)."""
    half = np.floor(float(m.axes[hd.SKULL, 0]) / FACE_GRID_STEP)
    xs = np.arange(-half, half + 1) * FACE_GRID_STEP
    ys = np.arange(FACE_GRID_Y[0], FACE_GRID_Y[1] + 1e-9, FACE_GRID_STEP)
    x, y = (a.ravel() for a in np.meshgrid(xs, ys))
    prims = (hd.SKULL, hd.JAW, hd.NOSE)
    z = np.stack([hd.front_z(m, x, y, 0.0, (k,)) for k in prims])  # NaN where a primitive does not cover (x, y)
    z = np.where(np.isnan(z), np.inf, z)
    owner = np.asarray(prims)[np.argmin(z, 0)]
    zf = z.min(0)
    keep = np.isfinite(zf) & (zf <= FACE_GRID_MAX_Z)
    return np.stack([x, y, zf], 1)[keep], owner[keep] == hd.JAW


def face_points3d(m: hd.HeadModel, st: dict, grid: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """[68 + G, 3] head-space face points of one frame state: ``landmarks3d`` then ``face_grid`` (jaw points moved
    down with the jaw as the renderer's jaw ellipsoid is)."""
    pts, on_jaw = face_grid(m) if grid is None else grid
    pts = pts.copy()
    pts[on_jaw, 1] += m.jaw_drop * float(st["jaw"])
    return np.concatenate([landmarks3d(m, st), pts])


def face_points(m: hd.HeadModel, states: list[dict]) -> np.ndarray:
    """[N, 68 + G, 3] float32 face points of every frame (tracks.npz 'face_points'; lipspace.data.schema)."""
    grid = face_grid(m)
    return np.stack([face_points3d(m, s, grid) for s in states]).astype(np.float32)
