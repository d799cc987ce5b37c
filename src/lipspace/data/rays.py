"""Camera rays in canonical head space from per-frame head pose + intrinsics, and near/far from the head bounds."""

from __future__ import annotations

import torch


def camera_rays(pose: torch.Tensor, intrinsics: torch.Tensor, u: torch.Tensor, v: torch.Tensor):
    """Rays through pixel centres (u + 0.5, v + 0.5) of frames with head->camera ``pose`` [F,4,4].

    ``u``, ``v`` are [F,R] integer pixel coordinates; returns origins and unit directions [F,R,3] in head space
    (the camera centre in head space is -R^T t, a camera direction K^-1 [x, y, 1] maps by R^T).
    """
    fx, fy, cx, cy = intrinsics.unbind(-1)
    x = (u.float() + 0.5 - cx) / fx
    y = (v.float() + 0.5 - cy) / fy
    dirs_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [F,R,3]
    rot = pose[:, :3, :3]
    trans = pose[:, :3, 3]
    dirs = torch.einsum("fji,frj->fri", rot, dirs_cam)  # R^T d
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origin = -torch.einsum("fji,fj->fi", rot, trans)  # -R^T t
    return origin[:, None, :].expand_as(dirs), dirs


def sphere_near_far(rays_o: torch.Tensor, rays_d: torch.Tensor, center: torch.Tensor, radius: float):
    """Entry/exit distances of unit rays through the bounds sphere; a ray that misses gets near == far (renders
    the background). Returns (near, far, hit)."""
    oc = rays_o - center
    b = (oc * rays_d).sum(-1)
    c = (oc * oc).sum(-1) - radius * radius
    disc = b * b - c
    hit = disc > 0
    root = torch.sqrt(disc.clamp_min(0.0))
    near = (-b - root).clamp_min(1e-3)
    far = (-b + root).clamp_min(1e-3)
    far = torch.where(hit, far, near)
    return near, far, hit & (far > near)


def full_frame_pixels(height: int, width: int, downscale: int = 1):
    """Pixel grid (u, v) of a frame at 1/downscale resolution, returned in full-resolution pixel coordinates
    of the sampled pixel centres (so rays stay consistent with the intrinsics)."""
    h, w = height // downscale, width // downscale
    vv, uu = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    # centre of each downscale x downscale block, expressed so that u + 0.5 is that centre
    off = (downscale - 1) / 2.0
    return (uu.reshape(-1) * downscale + off), (vv.reshape(-1) * downscale + off), (h, w)
