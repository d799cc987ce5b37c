"""Initial Gaussians of a clip: points (face surface, sphere fill, mouth interior), their colours from the frames,
and 3DGS's initial scales (mean distance to the 3 nearest neighbours).

Points (:func:`init_points`):
- surface: the mean over frames of ``clip.face_points`` [N,P,3] (head-space points of the fitted face model, first the
  68 iBUG landmarks) when the clip has them, each repeated with a jitter of ~1/4 of the point spacing up to
  ``n_surface``; without them, ``n_surface`` uniform points in the head_bounds sphere;
- fill: ``n_fill`` uniform points in the head_bounds sphere (``clip.sphere("head_bounds")``; "bounds" when absent);
- mouth interior (TalkingGaussian's inside-mouth branch: teeth, tongue, the dark cavity): ``n_mouth`` points in the
  cavity behind the inner lips. With face points, the inner-lip points (landmarks 60-67) of every frame are taken
  together (so the widest opening counts): a point is L + u (P - L) + t d n, with L the inner lips' mean, P a random
  inner-lip point of a random frame, u, t ~ U(0, 1), n the unit vector from L towards the sphere's centre and
  d = ``mouth_depth`` x the sphere's radius. Without face points (a rough guess): the cavity box is placed below the
  sphere's centre towards the mean camera (0.7 r towards the camera, 0.35 r down in the camera's y), 0.4 r wide,
  0.15 r high, ``mouth_depth`` r deep.
The mouth points are flagged (``is_mouth``); every other point belongs to the face branch.
"""

from __future__ import annotations

import math

import torch

INNER_LIPS = slice(60, 68)  # iBUG-68 inner-lip landmarks (the first 68 face points)


def _ball(n: int, center: torch.Tensor, radius: float, g: torch.Generator) -> torch.Tensor:
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return center + d * radius * torch.rand(n, 1, generator=g) ** (1 / 3)


def _camera_axes(pose: torch.Tensor, center: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Head-space unit vectors from ``center`` towards the mean camera, and of the mean camera's y (down)."""
    rot, trans = pose[:, :3, :3], pose[:, :3, 3]
    cam = -(rot.transpose(1, 2) @ trans[..., None]).squeeze(-1).mean(0)  # camera centres in head space
    toward = torch.nn.functional.normalize(cam - center, dim=0)
    down = rot[:, 1, :].mean(0)  # R^T e_y
    down = torch.nn.functional.normalize(down - (down @ toward) * toward, dim=0)
    return toward, down


def mouth_points(clip, n: int, mouth_depth: float, g: torch.Generator) -> torch.Tensor:
    """``n`` head-space points in the mouth cavity (see the module docstring)."""
    center, radius = clip.sphere("head_bounds")
    fp = getattr(clip, "face_points", None)
    inward_depth = mouth_depth * radius
    if fp is not None and fp.shape[1] >= 68:
        lips = fp[:, INNER_LIPS].reshape(-1, 3).float()
        lip_c = lips.mean(0)
        inward = torch.nn.functional.normalize(center - lip_c, dim=0)
        p = lips[torch.randint(len(lips), (n,), generator=g)]
        u, t = torch.rand(n, 1, generator=g), torch.rand(n, 1, generator=g)
        return lip_c + u * (p - lip_c) + t * inward_depth * inward
    toward, down = _camera_axes(clip.pose, center)
    side = torch.nn.functional.normalize(torch.linalg.cross(down, toward), dim=0)
    lip_c = center + 0.7 * radius * toward + 0.35 * radius * down
    r = torch.rand(n, 3, generator=g)
    return (lip_c + (r[:, :1] - 0.5) * 0.4 * radius * side + (r[:, 1:2] - 0.5) * 0.15 * radius * down
            - r[:, 2:] * inward_depth * toward)


def init_points(clip, n_surface: int = 2000, n_fill: int = 1000, n_mouth: int = 300, mouth_depth: float = 0.3,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial Gaussian centres [M,3] (head space) and their inside-mouth flags [M] (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    center, radius = clip.sphere("head_bounds")
    fp = getattr(clip, "face_points", None)
    if fp is not None and n_surface > 0:
        base = fp.float().mean(0)
        spacing = _nn_distance(base).median()
        reps = base.repeat(math.ceil(n_surface / len(base)), 1)[:max(n_surface, len(base))]
        jitter = torch.randn(reps.shape, generator=g) * 0.25 * spacing
        jitter[:len(base)] = 0  # the face points themselves, exactly
        surface = reps + jitter
    else:
        surface = _ball(n_surface, center, radius, g)
    fill = _ball(n_fill, center, radius, g)
    mouth = mouth_points(clip, n_mouth, mouth_depth, g)
    pts = torch.cat([surface, fill, mouth])
    is_mouth = torch.zeros(len(pts), dtype=torch.bool)
    is_mouth[len(surface) + len(fill):] = True
    return pts, is_mouth


def _nn_distance(pts: torch.Tensor, k: int = 3, chunk: int = 2048) -> torch.Tensor:
    """Mean distance of each point to its ``k`` nearest neighbours [M] (chunked: memory chunk x M)."""
    out = []
    for s in range(0, len(pts), chunk):
        d = torch.cdist(pts[s:s + chunk], pts)
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        out.append(d.topk(min(k, len(pts) - 1), largest=False).values.mean(1))
    return torch.cat(out)


def init_log_scales(pts: torch.Tensor) -> torch.Tensor:
    """3DGS: isotropic scale = mean distance to the 3 nearest neighbours -> log-scales [M,3]."""
    d = _nn_distance(pts).clamp_min(1e-7)
    return torch.log(d)[:, None].repeat(1, 3)


@torch.no_grad()
def init_colours(clip, pts: torch.Tensor, n_views: int = 8) -> torch.Tensor:
    """Each point's mean pixel colour [M,3] over ``n_views`` evenly spaced frames where it projects into the
    image (points outside every view: 0.5 grey). The nearest pixel, no visibility test: hidden points take the
    colour of what is in front, which training corrects."""
    n = clip.n_frames
    idx = torch.linspace(0, n - 1, min(n_views, n)).round().long().unique()
    h, w = clip.hw
    fx, fy, cx, cy = clip.intrinsics.reshape(-1)[:4].tolist()
    total, count = torch.zeros(len(pts), 3), torch.zeros(len(pts), 1)
    for i in idx.tolist():
        pose = clip.pose[i]
        p = pts @ pose[:3, :3].T + pose[:3, 3]
        z = p[:, 2].clamp_min(1e-6)
        u = torch.floor(fx * p[:, 0] / z + cx).long()
        v = torch.floor(fy * p[:, 1] / z + cy).long()
        ok = (p[:, 2] > 1e-6) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        frame = torch.as_tensor(clip.frames[i]).float() / 255.0  # [H,W,3]
        total[ok] += frame[v[ok], u[ok]]
        count[ok] += 1
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, 0.5))
