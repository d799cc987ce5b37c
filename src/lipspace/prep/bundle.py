"""Two-stage bundle adjustment of the Head-Sync Stabilizer (lipspace.prep.stabilize), torch Adam on CPU.

Unknowns: per frame a rotation update ``w_t`` (axis-angle, left-multiplied: ``R_t = exp(w_t) R0_t``) and a
translation ``T_t = T0_t + d_t``; per keypoint track a head-space point ``X_p = X0_p + e_p``. Observations are the
tracked 2-D keypoints (lipspace.prep.keypoints), projected by the fitted pinhole intrinsics.

1. Poses: ``w, d`` optimised with the points fixed at their back-projected initial positions (``pose_iters``).
2. Joint: ``w, d`` and ``e`` together (``joint_iters``).

Loss (all terms in pixels of a 512-pixel frame, so the weights do not depend on the frame size):
- data: Huber (``huber_px``) of the reprojection error norm, mean over observations;
- temporal smoothness (small, ``smooth``): squared second difference over consecutive frames of the camera-space
  positions of 16 reference keypoints, converted to pixels (f / z); it couples rotation and translation;
- anchor (weak, ``anchor``): the same reference points under the pose vs under the initial (fitted) pose; it fixes
  the gauge (a bundle adjustment alone is free up to a similarity) so the poses stay in the 3DMM's head space;
- points prior (weak, ``points_prior``): ``|e_p|`` in pixels, for the same reason.
Learning rates decay by a cosine schedule to 5 % within each stage; float32 tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class BundleConfig:
    pose_iters: int = 150
    joint_iters: int = 250
    lr_rot: float = 2e-3  # radians per step
    lr_trans: float = 2e-3  # head units per step
    lr_points: float = 2e-3  # head units per step
    huber_px: float = 1.0
    smooth: float = 0.5
    anchor: float = 0.01
    points_prior: float = 0.01
    min_points: int = 6  # frames with fewer observations keep the interpolated pose


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Axis-angle [...,3] -> rotation matrices [...,3,3] (Rodrigues, safe at 0)."""
    th2 = (w * w).sum(-1, keepdim=True)[..., None]
    th = torch.sqrt(th2 + 1e-30)
    small = th2 < 1e-8
    a = torch.where(small, 1 - th2 / 6, torch.sin(th) / th)
    b = torch.where(small, 0.5 - th2 / 24, (1 - torch.cos(th)) / th2.clamp_min(1e-30))
    z = torch.zeros_like(w[..., 0])
    k = torch.stack([torch.stack([z, -w[..., 2], w[..., 1]], -1), torch.stack([w[..., 2], z, -w[..., 0]], -1),
                     torch.stack([-w[..., 1], w[..., 0], z], -1)], -2)
    return torch.eye(3, dtype=w.dtype) + a * k + b * (k @ k)


def _huber(r: torch.Tensor, delta: float) -> torch.Tensor:
    n = torch.sqrt((r * r).sum(-1) + 1e-12)
    return torch.where(n < delta, 0.5 * n * n, delta * (n - 0.5 * delta))


def bundle_adjust(frame: np.ndarray, track: np.ndarray, uv: np.ndarray, points0: np.ndarray, pose0: np.ndarray,
                  intrinsics, valid: np.ndarray, image_size: int, cfg: BundleConfig = BundleConfig()):
    """Stabilised poses [N,4,4] float64, refined points [P,3], report dict; see the module docstring. ``frame``,
    ``track``, ``uv`` are the sparse observations; frames not ``valid`` or with fewer than ``cfg.min_points``
    observations are not optimised (the caller interpolates them) and flagged False in the returned mask."""
    torch.manual_seed(0)
    dt = torch.float32  # as accurate as float64 here (checked on real clips) and about twice as fast
    n = len(pose0)
    counts = np.bincount(frame, minlength=n)
    used = np.asarray(valid, bool) & (counts >= cfg.min_points)
    slot = np.cumsum(used) - 1
    keep = used[frame]
    of = torch.as_tensor(slot[frame[keep]])
    ot = torch.as_tensor(track[keep])
    obs = torch.as_tensor(uv[keep], dtype=dt)
    frames = np.flatnonzero(used)
    r0 = torch.as_tensor(pose0[frames, :3, :3], dtype=dt)
    t0 = torch.as_tensor(pose0[frames, :3, 3], dtype=dt)
    x0 = torch.as_tensor(points0, dtype=dt)
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    c = torch.tensor([cx, cy], dtype=dt)
    px = 512.0 / image_size  # pixels of the frame -> pixels of a 512 frame
    ref = x0[torch.as_tensor(np.linspace(0, len(x0) - 1, min(16, len(x0))).round().astype(np.int64))]
    ref_cam0 = ref @ r0.transpose(1, 2) + t0[:, None]
    z_ref = float(ref_cam0[..., 2].mean())
    to_px = fx * px / z_ref  # head units at the face's depth -> 512-frame pixels
    consecutive = torch.as_tensor((frames[2:] - frames[:-2]) == 2) if len(frames) >= 3 else torch.zeros(0, dtype=bool)

    w = torch.zeros(len(frames), 3, dtype=dt, requires_grad=True)
    d = torch.zeros(len(frames), 3, dtype=dt, requires_grad=True)
    e = torch.zeros_like(x0, requires_grad=True)

    def losses():
        rot = so3_exp(w) @ r0
        t = t0 + d
        xc = torch.einsum("oij,oj->oi", rot[of], (x0 + e)[ot]) + t[of]
        proj = torch.stack([fx * xc[:, 0], fy * xc[:, 1]], -1) / xc[:, 2:].clamp_min(1e-3) + c
        res = (proj - obs) * px
        ref_cam = ref @ rot.transpose(1, 2) + t[:, None]
        acc = (ref_cam[2:] - 2 * ref_cam[1:-1] + ref_cam[:-2])[consecutive] * to_px
        smooth = (acc ** 2).sum(-1).mean() if len(acc) else res.new_zeros(())
        anchor = (((ref_cam - ref_cam0) * to_px) ** 2).sum(-1).mean()
        prior = ((e * to_px) ** 2).sum(-1).mean()
        return res, _huber(res, cfg.huber_px).mean(), smooth, anchor, prior

    def run(params, iters):
        opt = torch.optim.Adam(params)
        base = [g["lr"] for g in opt.param_groups]
        for i in range(iters):
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * i / max(iters - 1, 1))))
            _, data, smooth, anchor, prior = losses()
            loss = data + cfg.smooth * smooth + cfg.anchor * anchor + cfg.points_prior * prior
            opt.zero_grad()
            loss.backward()
            opt.step()

    def median_px():
        with torch.no_grad():
            return float((losses()[0] / px).norm(dim=-1).median()) if len(obs) else float("nan")

    info = {"frames_optimised": int(len(frames)), "reproj_px_median_init": round(median_px(), 4)}
    if len(frames):
        run([{"params": [w], "lr": cfg.lr_rot}, {"params": [d], "lr": cfg.lr_trans}], cfg.pose_iters)
        info["reproj_px_median_poses"] = round(median_px(), 4)
        run([{"params": [w], "lr": cfg.lr_rot}, {"params": [d], "lr": cfg.lr_trans},
             {"params": [e], "lr": cfg.lr_points}], cfg.joint_iters)
        info["reproj_px_median_joint"] = round(median_px(), 4)
    pose = np.array(pose0, np.float64)
    with torch.no_grad():
        pose[frames, :3, :3] = (so3_exp(w) @ r0).double().numpy()
        pose[frames, :3, 3] = (t0 + d).double().numpy()
        info["points_moved_median"] = float(e.norm(dim=-1).median()) if len(x0) else 0.0
    return pose, (x0 + e).detach().double().numpy(), used, info
