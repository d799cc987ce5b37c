"""SSP-NeRF's structured 3-D codes: the CPU neighbour search by k-d tree (scipy) against the exhaustive search it
replaced (all anchor distances + top-k, still the path on a GPU), side by side in one run, interleaved. Times the
codes' forward + backward for a training step's sample points (default 1024 rays x 64 samples) on this machine's
CPU threads. Prints ms per call and the ratio; asserts nothing (tests/renderers/test_deform.py checks both paths
find the same neighbours).

    python benchmarks/bench_structured_codes.py [--tracks data/real/obama/tracks.npz] [--points 65536] [--reps 7]

Anchors: the mean of a clip's ``face_points`` track with ``--tracks`` (273 points on the synthetic head, 512 on a
prepared real clip), otherwise 512 random points; sample points uniform in the anchors' box grown by half its size
(rays cross the whole head box, most samples far from the face).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from lipspace.renderers.structured_codes import StructuredCodes, exhaustive_nearest


class ExhaustiveCodes(StructuredCodes):
    """The search before the k-d tree: all distances and a top-k, on any device."""

    @torch.no_grad()
    def nearest(self, pts: torch.Tensor, k: int) -> torch.Tensor:
        return exhaustive_nearest(pts, self.anchors, k)


def _anchors(tracks: str | None) -> torch.Tensor:
    if tracks:
        with np.load(tracks) as t:
            return torch.as_tensor(t["face_points"].mean(0), dtype=torch.float32)
    return torch.randn(512, 3, generator=torch.Generator().manual_seed(0)) * 0.05


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracks", help="a dataset's tracks.npz (its face_points track gives the anchors)")
    ap.add_argument("--points", type=int, default=65536)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--neighbours", type=int, default=8)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    anchors = _anchors(args.tracks)
    lo, hi = anchors.min(0).values, anchors.max(0).values
    g = torch.Generator().manual_seed(1)
    pts = lo - 0.5 * (hi - lo) + torch.rand(args.points, 3, generator=g) * 2 * (hi - lo)
    models = {}
    for name, cls in (("k-d tree (now)", StructuredCodes), ("exhaustive (before)", ExhaustiveCodes)):
        m = cls(dim=args.dim, neighbours=args.neighbours)
        m.set_anchors(anchors, generator=torch.Generator().manual_seed(0))
        models[name] = m
    times: dict[str, list[float]] = {name: [] for name in models}
    for rep in range(args.reps + 1):  # the first round warms up and is dropped
        for name, m in models.items():
            x = pts.clone().requires_grad_(True)
            t0 = time.perf_counter()
            m(x).square().sum().backward()
            if rep:
                times[name].append(time.perf_counter() - t0)
            m.zero_grad(set_to_none=True)
    print(f"StructuredCodes forward + backward, {args.points} points, {len(anchors)} anchors, k={args.neighbours}, "
          f"dim={args.dim}; torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), {os.cpu_count()} CPUs; median of "
          f"{args.reps} interleaved reps")
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    for name, ms in med.items():
        print(f"  {name:22s} {ms:8.1f} ms")
    print(f"  ratio exhaustive / k-d tree: {med['exhaustive (before)'] / med['k-d tree (now)']:.2f}x")


if __name__ == "__main__":
    main()
