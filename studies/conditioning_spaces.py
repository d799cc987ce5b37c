"""The first table of conditioning spaces: each published space (its experiment preset) trained at the same tiny
budget on the synthetic talking head, for several seeds, and scored on the held-out utterances against ground
truth — overall and mouth-region PSNR / SSIM, for every driver the conditioner supports (``oracle_inputs``: the
utterance's tracked inputs; ``audio``: its audio alone). Runs resume / are reused (re-running after a kill
continues), so the table can be grown seed by seed.

    python studies/conditioning_spaces.py --seeds 0 1 2 --presets lipnerf adnerf dfanerf synctalk

Writes <out>/runs.csv (one row per run x eval set x driver) and <out>/table.csv / table.md (mean +- std over seeds).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd

METRICS = ["psnr", "mouth_psnr", "ssim", "baseline_mean_frame_psnr", "baseline_mean_frame_mouth_psnr"]


def run_one(preset: str, seed: int, out: Path, extra: list[str], eval_downscale: int = 1) -> pd.DataFrame:
    from lipspace.config import choices_from_overrides, compose_train
    from lipspace.tasks.evaluate import evaluate
    from lipspace.tasks.train import train

    run_dir = out / f"{preset}_seed{seed}"
    results = run_dir / "eval" / "results.csv"
    if results.exists() and (run_dir / "DONE").exists():
        return pd.read_csv(results)
    overrides = [f"experiment={preset}", "budget=tiny", f"seed={seed}", "study=conditioning_spaces",
                 "logger=csv", "trainer.enable_progress_bar=false", *extra]
    t = time.perf_counter()
    cfg = compose_train(overrides, str(run_dir))
    train(cfg, str(run_dir), choices_from_overrides(overrides))
    t_train = time.perf_counter() - t
    df = evaluate(run_dir, videos=False, downscale=eval_downscale)
    df["preset"], df["train_s"] = preset, t_train
    df.to_csv(results, index=False)
    (run_dir / "DONE").write_text(f"{t_train:.1f}\n")
    return df


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    held = runs[runs["eval_set"].str.startswith("heldout/")]
    per_run = held.groupby(["preset", "conditioner", "driver", "seed"])[[m for m in METRICS if m in held]].mean()
    agg = per_run.groupby(["preset", "conditioner", "driver"]).agg(["mean", "std", "count"])
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    return agg.reset_index()


def markdown(table: pd.DataFrame) -> str:
    lines = ["| preset | conditioner | driver | seeds | PSNR | mouth PSNR | SSIM | mean-frame PSNR |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        f = lambda m, d=2: f"{r[m + '_mean']:.{d}f} ± {r[m + '_std']:.{d}f}"  # noqa: E731
        lines.append(f"| {r.preset} | {r.conditioner} | {r.driver} | {int(r.psnr_count)} | {f('psnr')} | "
                     f"{f('mouth_psnr')} | {f('ssim', 3)} | {r['baseline_mean_frame_psnr_mean']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["lipnerf", "adnerf", "dfanerf", "synctalk"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", default="outputs/studies/conditioning_spaces")
    ap.add_argument("--eval-downscale", type=int, default=1, help="score at 1/N resolution (recorded per row)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (e.g. trainer.max_steps=1200)")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for preset in args.presets:
        for seed in args.seeds:
            print(f"== {preset} seed {seed}", flush=True)
            frames.append(run_one(preset, seed, out, args.overrides, args.eval_downscale))
            pd.concat(frames).to_csv(out / "runs.csv", index=False)
    runs = pd.concat(frames)
    table = summarise(runs)
    table.to_csv(out / "table.csv", index=False)
    md = markdown(table)
    (out / "table.md").write_text(md + "\n")
    print(f"threads={os.environ.get('OMP_NUM_THREADS', 'default')} overrides={args.overrides}")
    print(md)


if __name__ == "__main__":
    main()
