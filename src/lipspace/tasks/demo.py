"""The demo: synthesize a talking head, train LipNeRF (expression + MLP NeRF), evaluate, render; print where
everything is. Re-running it reuses the dataset and resumes / reuses the trained checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

from hydra.utils import instantiate

from lipspace.config import check_config, choices_from_overrides, compose_train

# CPU-sized so that the whole demo stays within ~10 minutes on 2 cores (see README for the measured time)
DEMO_OVERRIDES = ["experiment=lipnerf", "budget=tiny", "study=demo", "tags=[demo,lipnerf]"]


def run_demo(extra_overrides: list[str] | None = None, output_dir: str = "outputs/demo") -> dict:
    from lipspace.tasks.evaluate import evaluate
    from lipspace.tasks.report import results_table
    from lipspace.tasks.train import train

    t0 = time.perf_counter()
    overrides = DEMO_OVERRIDES + list(extra_overrides or [])
    cfg = compose_train(overrides, output_dir)
    check_config(cfg)  # before minutes of synthesis, not after
    timings = {}
    t = time.perf_counter()
    dm = instantiate(cfg.data)
    dm.load()  # generates the synthetic clip on first use (cached afterwards)
    timings["dataset"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics = train(cfg, output_dir, choices_from_overrides(overrides))
    timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    # one held-out utterance, driven twice: by its tracked expressions (oracle) and by its audio alone
    df = evaluate(output_dir, videos=True, max_heldout=1)
    timings["eval+render"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    out = Path(output_dir).resolve()
    print("\n" + "=" * 100)
    print(results_table(df))
    print("-" * 100)
    print("driver=oracle_inputs: the held-out utterance driven by its ground-truth expression track (an upper bound);")
    print("driver=audio: the same utterance driven by its audio alone (audio -> expression regressor, smoothed).")
    print(f"dataset      {dm.clip.root}")
    print(f"run          {out}")
    print(f"checkpoint   {out / 'checkpoints' / 'last.ckpt'}")
    print(f"results      {out / 'eval' / 'results.csv'}")
    for col in ("video", "strip"):
        for p in df.get(col, []):
            if isinstance(p, str):
                print(f"{col:<12} {p}")
    print(f"csv log      {out / 'csv' / 'metrics.csv'}")
    print(f"val images   {out / 'val'}")
    print("timings (s)  " + "  ".join(f"{k}={v:.1f}" for k, v in timings.items()))
    return {"metrics": metrics, "results": df, "timings": timings}
