"""Forward + backward time of projection + tile rasteriser on a head-like scene (not a test: prints figures).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_gaussian_raster.py --n 8000 --size 128

Scene: N Gaussians, 3/4 on a unit sphere 4 units in front of the camera, 1/4 inside it, scales about the
spacing of the surface points (sigma ~1.8 px at 128 px), opacities U(0.05, 0.95); the focal puts the sphere's
radius at 45 % of the image side / 2."""

from __future__ import annotations

import argparse
import math
import time

import torch

from lipspace.renderers.gaussian.projection import project_gaussians
from lipspace.renderers.gaussian.rasterise import rasterise


def head_scene(n: int, size: int, frames: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n_surf = 3 * n // 4
    surf = torch.nn.functional.normalize(torch.randn(n_surf, 3, generator=g), dim=-1)
    inner = torch.randn(n - n_surf, 3, generator=g).clamp(-2, 2) * 0.4
    means = torch.cat([surf, inner])
    spacing = math.sqrt(4 * math.pi / n_surf)
    log_scales = math.log(0.5 * spacing) + 0.3 * torch.randn(n, 3, generator=g)  # ~3DGS init: nn distance
    quats = torch.randn(n, 4, generator=g)
    colours = torch.rand(n, 3, generator=g)
    opac = 0.05 + 0.9 * torch.rand(n, generator=g)
    pose = torch.eye(4).repeat(frames, 1, 1)
    pose[:, 2, 3] = 4.0
    f = 0.45 * size * 4.0
    k = torch.tensor([f, f, size / 2, size / 2]).repeat(frames, 1)
    return means, log_scales, quats, colours, opac, pose, k


def step(params, pose, k, size, bg):
    means, log_scales, quats, colours, opac = params
    p = project_gaussians(means, log_scales, quats, pose, k, hw=(size, size))
    out = rasterise(p.means2d, p.cov2d, p.depths, colours, opac, p.visible, (size, size), bg)
    out["rgb"].square().mean().backward()
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    means, log_scales, quats, colours, opac, pose, k = head_scene(args.n, args.size, args.frames)
    params = [t.clone().requires_grad_(True) for t in (means, log_scales, quats, colours, opac)]
    bg = torch.ones(args.frames, args.size, args.size, 3)
    p = step(params, pose, k, args.size, bg)  # warm-up
    times = []
    for _ in range(args.repeats):
        for t in params:
            t.grad = None
        t0 = time.perf_counter()
        step(params, pose, k, args.size, bg)
        times.append(time.perf_counter() - t0)
    vis = p.visible.sum().item()
    times.sort()
    print(f"{args.n} Gaussians ({vis} visible), {args.frames} x {args.size}x{args.size}, "
          f"{torch.get_num_threads()} threads: forward+backward median {times[len(times) // 2] * 1e3:.1f} ms, "
          f"best {times[0] * 1e3:.1f} ms; median radius {p.radii[p.visible].median():.2f} px")


if __name__ == "__main__":
    main()
