"""The demos. ``run_compare`` (``make demo``): the four conditioning spaces trained and compared on the synthetic
talking head (lipspace.demo.compare). ``run_walkthrough`` (``make demo-lipnerf``): one space, LipNeRF on the MLP
renderer, evaluated with its oracle and audio drivers. Re-running either reuses the dataset and the finished runs."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from hydra.utils import instantiate

from lipspace.utils.config import check_config, choices_from_overrides, compose_train
from lipspace.demo.compare import (COMMON, SPACES, Progress, check_spaces, print_table, run_key, side_by_side,
                                    reference_rows, summarise, train_and_evaluate)

# CPU-sized so that the walkthrough stays within ~10 minutes on 2 cores (see README for the measured time)
WALKTHROUGH_OVERRIDES = ["experiment=lipnerf", "budget=tiny", "study=demo", "tags=[demo,lipnerf]"]


def space_overrides(space: str, dub: Path, extra: list[str]) -> list[str]:
    preset = SPACES[space]
    return [f"experiment={preset}", *COMMON, f"evaluation.dub_audio=['{dub}']", f"tags=[demo,{preset}]", *extra]


def run_compare(extra_overrides: list[str] | None = None, output_dir: str = "outputs/demo",
                spaces=tuple(SPACES), per_space: dict[str, list[str]] | None = None) -> dict:
    """Train and evaluate one preset per conditioning space at one budget; print the comparison, write
    ``compare.csv``, ``compare.png`` and ``compare_<utterance>.mp4`` into ``output_dir``. ``extra_overrides``
    apply to every space, ``per_space`` ({space: overrides}) to one (e.g. a conditioner's own sizes)."""
    from lipspace.data.synthetic.dub import dub_wav
    from lipspace.eval.montage import bar_chart

    t0 = time.perf_counter()
    spaces = check_spaces(spaces)
    extra = {s: list(extra_overrides or []) + list((per_space or {}).get(s, [])) for s in spaces}
    out = Path(output_dir).resolve()
    progress = Progress(2 + 2 * len(spaces))
    with progress("dataset", ": the synthetic talking head (generated once, then cached) and a dub in another voice"):
        cfgs = {s: compose_train(space_overrides(s, out / "dub.wav", extra[s]), out / SPACES[s]) for s in spaces}
        for cfg in cfgs.values():
            check_config(cfg)  # every preset's config, before minutes of work
        dm = instantiate(cfgs[spaces[0]].data)
        dm.load()
        dub = dub_wav(out / "audio")
    first = cfgs[spaces[0]]  # what the runs were given (the user's overrides included), for the printed titles
    budget = f"budget={first.get('budget_name')}, {first.trainer.max_steps} steps"
    rows, runs, results = [], {}, {}
    for space in spaces:
        run = out / f"{SPACES[space]}{run_key(extra[space])}"
        df, info = train_and_evaluate(space, space_overrides(space, dub, extra[space]), run, progress)
        rows.append(summarise(space, SPACES[space], df, info))
        runs[space], results[space] = run, df
    utterance = (dm.clip.meta.get("heldout") or [None])[0]
    with progress("figures", ": comparison table, bar chart, side-by-side video"):
        still, truth = reference_rows(rows)
        table = pd.DataFrame(rows + [still, truth])
        table.to_csv(out / "compare.csv", index=False)
        starred = [{**r, "space": r["space"] + ("*" if r["lse_local_is_encoder"] else "")} for r in rows]
        chart = bar_chart(pd.DataFrame(starred), out / "compare.png",
                          {"psnr": "PSNR (dB) ↑", "mouth_psnr": "mouth PSNR (dB) ↑", "lmd": "LMD (px) ↓",
                           "lip_open_corr": "lip-opening r ↑", "lse_c_local": "LSE-C local ↑ (* optimistic)",
                           "lse_c_local_dub": "LSE-C local, dub ↑"},
                          baselines={"psnr": (rows[0]["baseline_mean_frame_psnr"], "still frame"),
                                     "mouth_psnr": (rows[0]["baseline_mean_frame_mouth_psnr"], "still frame"),
                                     "lse_c_local": (truth["lse_c_local"], "ground truth")},
                          title=f"held-out utterances driven by audio alone; tri-plane, {budget}")
        video = None
        if utterance is not None:
            video = side_by_side(results, out / f"compare_{utterance}.mp4", utterance,
                                 dm.clip.root / "heldout" / utterance / "audio.wav")
    total = time.perf_counter() - t0
    print("\n" + "=" * 110)
    print(f"Conditioning spaces on the synthetic talking head: {len(spaces)} presets, tri-plane renderer, "
          f"{budget}, seed {first.seed}")
    print("Held-out utterances (new audio, exact ground truth), every model driven by the audio alone;")
    print("dub: a synthetic voice at another pitch saying other syllables (no ground truth: sync columns only).")
    print_table(table)
    print("-" * 110)
    status = rows[0].get("lse_status") or ""
    print("LSE-C loc: lip-sync confidence from a sync expert trained here on the clip's training frames (lipspace.av; "
          "NOT SyncNet: not comparable to published LSE-C); ground truth row: its score of the real frames.")
    if table.get("lse_local_is_encoder", pd.Series(dtype=bool)).fillna(False).astype(bool).any():
        print("*: that expert is also this space's audio encoder (synctalk's AVE features): its renders are scored by "
              "the network whose embeddings drive them, so its LSE-C loc is optimistic.")
    print(f"LSE-C (official SyncNet): {'computed' if table['lse_c'].notna().any() else status or 'not computed'}")
    print(f"dataset      {dm.clip.root}")
    for space, run in runs.items():
        print(f"{space:<14}{run}")
    print(f"table        {out / 'compare.csv'}")
    print(f"bar chart    {chart}")
    if video is not None:
        print(f"video        {video}  (ground truth | " + " | ".join(spaces) + ")")
    print(f"timings (s)  total={total:.1f}  " + "  ".join(f"{k}={v:.1f}" for k, v in progress.times.items()))
    return {"table": table, "runs": runs, "timings": {**progress.times, "total": total}}


def run_walkthrough(extra_overrides: list[str] | None = None, output_dir: str = "outputs/demo_lipnerf") -> dict:
    """LipNeRF alone on the MLP renderer: train, evaluate on one held-out utterance (oracle and audio drivers),
    render."""
    from lipspace.tasks.evaluate import evaluate
    from lipspace.tasks.report import results_table
    from lipspace.tasks.train import train

    t0 = time.perf_counter()
    overrides = WALKTHROUGH_OVERRIDES + list(extra_overrides or [])
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
