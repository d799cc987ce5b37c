"""The torso: a striped-shirt ellipsoid drawn over the background, and its optional motion with the head.

Torso space is the camera space of the torso at rest, so a torso pose (torso -> camera, ``X_cam = R @ X_torso + t``)
is the identity for the static torso (``follow`` = 0, as in real video). With ``follow`` > 0 the torso turns about a
pivot low in the torso by ``follow`` x the head's yaw and pitch, delayed by a first-order lag of ``lag_s`` seconds:
the shoulders follow a head turn or nod a little and late. The shirt's stripes and collar are painted in torso space
(they move with it); the light stays fixed in camera space (the shading changes as the torso turns).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from lipspace.data.schema import FPS
from lipspace.data.synthetic import head as hd
from lipspace.data.synthetic.params import rotation


def yaw_pitch(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Yaw and pitch (radians) of [N,4,4] poses whose rotation is params.rotation's Rz(roll) Ry(yaw) Rx(pitch)."""
    r = poses[:, :3, :3].astype(np.float64)
    return -np.arcsin(np.clip(r[:, 2, 0], -1.0, 1.0)), np.arctan2(r[:, 2, 1], r[:, 2, 2])


def exp_lag(x: np.ndarray, lag_s: float) -> np.ndarray:
    """First-order low-pass of a per-frame signal with time constant ``lag_s`` seconds, starting at rest on x[0]
    (so a clip starts without a transient); lag_s = 0 returns x."""
    if lag_s <= 0:
        return np.asarray(x, np.float64).copy()
    a = 1.0 - np.exp(-1.0 / (FPS * lag_s))
    y, _ = lfilter([a], [1.0, a - 1.0], np.asarray(x, np.float64), zi=[(1.0 - a) * float(x[0])])
    return y


def torso_poses(head_poses: np.ndarray, follow: float, lag_s: float, pivot: np.ndarray) -> np.ndarray:
    """[N,4,4] float32 torso -> camera: Ry(yaw_t) Rx(pitch_t) about ``pivot`` (camera space at rest), where
    yaw_t, pitch_t = follow x exp_lag(head yaw, head pitch). follow = 0 gives identities."""
    yaw, pitch = yaw_pitch(head_poses)
    yaw, pitch = follow * exp_lag(yaw, lag_s), follow * exp_lag(pitch, lag_s)
    out = np.zeros((len(yaw), 4, 4))
    for i in range(len(yaw)):
        r = rotation(yaw[i], pitch[i], 0.0)
        out[i, :3, :3], out[i, :3, 3], out[i, 3, 3] = r, pivot - r @ pivot, 1.0
    return out.astype(np.float32)


def draw(rays: np.ndarray, bg: np.ndarray, model: hd.HeadModel, centre: np.ndarray, axes: np.ndarray,
         light: np.ndarray, pose: np.ndarray | None = None):
    """The torso ellipsoid (centre, axes: torso space) in pose ``pose`` (None: at rest) over ``bg``.

    ``rays`` [M,3] camera-space directions with z = 1, ``bg`` [M,3] float32. Returns rgb [M,3] float32, labels
    [M] uint8 (9 torso, else 0), depth t [M] (inf off the torso) and every 7th visible torso point [P,3] float32
    in camera space (for the scene bounds)."""
    if pose is None:
        o, d = np.zeros(3, np.float32), rays
    else:  # rays in torso space: X_torso = R^T (X_cam - t), from the camera centre
        R, tr = pose[:3, :3].astype(np.float32), pose[:3, 3].astype(np.float32)
        o, d = -(tr @ R), rays @ R
    t = hd._hit(o, d, centre.astype(np.float32), axes.astype(np.float32))
    hit = np.isfinite(t)
    p = t[hit, None] * d[hit] if pose is None else o + t[hit, None] * d[hit]
    nrm = (p - centre) / axes ** 2
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    # Shirt: two-colour stripes, a darker collar band at the top, Lambert shading.
    stripe = np.clip(2.0 * np.sin(9.0 * p[:, 0] + 2.0 * p[:, 1]), -1, 1)[:, None] * 0.5 + 0.5
    alb = model.colours["shirt"] * stripe + model.colours["shirt2"] * (1 - stripe)
    top = centre[1] - axes[1]
    collar = (p[:, 1] - top < 0.12) & (np.abs(p[:, 0]) < 0.7)
    alb[collar] *= 0.7
    if pose is not None:
        nrm = nrm @ R.T  # the light is fixed in camera space
    lit = 0.32 + 0.78 * np.clip(nrm @ light, 0, None)
    rgb = bg.copy()
    rgb[hit] = alb * lit[:, None]
    lab = np.where(hit, 9, 0).astype(np.uint8)
    pts = p[::7] if pose is None else p[::7] @ R.T + tr
    return rgb, lab, t, pts.astype(np.float32)
