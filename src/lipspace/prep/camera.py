"""Pinhole camera helpers for the head fit: intrinsics, projection, rotations, focal-length search, pose smoothing.

Conventions (lipspace.data.schema): ``pose[i]`` maps head space to the OpenCV camera of frame i (x right, y down,
z forward), ``X_cam = R @ X_head + t``; intrinsics (fx, fy, cx, cy) in pixels with pixel centres at integer + 0.5,
so a continuous image coordinate (MediaPipe's normalised x * width) is ``u = fx * X / Z + cx`` directly and the
principal point of an image of size (H, W) is (W / 2, H / 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from lipspace.utils.errors import LipspaceError


def intrinsics_for(focal: float, image_hw: tuple[int, int]) -> np.ndarray:
    """(fx, fy, cx, cy) float32 for square pixels and the principal point at the image centre."""
    h, w = image_hw
    return np.array([focal, focal, w / 2.0, h / 2.0], np.float32)


def project(x_cam: np.ndarray, intrinsics) -> np.ndarray:
    """Camera-space points [...,3] -> pixel coordinates [...,2]."""
    fx, fy, cx, cy = np.asarray(intrinsics, np.float64)
    z = x_cam[..., 2]
    return np.stack([fx * x_cam[..., 0] / z + cx, fy * x_cam[..., 1] / z + cy], -1)


def rodrigues(w: np.ndarray) -> np.ndarray:
    """Rotation vectors [N,3] -> rotation matrices [N,3,3]."""
    return Rotation.from_rotvec(np.asarray(w, np.float64).reshape(-1, 3)).as_matrix()


def rotation_angle_deg(r_a: np.ndarray, r_b: np.ndarray) -> np.ndarray:
    """Angle in degrees of r_a @ r_b^T for stacks of rotation matrices [N,3,3]."""
    rel = np.einsum("nij,nkj->nik", r_a, r_b)
    return np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))


def search_focal(error_at: Callable[[float], float], image_hw: tuple[int, int], lo: float = 0.5, hi: float = 6.0,
                 n_grid: int = 10, n_refine: int = 8) -> tuple[float, list[tuple[float, float]]]:
    """Focal (px) minimising ``error_at(focal)``: a log-spaced grid over [lo, hi] x max(H, W), then a golden-section
    search in log focal between the grid neighbours of the best grid point. Returns (focal, [(focal, error)])."""
    size = float(max(image_hw))
    grid = np.exp(np.linspace(math.log(lo * size), math.log(hi * size), n_grid))
    curve = [(float(f), float(error_at(float(f)))) for f in grid]
    errs = np.array([e for _, e in curve])
    k = int(np.nanargmin(errs))
    a, b = math.log(grid[max(k - 1, 0)]), math.log(grid[min(k + 1, n_grid - 1)])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = error_at(math.exp(c)), error_at(math.exp(d))
    curve += [(math.exp(c), float(fc)), (math.exp(d), float(fd))]
    for _ in range(max(n_refine - 2, 0)):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = error_at(math.exp(c))
            curve.append((math.exp(c), float(fc)))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = error_at(math.exp(d))
            curve.append((math.exp(d), float(fd)))
    curve.sort()
    best = min(curve, key=lambda fe: fe[1])
    return best[0], curve


def fill_invalid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rows of x [N,...] where ~valid replaced by linear interpolation over time (edges held)."""
    x = np.array(x, np.float64)
    valid = np.asarray(valid, bool)
    if valid.all():
        return x
    if not valid.any():
        raise LipspaceError("cannot interpolate a track without any valid frame")
    idx = np.arange(len(x))
    good = np.flatnonzero(valid)
    flat = x.reshape(len(x), -1)
    out = np.empty_like(flat)
    for k in range(flat.shape[1]):
        out[:, k] = np.interp(idx, good, flat[good, k])
    return out.reshape(x.shape)


def _continuous_quats(rot: np.ndarray) -> np.ndarray:
    q = Rotation.from_matrix(rot).as_quat()  # [N,4] x, y, z, w
    ref = q[len(q) // 2]
    q *= np.where(q @ ref < 0, -1.0, 1.0)[:, None]  # one hemisphere: head rotations stay well below 180 deg
    return q


def smooth_poses(pose: np.ndarray, valid: np.ndarray, fps: float = 25.0, sigma_s: float = 0.06) -> np.ndarray:
    """Temporally smoothed head->camera poses [N,4,4] float32: invalid frames filled by interpolation, then a
    Gaussian (sigma ``sigma_s`` seconds) on the translation and on the rotation as sign-continuous quaternions."""
    pose = np.asarray(pose, np.float64)
    valid = np.asarray(valid, bool)
    q = np.zeros((len(pose), 4))
    q[valid] = _continuous_quats(pose[valid, :3, :3])
    q = fill_invalid(q, valid)
    t = fill_invalid(pose[:, :3, 3], valid)
    sigma = sigma_s * fps
    if sigma > 0 and len(pose) > 1:
        q = gaussian_filter1d(q, sigma, axis=0, mode="nearest")
        t = gaussian_filter1d(t, sigma, axis=0, mode="nearest")
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out = np.tile(np.eye(4), (len(pose), 1, 1))
    out[:, :3, :3] = Rotation.from_quat(q).as_matrix()
    out[:, :3, 3] = t
    return out.astype(np.float32)


def pose_jitter(pose: np.ndarray, valid: np.ndarray | None = None) -> dict:
    """Frame-to-frame jitter of head->camera poses [N,4,4] (a valid mask [N] keeps only frame triples that are all
    valid): second differences per frame². Rotation: the angular velocity w_t = rotvec(R_{t-1}^T R_t) (degrees per
    frame, in the head frame), its acceleration |w_{t+1} - w_t| (deg/frame²); translation: |t_{t+1} - 2 t_t +
    t_{t-1}| (scene units/frame²). Returns mean and 95th percentile of each (0.0 when fewer than 3 frames)."""
    pose = np.asarray(pose, np.float64)
    ok = np.ones(len(pose), bool) if valid is None else np.asarray(valid, bool)
    triple = ok[:-2] & ok[1:-1] & ok[2:] if len(pose) >= 3 else np.zeros(0, bool)
    if not triple.any():
        return {"rot_acc_deg_mean": 0.0, "rot_acc_deg_p95": 0.0, "trans_acc_mean": 0.0, "trans_acc_p95": 0.0}
    r, t = pose[:, :3, :3], pose[:, :3, 3]
    rel = np.einsum("nji,njk->nik", r[:-1], r[1:])  # R_{t-1}^T R_t
    vel = np.degrees(Rotation.from_matrix(rel).as_rotvec())
    rot_acc = np.linalg.norm(vel[1:] - vel[:-1], axis=-1)[triple]
    trans_acc = np.linalg.norm(t[2:] - 2 * t[1:-1] + t[:-2], axis=-1)[triple]
    return {"rot_acc_deg_mean": float(rot_acc.mean()), "rot_acc_deg_p95": float(np.percentile(rot_acc, 95)),
            "trans_acc_mean": float(trans_acc.mean()), "trans_acc_p95": float(np.percentile(trans_acc, 95))}
