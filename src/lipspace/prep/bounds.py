"""Head-space bounding spheres of a real clip, measured from the parsing masks and the fitted camera.

A sphere is good enough for the NeRF when every camera ray through a pixel of the region it must model passes
through it. So the sphere is centred in the plane z = ``depth`` of head space (the skull centre plane; a centre
free in z would collapse onto the camera, where all rays of a frame meet) at the (x, y) that minimises the largest
ray-to-centre distance over the region's pixels of a sample of frames, and its radius is that distance plus a
margin. ``head_bounds`` covers head + neck (classes 1-8), ``bounds`` also the torso (classes 1-9).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.optimize import minimize

from lipspace.utils.errors import LipspaceError
from lipspace.prep.runs import evenly_spaced


def _rays(pose: np.ndarray, intrinsics: np.ndarray, u: np.ndarray, v: np.ndarray):
    """Head-space origin and unit directions of the rays through pixel centres (u + .5, v + .5) of one frame."""
    fx, fy, cx, cy = (float(x) for x in intrinsics)
    d_cam = np.stack([(u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, np.ones(len(u))], -1)
    rot, t = pose[:3, :3].astype(np.float64), pose[:3, 3].astype(np.float64)
    d = d_cam @ rot  # R^T d for row vectors
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return -rot.T @ t, d


def region_rays(parsing: np.ndarray, pose: np.ndarray, intrinsics: np.ndarray, classes, frames: np.ndarray):
    """Origins [M,3] and directions [M,3] of rays through the boundary pixels of `classes` in the given frames
    (the farthest ray from any centre inside a region goes through its boundary, so the interior is skipped)."""
    origins, dirs = [], []
    cls = np.asarray(classes)
    kernel = np.ones((3, 3), np.uint8)
    for i in frames:
        mask = np.isin(parsing[i], cls).astype(np.uint8)
        inner = cv2.erode(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        v, u = np.nonzero(mask.astype(bool) & ~inner.astype(bool))
        if len(u) == 0:
            continue
        o, d = _rays(pose[i], intrinsics, u, v)
        origins.append(np.broadcast_to(o, d.shape))
        dirs.append(d)
    if not dirs:
        raise LipspaceError(f"no pixel of parsing classes {list(classes)} in the sampled frames; the parsing stage "
                            f"found no head — check the debug overlays")
    return np.concatenate(origins), np.concatenate(dirs)


def ray_distance(centre: np.ndarray, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Distance from `centre` to each ray's line (rays start behind the head, so the line is what matters)."""
    oc = centre[None] - origins
    along = (oc * dirs).sum(1, keepdims=True)
    return np.linalg.norm(oc - along * dirs, axis=1)


def enclosing_sphere(origins: np.ndarray, dirs: np.ndarray, depth: float = 0.0, margin: float = 1.05,
                     quantile: float = 0.999) -> dict:
    """Sphere centred at (x, y, depth) minimising the `quantile` ray distance (a few stray mask pixels must not
    blow the sphere up), radius = that distance x `margin`."""

    def cost(xy):
        return float(np.quantile(ray_distance(np.array([xy[0], xy[1], depth]), origins, dirs), quantile))

    # Start where the rays cross the centre plane on average, then polish with Nelder-Mead (2 parameters).
    s = (depth - origins[:, 2]) / np.where(np.abs(dirs[:, 2]) > 1e-6, dirs[:, 2], 1e-6)
    start = np.median(origins[:, :2] + s[:, None] * dirs[:, :2], axis=0)
    res = minimize(cost, start, method="Nelder-Mead", options={"xatol": 1e-3, "fatol": 1e-4, "maxiter": 200})
    centre = np.array([res.x[0], res.x[1], depth])
    radius = cost(res.x) * margin
    return {"center": [round(float(c), 5) for c in centre], "radius": round(float(radius), 5)}


def bounds_frames(valid: np.ndarray, n_sample: int = 40) -> np.ndarray:
    """The frames whose parsing the bounds are measured on: ``n_sample`` valid frames spread over the clip."""
    return evenly_spaced(np.nonzero(np.asarray(valid, bool))[0], n_sample)


def clip_bounds(parsing: np.ndarray, pose: np.ndarray, intrinsics: np.ndarray, n_sample: int = 40,
                depth: float = 0.0, valid: np.ndarray | None = None) -> tuple[dict, dict]:
    """(bounds: head + neck + torso, head_bounds: head + neck) from parsing [N,H,W] and poses [N,4,4] (a whole clip,
    or the frames bounds_frames picked)."""
    frames = bounds_frames(np.ones(len(parsing), bool) if valid is None else valid, n_sample)
    head = enclosing_sphere(*region_rays(parsing, pose, intrinsics, range(1, 9), frames), depth=depth)
    full = enclosing_sphere(*region_rays(parsing, pose, intrinsics, range(1, 10), frames), depth=depth)
    if full["radius"] < head["radius"]:  # no torso visible: the full sphere is the head sphere
        full = dict(head)
    return full, head
