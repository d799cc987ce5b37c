"""Drawing pixels for ray batches: uniformly among the pixels of a box that pass a test (rejection sampling), and the
image-space box of a sphere's projection."""

from __future__ import annotations

import torch


def draw_rejection(boxes, accept, n: int, g: torch.Generator, w: int):
    """Draw [F, n] flat pixel indices uniformly from the pixels of each frame's box (x0, y0, x1, y1 tensors [F])
    that ``accept(candidates [F, M]) -> bool [F, M]``. Returns (indices, ok [F]); a frame with fewer accepted
    candidates than n reuses them cyclically, one with none (ok False) gets unfiltered box pixels."""
    x0, y0, x1, y1 = (b.float() for b in boxes)
    nf = len(x0)
    m = 3 * n + 64
    r = torch.rand(nf, m, 2, generator=g)
    u = (x0[:, None] + r[..., 0] * (x1 - x0)[:, None]).floor().clamp(x0[:, None], (x1 - 1).clamp_min(0)[:, None])
    v = (y0[:, None] + r[..., 1] * (y1 - y0)[:, None]).floor().clamp(y0[:, None], (y1 - 1).clamp_min(0)[:, None])
    cand = (v * w + u).long()
    ok = accept(cand)
    k = ok.sum(1)
    order = torch.argsort((~ok).to(torch.int8), dim=1, stable=True)  # accepted first, in draw order
    cols = torch.arange(n)[None, :] % k.clamp_min(1)[:, None]
    out = torch.gather(cand, 1, torch.gather(order, 1, cols))
    return torch.where(k[:, None] > 0, out, cand[:, :n]), k > 0


def sphere_boxes(pose: torch.Tensor, intrinsics: torch.Tensor, center: torch.Tensor, radius: float, h: int, w: int):
    """Image-space boxes (x0, y0, x1, y1) [F] that contain the projection of the bounds sphere (whole frame when
    the camera is inside or too close to it)."""
    fx, fy, cx, cy = intrinsics.unbind(-1)
    c = torch.einsum("fij,j->fi", pose[:, :3, :3], center) + pose[:, :3, 3]  # sphere centre in camera space
    z = c[:, 2]
    ok = z > radius * 1.05
    zs = torch.where(ok, z, torch.ones_like(z))
    # tangent half-angle bound: r / sqrt(z^2 - r^2) in normalised coordinates, plus the centre's offset
    half = radius / torch.sqrt((zs * zs - radius * radius).clamp_min(1e-6))
    xc, yc = c[:, 0] / zs, c[:, 1] / zs
    grow = torch.sqrt(1 + xc * xc + yc * yc)  # off-axis spheres project to ellipses stretched by up to this
    x0 = torch.where(ok, cx + fx * (xc - half * grow), torch.zeros_like(z)).clamp(0, w)
    x1 = torch.where(ok, cx + fx * (xc + half * grow) + 1, torch.full_like(z, w)).clamp(0, w)
    y0 = torch.where(ok, cy + fy * (yc - half * grow), torch.zeros_like(z)).clamp(0, h)
    y1 = torch.where(ok, cy + fy * (yc + half * grow) + 1, torch.full_like(z, h)).clamp(0, h)
    empty = (x1 <= x0) | (y1 <= y0)
    return (torch.where(empty, 0, x0), torch.where(empty, 0, y0), torch.where(empty, w, x1),
            torch.where(empty, h, y1))
