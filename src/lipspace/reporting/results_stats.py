"""Read study results tables and summarise them over seeds: load and normalise the tables (``clip_label``, ``clip``,
the gains over the mean-training-frame baseline), pick the rows answering one question (ok runs, reconstruction,
held-out audio, dubs), take the mean ± Student-t CI of a metric over runs (seeds), and the shared labels, orders and
cell formats of the tables built on them (``lipspace.reporting.analysis``, ``lipspace.reporting.real_clips``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from lipspace.utils.errors import LipspaceError

# A run is one training: its eval rows (eval sets, drivers) are averaged before statistics are taken over seeds.
RUN_KEYS = ["study", "conditioner", "renderer", "clip_label", "seed", "dataset"]
CONDITIONER_ORDER = ["expression", "deepspeech", "lipblink", "blendshape_av"]
# Column headers; the arrow says which direction is better (none: blink rate has no better direction).
METRIC_LABELS = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓", "mouth_psnr": "mouth PSNR ↑",
                 "psnr_over_baseline": "PSNR over the mean training frame ↑",
                 "mouth_psnr_over_baseline": "mouth PSNR over the mean training frame ↑",
                 "l1": "L1 ↓", "mouth_l1": "mouth L1 ↓", "lmd": "LMD ↓", "lmd_norm": "LMD (norm.) ↓",
                 "lse_d": "LSE-D ↓", "lse_c": "LSE-C ↑", "lse_d_local": "LSE-D (local) ↓",
                 "lse_c_local": "LSE-C (local) ↑", "lse_d_local_gt": "LSE-D (local) of the ground truth",
                 "lse_c_local_gt": "LSE-C (local) of the ground truth", "blinks_per_s": "blinks/s (generated)",
                 "blink_rate": "blinks/s", "face_found": "face found (fraction of frames) ↑",
                 "aue_upper": "AUE upper ↓", "aue_lower": "AUE lower ↓", "expr_mse": "expression MSE ↓",
                 "baseline_mean_frame_psnr": "still frame: PSNR", "baseline_mean_frame_mouth_psnr":
                 "still frame: mouth PSNR", "lip_open_corr": "lip-opening corr. with GT ↑",
                 "lip_audio_corr": "lip–audio corr. (lag 0) ↑",
                 "lip_audio_corr_gt": "lip–audio corr. of the GT (ceiling)",
                 "lip_audio_corr_peak": "lip–audio corr., best lag within ±0.5 s (biased up: read the lag)",
                 "lip_audio_corr_peak_gt": "lip–audio corr., best lag, of the ground truth",
                 "lip_audio_lag_s": "lip–audio lag (s, + = audio late)",
                 "lip_audio_lag_s_gt": "lip–audio lag of the ground truth (s, the clip's A/V offset)",
                 "lse_local_seen": "scored sequence among the local sync expert's training data (LSE optimistic)",
                 "lse_local_is_encoder": "the local sync expert is also the run's audio encoder (LSE optimistic)"}


def _producer(p: Path) -> str:
    """The command that writes a results table: the study sweep for experiments/<study>/results/results_<tag>.csv."""
    if p.parent.name == "results" and p.stem.startswith("results_"):
        return (f"the study sweep: `lipspace-train --config-dir experiments/{p.parent.parent.name} --config-name "
                f"sweep_{p.stem.removeprefix('results_')}` (from the repository root)")
    return "a study sweep (experiments/<study>/sweep_*.yaml) or, per run, `lipspace-eval run_dir=<run>`"


class MetricUnavailable(LipspaceError):
    """A metric column is missing, or has no value in the rows asked for; notebooks print it and go on."""


def label(metric: str) -> str:
    """Column header for a metric, with the direction that is better."""
    return METRIC_LABELS.get(metric, metric)


def clip_name(dataset) -> str | None:
    """The clip a row is about: the last path component of its ``dataset`` (``/tmp/prep/obama`` -> ``obama``)."""
    return None if pd.isna(dataset) or not str(dataset).strip() else Path(str(dataset).rstrip("/")).name


def load_results(*paths: str | Path) -> pd.DataFrame:
    """Concatenate results tables (CSV or parquet); adds ``clip_label``, ``clip`` (:func:`clip_name`) and, where the
    mean-training-frame baseline
    was scored, ``psnr_over_baseline`` / ``mouth_psnr_over_baseline`` (dB above it: the baseline is the mean of the
    frames a run trained on, so it changes with the clip length). Failed runs are kept (see ``ok``)."""
    if not paths:
        raise LipspaceError("load_results: no results file given.")
    for p in map(Path, paths):
        if not p.is_file():
            raise LipspaceError(f"{p}: results table not found. It is written by {_producer(p)}.")
    df = pd.concat([pd.read_parquet(p) if Path(p).suffix in (".parquet", ".pq") else pd.read_csv(p) for p in paths],
                   ignore_index=True)
    secs = pd.to_numeric(df["clip_seconds"], errors="coerce") if "clip_seconds" in df else [np.nan] * len(df)
    df["clip_label"] = ["full" if pd.isna(v) else f"{v:g} s" for v in secs]
    if "dataset" in df:
        df["clip"] = [clip_name(v) for v in df["dataset"]]
    for metric in ("psnr", "mouth_psnr"):  # the mean training frame depends on the clip: compare gains too
        if metric in df and f"baseline_mean_frame_{metric}" in df:
            df[f"{metric}_over_baseline"] = df[metric] - df[f"baseline_mean_frame_{metric}"]
    return df


def ok(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of runs that trained and evaluated (``status`` ok, or no status column)."""
    return df if "status" not in df else df[df["status"].fillna("ok") == "ok"]


def failed_runs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per failed run, with its error text."""
    bad = df[df["status"].fillna("ok") != "ok"] if "status" in df else df.iloc[:0]
    cols = [c for c in ["study", "conditioner", "experiment", "renderer", "clip_label", "seed", "dataset_name",
                        "status", "failed_stage", "error", "run_dir"] if c in bad]
    return bad[cols].drop_duplicates().reset_index(drop=True)


def _col(d: pd.DataFrame, name: str) -> pd.Series:
    return d[name].astype("string") if name in d else pd.Series(pd.NA, index=d.index, dtype="string")


def _heldout_audio(d: pd.DataFrame) -> pd.Series:
    """Audio-driven rows with ground truth never trained on: the held-out utterances (synthetic data); for a
    dataset without held-out utterances (a real clip), its held-out tail driven by its audio."""
    es, audio = _col(d, "eval_set"), _col(d, "driver") == "audio"
    held = es.str.startswith("heldout/")
    ds = d["dataset"] if "dataset" in d else pd.Series("", index=d.index)
    with_held = set(ds[held & audio])
    return audio & (held | ((es == "test_tail") & ~ds.isin(with_held)))


SUBSETS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "all": lambda d: pd.Series(True, index=d.index),
    "reconstruction": lambda d: _col(d, "eval_set") == "test_tail",
    "heldout_audio": lambda d: _heldout_audio(d),
    "dubbed": lambda d: _col(d, "eval_set").str.startswith("dub/"),
}


def subset_rows(df: pd.DataFrame, subset: str | Callable = "all") -> pd.DataFrame:
    """The ok rows answering one question: reconstruction, heldout_audio, dubbed (or a row-mask function)."""
    d = ok(df)
    if subset != "all" and "eval_set" not in d:
        raise MetricUnavailable(f"no eval_set column, cannot select {subset!r} rows")
    mask = subset(d) if callable(subset) else SUBSETS[subset](d)
    return d[mask.fillna(False).astype(bool)]


def _run_means(df: pd.DataFrame, by: Sequence[str], metric: str) -> pd.DataFrame:
    if metric not in df:
        raise MetricUnavailable(f"{metric}: column not in the results table")
    d = df[df[metric].notna()]
    if d.empty:
        raise MetricUnavailable(f"{metric}: " + (f"all NaN in the {len(df)} rows asked for" if len(df) else
                                                 "no rows of this kind (eval set / driver) in the results"))
    keys = list(dict.fromkeys([*by, *(k for k in RUN_KEYS if k in d)]))
    extra = {"train_seconds": ("train_seconds", "mean")} if "train_seconds" in d else {}
    return d.groupby(keys, dropna=False, sort=False).agg(value=(metric, "mean"), **extra).reset_index()


def mean_ci(df: pd.DataFrame, by: Sequence[str] | str, metric: str, level: float = 0.95) -> pd.DataFrame:
    """Per group of ``by``: mean, std, n (seeds), half_width, ci_low, ci_high of ``metric``.

    Rows of one run (same study/conditioner/renderer/clip/seed/dataset) are averaged first (over eval sets and
    drivers not in ``by``); the Student-t interval is then over runs, i.e. seeds: n=1 gives a NaN half-width.
    Failed rows are dropped; pick rows with ``subset_rows``. Raises MetricUnavailable if there is no value.
    """
    by = [by] if isinstance(by, str) else list(by)
    if not by:
        df, by = df.assign(all_rows="all"), ["all_rows"]
    runs = _run_means(ok(df), by, metric)
    g = runs.groupby(by, dropna=False, sort=False)
    out = g["value"].agg(mean="mean", std="std", n="count")
    if "train_seconds" in runs:
        out["train_seconds"] = g["train_seconds"].mean()
    n = out["n"].to_numpy(dtype=float)
    t = np.where(n > 1, stats.t.ppf((1 + level) / 2, np.maximum(n - 1, 1)), np.nan)
    out["half_width"] = t * out["std"].to_numpy() / np.sqrt(n)
    out["ci_low"], out["ci_high"] = out["mean"] - out["half_width"], out["mean"] + out["half_width"]
    return _sort(out.reset_index(), by)


def _cond_rank(c) -> int:
    return CONDITIONER_ORDER.index(c) if c in CONDITIONER_ORDER else len(CONDITIONER_ORDER)


def _clip_order(lbl: str) -> float:
    return math.inf if lbl == "full" else float(str(lbl).split()[0])


def _sort(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    keys = {"clip_label": _clip_order, "conditioner": _cond_rank}
    key = lambda c: c.map(keys[c.name]) if c.name in keys else c  # noqa: E731
    return df.sort_values(list(by), key=key, kind="stable").reset_index(drop=True) if by else df


def clip_labels(df: pd.DataFrame) -> list[str]:
    """The clip lengths present, shortest first, "full" last."""
    return sorted(df["clip_label"].dropna().unique(), key=_clip_order)


def fmt_ci(mean: float, half: float, digits: int = 2) -> str:
    half_text = "n/a (1 seed)" if pd.isna(half) else f"{half:.{digits}f}"
    return "n/a" if pd.isna(mean) else f"{mean:.{digits}f} ± {half_text}"


def provenance(df: pd.DataFrame) -> pd.DataFrame:
    """Unique provenance strings (metric definitions, LSE models and status, eval resolution, render
    post-processing) with row counts."""
    recs: dict[tuple[str, str], int] = {}
    for col in [c for c in ("metric_provenance", "lse_model", "lse_local_model", "lse_status", "eval_resolution",
                            "postprocess") if c in df]:
        for v, n in df[col].dropna().astype(str).value_counts().items():
            try:
                items = list(json.loads(v).items()) if col == "metric_provenance" else [(col, v)]
            except (ValueError, AttributeError):  # not a JSON object: keep the text as it is
                items = [(col, v)]
            for key in ((k, str(text)) for k, text in items):
                recs[key] = recs.get(key, 0) + n
    return pd.DataFrame([(*k, n) for k, n in recs.items()], columns=["what", "provenance", "rows"])
