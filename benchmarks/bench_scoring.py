"""Time to score one 4 s dubbed track (and one ground-truth row) at 128², per metric group.

Input: 100 frames (4 s at 25 fps) of 128² talking-head frames with their 68-point landmarks: the first 4 s of the
real anchor clip prepared by lipspace-prep when the shared assets are present (cached in .pytest_cache/real_clips/
like the real-clip tests), else the synthetic head (lipspace.data.synthetic). The dub: ``audio/dub_de_1.wav`` of the
assets (else another synthetic utterance), written as 16 kHz mono as the eval task does. The local sync expert: a
RANDOMLY INITIALISED AVEncoder of the size lipspace.av.auto trains (ave.width=16) saved with lipspace.av.sync.save:
timing only, its scores mean nothing.

Rows, as ``lipspace.tasks.evaluate`` makes them: ``Scorer(...)`` (once per evaluation), a dub row
``Scorer.sequence(frames, None, lmk68, dub)`` cold (first sequence of the process) and warm (the next one), and a
ground-truth row (per-frame PSNR/SSIM/L1 + LPIPS as the eval task computes them: ``Scorer.frames`` in batches, or
``Scorer.frame`` frame by frame in code without it; then ``Scorer.sequence`` with the ground truth of a sequence not
analysed before). Groups: face analysis (MediaPipe), lip motion, local LSE, official LSE attempt
(no SyncNet/S3FD weights here: NaN + status; in the new code the mp4 it would need is part of it, in the old code
that mp4 is in the unattributed rest), per-frame metrics (PSNR/SSIM/L1 + LPIPS), and the unattributed rest (audio
cut, glue, minus the time saved where the new code runs parts in parallel: can be negative). ``--fresh-numba`` gives
each process an empty numba cache, as on a fresh environment (the old code's librosa compiled for ~20 s there).

``--against REV`` runs the same measurement on the ``src/`` of git revision REV and on the working tree, alternately
in fresh processes (``--rounds`` each), and prints medians and new/old ratios side by side, plus whether the metric
values agree. Prints figures; asserts nothing. Goal (issue): one 4 s dub at 128² scored in <= 15 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_FRAMES, SIZE, FPS = 100, 128, 25.0
GROUPS = {"_face": "face analysis", "_lipmotion": "lip motion", "_lse_local": "local LSE",
          "_lse_official": "official LSE attempt", "frame": "per-frame metrics (LPIPS)",
          "frames": "per-frame metrics (LPIPS)"}
UNATTRIBUTED = "unattributed (glue - overlap)"


def assets_dir() -> Path | None:
    p = Path(os.environ.get("LIPSPACE_ASSETS", ROOT.parent / "shared" / "assets"))
    ok = (p / "video" / "anchor_en_25fps_71s.mp4").is_file() and (p / "models" / "face_landmarker.task").is_file()
    return p if ok else None


def build_inputs(tmp: Path) -> dict:
    """Frames, ground truth, landmarks, clip audio and dub (16 kHz wav) and a random-init AVE checkpoint."""
    import numpy as np
    import torch

    from lipspace.audio.inputs import load_driving_audio
    from lipspace.av.sync import AVEncoder, save
    from lipspace.data.clip import load_clip

    assets = assets_dir()
    if assets is not None:
        from lipspace.prep.options import PrepOptions
        from lipspace.prep.pipeline import prepare

        os.environ.setdefault("LIPSPACE_ASSETS", str(assets))
        root = ROOT / ".pytest_cache" / "real_clips" / f"anchor_{SIZE}px_{N_FRAMES / FPS}s"
        prepare(assets / "video" / "anchor_en_25fps_71s.mp4", root,
                PrepOptions(size=SIZE, max_seconds=N_FRAMES / FPS, audio_offset_s=0.0, overlays=0, progress=False))
        dub_src, label = assets / "audio" / "dub_de_1.wav", "real anchor clip (first 4 s), dub audio/dub_de_1.wav"
    else:
        from lipspace.data.synthetic.generate import generate_synthetic

        root = generate_synthetic(tmp / "synthetic", seconds=N_FRAMES / FPS, resolution=SIZE, heldout_utterances=1)
        dub_src, label = root / "heldout" / "utt_00" / "audio.wav", "synthetic head (no assets), synthetic dub"
    clip = load_clip(root)
    n = min(N_FRAMES, clip.n_frames)
    gts = clip.frames[:n].numpy()
    torch.manual_seed(0)
    # a stand-in "render": the ground truth blurred and noised (deterministic), as a NeRF render differs from it
    import cv2

    rng = np.random.default_rng(0)
    preds = np.stack([cv2.GaussianBlur(f, (3, 3), 0) for f in gts]).astype(np.int16)
    preds = np.clip(preds + rng.integers(-6, 7, preds.shape), 0, 255).astype(np.uint8)
    dub = load_driving_audio(dub_src).write(tmp / "dub.wav")
    ave = save(AVEncoder(width=16), tmp / "ave_random.pt",
               {"weights": "RANDOM INIT (benchmarks/bench_scoring.py): timing only, scores meaningless"})
    return {"gts": gts, "preds": preds, "lmk68": np.asarray(clip.tracks["lmk68"][:n], np.float64),
            "clip_audio": clip.audio_path, "dub": dub, "ave": ave, "label": f"{label}, {n} frames of {SIZE}²",
            "clip_root": str(clip.root)}


class GroupTimer:
    """Wraps the Scorer's per-group methods on one instance; ``take()`` returns and resets the seconds per group."""

    def __init__(self, scorer):
        self.t = dict.fromkeys(GROUPS.values(), 0.0)
        for name, group in GROUPS.items():
            if hasattr(scorer, name):
                setattr(scorer, name, self._wrap(getattr(scorer, name), group))

    def _wrap(self, fn, group):
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.t[group] += time.perf_counter() - t
        return timed

    def take(self) -> dict:
        out, self.t = self.t, dict.fromkeys(GROUPS.values(), 0.0)
        return out


def _timed(timer: GroupTimer, fn) -> tuple[dict, dict]:
    timer.take()
    t = time.perf_counter()
    res = fn()
    total = time.perf_counter() - t
    groups = timer.take()
    # the audio cut, temporary files, (old code) the mp4 for the official LSE, minus the time saved where parts
    # run in parallel (new code: face analysis in threads beside the sync metrics): may be negative
    groups[UNATTRIBUTED] = total - sum(groups.values())
    groups["total"] = total
    return groups, res


def measure(inp: dict) -> dict:
    """One process's figures: Scorer init, dub row cold and warm, ground-truth row; and the metric values."""
    import torch

    from lipspace.eval.scoring import EvalSettings, Scorer

    t = time.perf_counter()
    scorer = Scorer(EvalSettings(ave_weights=str(inp["ave"])))
    init = time.perf_counter() - t
    timer = GroupTimer(scorer)
    preds, gts, lmk, dub = inp["preds"], inp["gts"], inp["lmk68"], inp["dub"]
    rows, values = {}, {}
    for name in ("dub (cold)", "dub (warm)"):
        rows[name], values[name] = _timed(timer, lambda: scorer.sequence(preds, None, lmk, dub, 0.0, fps=FPS))

    def gt_row():  # as lipspace.model.sequence_scoring.score_sequence: per-frame metrics, then the sequence
        p, g = torch.from_numpy(preds).float() / 255, torch.from_numpy(gts).float() / 255
        if hasattr(scorer, "frames"):  # batched (new)
            per_frame = scorer.frames(p, g, list(lmk), 1.0)
        else:
            per_frame = [scorer.frame(a, b, lm, 1.0) for a, b, lm in zip(p, g, lmk)]
        out = {k: sum(r[k] for r in per_frame) / len(per_frame) for k in per_frame[0]}
        out.update(scorer.sequence(preds, gts, lmk, inp["clip_audio"], 0.0, fps=FPS,
                                   gt_key=(inp["clip_root"], tuple(range(len(gts))), 1)))
        return out

    rows["ground truth row"], values["ground truth row"] = _timed(timer, gt_row)
    import lipspace

    return {"init": init, "rows": rows, "values": values, "lipspace": str(Path(lipspace.__file__).parent),
            "threads": torch.get_num_threads()}


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if hasattr(x, "item"):
        return _json_safe(x.item())
    return x


def worker(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_scoring_") as tmp:
        inp = build_inputs(Path(tmp))
        res = measure(inp)
        res["label"] = inp["label"]
    out.write_text(json.dumps(_json_safe(res)))


def _run_worker(src: Path | None, tmp: Path, tag: str, fresh_numba: bool) -> dict:
    env = dict(os.environ)
    if fresh_numba:  # an empty numba cache: what librosa's first use costs on a fresh environment
        env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"numba_{tag}_", dir=tmp)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = tmp / f"{tag}.json"
    subprocess.run([sys.executable, __file__, "--worker", str(out)], env=env, check=True)
    return json.loads(out.read_text())


def _table(results: dict[str, list[dict]], fresh: bool) -> None:
    names = list(results)
    first = results[names[0]][0]
    print(f"\n== scoring at {SIZE}²: {first['label']} ==")
    print(f"machine: {os.cpu_count()} CPU cores visible, torch threads {first['threads']}, "
          f"{time.strftime('%Y-%m-%d')}; medians over {len(results[names[0]])} process(es) each, seconds"
          f"{'; empty numba cache per process' if fresh else ''}")
    head = "".join(f"{n:>12}" for n in names) + ("   ratio" if len(names) == 2 else "")
    med = statistics.median
    init = [med([r["init"] for r in results[n]]) for n in names]
    print(f"{'Scorer() init':<34}{head}\n{'':<34}" + "".join(f"{v:12.2f}" for v in init)
          + (f"  {init[1] / init[0]:6.2f}x" if len(names) == 2 and init[0] else ""))
    for row in first["rows"]:
        print(f"-- {row}")
        for group in first["rows"][row]:
            vals = [med([r["rows"][row].get(group, math.nan) for r in results[n]]) for n in names]
            ratio = f"  {vals[1] / vals[0]:6.2f}x" if len(names) == 2 and vals[0] > 1e-3 else ""
            print(f"   {group:<31}" + "".join(f"{v:12.2f}" for v in vals) + ratio)


def _statuses(res: dict) -> None:
    """What each metric group did (a group that could not run is fast for that reason, not by speed)."""
    print("statuses (last version, first process):")
    for row, values in res["values"].items():
        for k in ("face_status", "lipmotion_status", "lse_local_status", "lse_status", "lpips_status"):
            if k in values:
                print(f"   {row} / {k}: {str(values[k])[:110]}")


def _compare_values(a: dict, b: dict) -> None:
    worst = []
    for row in a["values"]:
        for k, va in a["values"][row].items():
            vb = b["values"][row].get(k, "<missing>")
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
                d = abs(va - vb)
                if d > 0:
                    worst.append((d, row, k, va, vb))
            elif va != vb and not k.endswith("_model"):
                worst.append((math.inf, row, k, va, vb))
    extra = [(row, k) for row in b["values"] for k in b["values"][row] if k not in a["values"][row]]
    if not worst and not extra:
        print("metric values: identical (old vs new, every column of every row)")
        return
    print("metric values that differ (old vs new):")
    for d, row, k, va, vb in sorted(worst, key=lambda x: -x[0])[:12]:
        print(f"   {row} / {k}: {str(va)[:70]} vs {str(vb)[:70]} (|diff| {d:.3g})")
    for row, k in extra:
        print(f"   {row} / {k}: new column")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", metavar="REV", help="also time src/ of this git revision, interleaved")
    ap.add_argument("--rounds", type=int, default=2, help="processes per code version (default 2)")
    ap.add_argument("--fresh-numba", action="store_true",
                    help="give every process an empty numba cache (a fresh environment: librosa's JIT compiles)")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)
    with tempfile.TemporaryDirectory(prefix="bench_scoring_") as tmp:
        tmp = Path(tmp)
        versions: dict[str, Path | None] = {}
        if args.against:
            rev = subprocess.run(["git", "rev-parse", "--short", args.against], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout.strip()
            arch = subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tmp)], input=arch, check=True)
            versions[f"old {rev}"] = tmp / "src"
        versions["new (tree)" if args.against else "tree"] = ROOT / "src"
        results: dict[str, list[dict]] = {n: [] for n in versions}
        for i in range(max(1, args.rounds)):
            for n, src in (versions.items() if i % 2 == 0 else reversed(versions.items())):
                print(f"[bench_scoring] round {i + 1}: {n}", flush=True)
                results[n].append(_run_worker(src, tmp, f"{n.split()[0]}_{i}", args.fresh_numba))
    _table(results, args.fresh_numba)
    _statuses(results[list(versions)[-1]][0])
    if len(versions) == 2:
        a, b = (results[n][0] for n in versions)
        _compare_values(a, b)
    totals = {n: statistics.median(r["rows"]["dub (cold)"]["total"] + r["init"] for r in rs)
              for n, rs in results.items()}
    print("one dub, cold (Scorer init + first sequence): "
          + ", ".join(f"{n} {v:.1f} s" for n, v in totals.items()) + "  (goal <= 15 s on 2 CPU cores)")


if __name__ == "__main__":
    main()
