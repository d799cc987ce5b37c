"""Preprocessing speed: frames/s per stage and overall on a real clip (default: the 71 s anchor clip).

Runs `lipspace.prep.prepare` from scratch in a temporary directory (nothing cached) and prints figures;
asserts nothing. Needs the shared assets (LIPSPACE_ASSETS or ../shared/assets); says so and exits 0 without them.
Goal from issue 3: >= 25 frames/s overall on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--video", default=None, help="clip to preprocess (default: assets video/anchor_en_25fps_71s.mp4)")
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--keep", default=None, help="write the dataset here instead of a temporary directory")
    ap.add_argument("options", nargs="*", help="PrepOptions as key=value, e.g. hair_stride=2")
    args = ap.parse_args()
    assets = Path(os.environ.get("LIPSPACE_ASSETS", ROOT.parent / "shared" / "assets"))
    video = Path(args.video) if args.video else assets / "video" / "anchor_en_25fps_71s.mp4"
    if not video.is_file():
        print(f"bench_prep: skipped, {video} not found (set LIPSPACE_ASSETS to the shared assets folder)")
        return
    os.environ.setdefault("LIPSPACE_ASSETS", str(assets))
    from lipspace.cli.prep import parse_args
    from lipspace.prep.pipeline import prepare

    _, _, opts = parse_args([str(video), "out", *args.options])
    opts.max_seconds = args.max_seconds
    opts.progress = False
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep) if args.keep else Path(tmp) / "ds"
        t = time.perf_counter()
        res = prepare(video, out, opts)
        wall = time.perf_counter() - t
    n = res.n_frames
    print(f"\n== preprocessing {video.name}: {n} frames ({n / 25:.1f} s), size {opts.size}, "
          f"cpus={os.cpu_count()} ==")
    for name, s in res.seconds.items():
        print(f"{name:<11} {s:7.2f} s  {n / s if s > 0 else float('inf'):8.1f} frames/s")
    print(f"{'overall':<11} {wall:7.2f} s  {n / wall:8.1f} frames/s  (goal >= 25 frames/s on 2 cores)")
    head = res.summary.get("head", {})
    print("head fit:", {k: v for k, v in head.items() if not isinstance(v, (list, dict))})
    sys.stdout.flush()


if __name__ == "__main__":
    main()
