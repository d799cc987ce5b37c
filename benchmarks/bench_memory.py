"""Peak memory of preprocessing and training on long clips: peak RSS and frames/s of `lipspace-prep`, peak RSS and
ray-sampling rays/s of training, on the 71 s anchor clip and on a >= 5-minute clip made by looping it.

Each measurement runs in its own subprocess (its peak RSS is that child's VmHWM, nothing else counted).
``--against REV`` measures a git revision side by side (a temporary worktree of REV on PYTHONPATH), one clip after
the other, so before / after figures come from one run on one machine. Prints figures; asserts nothing. Needs the
shared assets (LIPSPACE_ASSETS or ../shared/assets) and ffmpeg for the long clip; says so and exits 0 without them.
Goal (issue 17): <= 3 GB peak RSS for prep and for training at any clip length, prep >= 25 frames/s, training
rays/s within 5 % of the previous version's.

  python benchmarks/bench_memory.py [--size 512] [--long-seconds 300] [--steps 100] [--against REV] [--skip-long-old]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PREP = """
import json, sys, time
from lipspace.cli.prep import parse_args
from lipspace.prep.pipeline import prepare
video, out, size, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
_, _, opts = parse_args([video, out, f"size={size}", "overlays=0", "progress=false"])
opts.max_seconds = seconds
t = time.perf_counter()
res = prepare(video, out, opts)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"frames": res.n_frames, "seconds": time.perf_counter() - t, "peak_kb": int(hwm)}))
"""

TRAIN = """
import json, sys, time
import torch
from lipspace.{config} import compose_train
from lipspace.data.clip import load_clip
from lipspace.data.sampling import RayBatches
from lipspace.tasks.train import train
ds, run, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
# ray sampling alone (what a frame store changes): 4096 rays from 8 frames per batch, 200 batches
clip = load_clip(ds, gt_background_classes=[9])
rb = RayBatches(clip, torch.arange(clip.n_frames), {{"expr": 53}}, 4096, 8, 0.5, 10**6, 0)
g = torch.Generator().manual_seed(0)
rb.sample(g)
t = time.perf_counter()
for _ in range(200):
    rb.sample(g)
sample_rays_s = 200 * 4096 / (time.perf_counter() - t)
del rb, clip
# a real training run: AD-NeRF's audio space on the tri-plane (no pre-training stage), budget tiny
overrides = ["data=dir", f"data.root={{ds}}", "experiment=adnerf", "renderer=triplane", "budget=tiny",
             "logger=csv", f"trainer.max_steps={{steps}}", "trainer.enable_progress_bar=false"]
cfg = compose_train(overrides, run)
t = time.perf_counter()
train(cfg, run)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"sample_rays_s": sample_rays_s, "train_s": time.perf_counter() - t, "steps": steps,
                  "peak_kb": int(hwm)}}))
"""


def run_child(code: str, args: list[str], src: Path) -> dict:
    """Run ``code`` in a fresh interpreter with ``src`` first on PYTHONPATH: its JSON line, with the child's own
    peak RSS in GB (VmHWM of /proc/self/status, read by the child: Linux carries ru_maxrss over exec from the
    parent, VmHWM starts with the new process image)."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["peak_rss_gb"] = out.pop("peak_kb") / 2**20
    return out


def long_clip(video: Path, seconds: float, work: Path) -> Path | None:
    """``video`` looped (stream copy, no re-encode) to at least ``seconds``."""
    if shutil.which("ffmpeg") is None:
        return None
    out = work / f"{video.stem}_looped_{int(seconds)}s.mp4"
    if not out.is_file():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(video), "-t", str(seconds),
                        "-c", "copy", str(out)], check=True)
    return out


def worktree(rev: str, work: Path) -> Path:
    path = work / f"rev_{rev}"
    if not path.is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True,
                       capture_output=True)
    return path / "src"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--clip-seconds", type=float, default=71.0, help="seconds of the anchor clip (71: all of it)")
    ap.add_argument("--long-seconds", type=float, default=300.0)
    ap.add_argument("--steps", type=int, default=100, help="training steps per measurement")
    ap.add_argument("--against", default=None, help="a git revision measured side by side (before / after)")
    ap.add_argument("--skip-long-old", action="store_true",
                    help="do not run --against on the long clip (the old code may need more memory than the machine)")
    ap.add_argument("--work", default=str(ROOT / ".pytest_cache" / "bench_memory"))
    args = ap.parse_args()
    assets = Path(os.environ.get("LIPSPACE_ASSETS", ROOT.parent / "shared" / "assets"))
    anchor = assets / "video" / "anchor_en_25fps_71s.mp4"
    if not anchor.is_file():
        print(f"bench_memory: skipped, {anchor} not found (set LIPSPACE_ASSETS to the shared assets folder)")
        return
    os.environ.setdefault("LIPSPACE_ASSETS", str(assets))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    clips = [(f"anchor {args.clip_seconds:.0f} s", anchor, args.clip_seconds)]
    looped = long_clip(anchor, args.long_seconds, work)
    if looped is None:
        print("bench_memory: no ffmpeg, the long clip is skipped")
    else:
        clips.append((f"anchor looped {args.long_seconds:.0f} s", looped, args.long_seconds))
    versions = [("current", ROOT / "src", "utils.config")]
    if args.against:
        old = worktree(args.against, work)
        config = "utils.config" if (old / "lipspace" / "utils" / "config.py").is_file() else "config"
        versions.insert(0, (args.against, old, config))
    print(f"== bench_memory: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"{time.strftime('%Y-%m-%d')}, size {args.size}, {args.steps} training steps ==")
    rows = []
    for label, video, seconds in clips:
        for version, src, config in versions:
            if version != "current" and args.skip_long_old and video == looped:
                continue
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                ds, run = Path(tmp) / "ds", Path(tmp) / "run"
                prep = run_child(PREP, [str(video), str(ds), str(args.size), str(seconds)], src)
                trn = run_child(TRAIN.format(config=config), [str(ds), str(run), str(args.steps)], src) \
                    if "error" not in prep else {"error": "no dataset"}
            row = {"clip": label, "version": version, "frames": prep.get("frames"),
                   "prep_peak_gb": prep.get("peak_rss_gb"), "prep_fps": prep["frames"] / prep["seconds"]
                   if "frames" in prep else None, "train_peak_gb": trn.get("peak_rss_gb"),
                   "sample_rays_s": trn.get("sample_rays_s"), "error": prep.get("error") or trn.get("error")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'clip':<24} {'version':<10} {'frames':>6} {'prep GB':>8} {'prep fr/s':>9} {'train GB':>8} "
          f"{'sample rays/s':>13}")
    for r in rows:
        def f(v, fmt):
            return format(v, fmt) if isinstance(v, (int, float)) else "-"
        print(f"{r['clip']:<24} {r['version']:<10} {f(r['frames'], 'd'):>6} {f(r['prep_peak_gb'], '.2f'):>8} "
              f"{f(r['prep_fps'], '.1f'):>9} {f(r['train_peak_gb'], '.2f'):>8} {f(r['sample_rays_s'], ',.0f'):>13}"
              + (f"  error: {r['error']}" if r["error"] else ""))
    print("goal: <= 3 GB peak RSS for prep and training at any clip length; prep >= 25 frames/s")


if __name__ == "__main__":
    main()
