"""Read study results tables and summarise them over seeds (mean ± Student-t CI) for the analysis notebooks."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from lipspace.utils.errors import LipspaceError

# A run is one training: its eval rows (eval sets, drivers) are averaged before statistics are taken over seeds.
RUN_KEYS = ["study", "conditioner", "renderer", "clip_label", "seed", "dataset"]
CONDITIONER_ORDER = ["expression", "deepspeech", "lipblink", "blendshape_av"]
AUDIO_SPACES = ["deepspeech", "blendshape_av"]
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


def clip_length_table(df: pd.DataFrame, metric: str, subset: str | Callable = "heldout_audio",
                      level: float = 0.95, digits: int = 2) -> pd.DataFrame:
    """Rows conditioner, columns clip length (shortest first, full last), cells "mean ± CI half-width"."""
    s = mean_ci(subset_rows(df, subset), ["conditioner", "clip_label"], metric, level)
    s["cell"] = [fmt_ci(m, h, digits) for m, h in zip(s["mean"], s["half_width"])]
    table = s.pivot(index="conditioner", columns="clip_label", values="cell")
    table = table.reindex(columns=[c for c in clip_labels(s) if c in table.columns])
    table = table.reindex(sorted(table.index, key=_cond_rank))
    table.columns.name = f"{label(metric)} vs clip length"
    return table.fillna("n/a")


def spaces_table(df: pd.DataFrame, metrics: Iterable[str], subset: str | Callable = "all",
                 level: float = 0.95, digits: int = 3) -> pd.DataFrame:
    """Table-I style: rows conditioner × renderer, one column per metric ("mean ± CI"); "n/a" if unavailable.

    ``table.attrs["unavailable"]`` maps each metric that could not be summarised to the reason; if none can be,
    MetricUnavailable is raised."""
    rows, metrics, cols, missing = subset_rows(df, subset), list(metrics), {}, {}
    by = [k for k in ("conditioner", "renderer") if k in rows]
    for m in metrics:
        try:
            s = mean_ci(rows, by, m, level)
        except MetricUnavailable as e:
            missing[m] = str(e)
            continue
        cols[label(m)] = s.set_index(by).apply(lambda r: fmt_ci(r["mean"], r["half_width"], digits), axis=1)
    if not cols:
        raise MetricUnavailable("; ".join(missing.values()) or "no metric asked for")
    index = _sort(rows[by].drop_duplicates(), by).set_index(by).index
    table = pd.DataFrame(cols, index=index).reindex(columns=[label(m) for m in metrics]).fillna("n/a")
    table.attrs["unavailable"] = missing
    return table


def gap_by_clip(df: pd.DataFrame, metric: str, reference: str = "expression",
                others: Sequence[str] = AUDIO_SPACES, subset: str | Callable = "heldout_audio") -> pd.DataFrame:
    """Per clip length: reference's mean minus each other space's mean (positive: reference higher)."""
    s = mean_ci(subset_rows(df, subset), ["conditioner", "clip_label"], metric)
    wide = s.pivot(index="clip_label", columns="conditioner", values="mean")
    wide = wide.reindex([c for c in clip_labels(s) if c in wide.index])
    present = [o for o in others if o in wide and reference in wide]
    return pd.DataFrame({f"{reference} - {o}": wide[reference] - wide[o] for o in present}, index=wide.index)


def provenance(df: pd.DataFrame) -> pd.DataFrame:
    """Unique provenance strings (metric definitions, LSE models and status, eval resolution) with row counts."""
    recs: dict[tuple[str, str], int] = {}
    for col in [c for c in ("metric_provenance", "lse_model", "lse_local_model", "lse_status", "eval_resolution")
                if c in df]:
        for v, n in df[col].dropna().astype(str).value_counts().items():
            try:
                items = list(json.loads(v).items()) if col == "metric_provenance" else [(col, v)]
            except (ValueError, AttributeError):  # not a JSON object: keep the text as it is
                items = [(col, v)]
            for key in ((k, str(text)) for k, text in items):
                recs[key] = recs.get(key, 0) + n
    return pd.DataFrame([(*k, n) for k, n in recs.items()], columns=["what", "provenance", "rows"])


def plot_vs_clip_length(df: pd.DataFrame, metric: str, ax, subset: str | Callable = "heldout_audio",
                        level: float = 0.95):
    """One line per conditioner with its CI band; x = seconds of training frames (log scale)."""
    s = mean_ci(subset_rows(df, subset), ["conditioner", "clip_label"], metric, level)
    real = s["train_seconds"] if "train_seconds" in s else pd.Series(np.nan, index=s.index)
    x = real.fillna(s["clip_label"].map(_clip_order)).replace(np.inf, np.nan)  # no seconds for "full": 2x longest
    s["x"] = x.fillna(2 * x.max() if x.notna().any() else 1.0)
    for cond, g in s.groupby("conditioner", sort=False):
        g = g.sort_values("x")
        line, = ax.plot(g["x"], g["mean"], marker="o", label=cond)
        ax.fill_between(g["x"], g["ci_low"], g["ci_high"], color=line.get_color(), alpha=0.15)
    ax.set_xscale("log")
    ticks = s.assign(real=real).groupby("clip_label")[["x", "real"]].mean()
    ax.set_xticks(ticks["x"].to_numpy(), [f"full\n({r:.0f} s)" if lb == "full" and r == r else lb
                                          for lb, r in ticks["real"].items()])
    ax.minorticks_off()
    ax.set(xlabel="training frames (seconds)", ylabel=label(metric),
           title=f"{label(metric)} vs clip length (mean, {level:.0%} CI over seeds)")
    ax.legend()
    return ax


def plot_spaces_bars(df: pd.DataFrame, metric: str, ax, subset: str | Callable = "all", level: float = 0.95):
    """Grouped bars: conditioners on x, one bar per renderer, CI error bars."""
    rows = subset_rows(df, subset)
    by = [k for k in ("conditioner", "renderer") if k in rows]
    s = mean_ci(rows, by, metric, level)
    conds = list(dict.fromkeys(s["conditioner"]))
    rends = list(dict.fromkeys(s["renderer"])) if "renderer" in s else [None]
    width = 0.8 / len(rends)
    for i, r in enumerate(rends):
        g = (s if r is None else s[s["renderer"] == r]).set_index("conditioner").reindex(conds)
        x = np.arange(len(conds)) + (i - (len(rends) - 1) / 2) * width
        ax.bar(x, g["mean"], width, yerr=g["half_width"].fillna(0), capsize=3, label=r)
    ax.set_xticks(np.arange(len(conds)), conds)
    ax.set(ylabel=label(metric), title=f"{label(metric)} (mean, {level:.0%} CI over seeds)")
    if rends != [None]:
        ax.legend(title="renderer")
    return ax



# ------------------------------------------------------------------------------- real clips: the still-frame claim
# Every space, driven by the clip's own audio alone, must beat a still frame (the mean training frame) on real
# footage. Rows: the held-out tail (eval_set test_tail) per driver, and the dubs (dub/<file>: no ground truth).
REAL_METRICS = ["psnr", "mouth_psnr", "baseline_mean_frame_psnr", "baseline_mean_frame_mouth_psnr", "lmd",
                "lip_open_corr", "lse_d_local", "lse_c_local", "lip_audio_corr", "lip_audio_corr_gt"]
TRACKED_DRIVERS = ("tracked_inputs", "oracle_inputs")  # the tail driven by its tracked inputs (not audio alone)
BEATS = "beats still frame (PSNR and mouth PSNR)"
_GAINS = ["psnr_over_baseline", "mouth_psnr_over_baseline"]
_STILL = ["psnr", "mouth_psnr", "baseline_mean_frame_psnr", "baseline_mean_frame_mouth_psnr"]


def _real_order(table: pd.DataFrame) -> pd.DataFrame:
    """Spaces in CONDITIONER_ORDER, clips by name, the tail before the dubs, tracked inputs before audio."""
    keys = {"conditioner": _cond_rank, "eval_set": lambda e: (e != "test_tail", str(e)),
            "driver": lambda v: (v not in TRACKED_DRIVERS, str(v))}
    idx = sorted(table.index, key=lambda t: tuple(keys.get(n, str)(v) for n, v in zip(table.index.names, t)))
    return table.reindex(pd.MultiIndex.from_tuples(idx, names=table.index.names))


def _numeric(d: pd.DataFrame, m: str) -> pd.Series:
    """A metric column as numbers (NaN where missing); ``<x>_over_baseline`` derived when not in the table."""
    if m in d:
        return pd.to_numeric(d[m], errors="coerce")
    x = m.removesuffix("_over_baseline")
    if m != x and x in d and f"baseline_mean_frame_{x}" in d:
        return _numeric(d, x) - _numeric(d, f"baseline_mean_frame_{x}")
    return pd.Series(np.nan, index=d.index)


def real_clip_summary(df: pd.DataFrame, metrics: Sequence[str] = REAL_METRICS) -> pd.DataFrame:
    """Numbers of the real-clip table, per space (``conditioner``; × ``renderer`` when several) × ``clip`` ×
    ``eval_set`` (``test_tail``, ``dub/...``) × ``driver``, over runs (seeds): ``n`` (runs), per metric ``<m>``
    (mean), ``<m>_std`` (NaN for one value) and ``<m>_n`` (runs with a value); ``beats``: PSNR and mouth PSNR both
    above the still frame's (means; NA without the four numbers), ``beats_runs`` / ``beats_of``: runs that beat it
    on both / runs with the four numbers. Failed runs are left out; a missing metric gives NaN; ``clip`` is the
    dataset folder's name (:func:`clip_name`)."""
    d = ok(df)
    if "eval_set" not in d or "driver" not in d:
        raise MetricUnavailable("no eval_set / driver column: cannot tell the tail and dub rows apart")
    d = d.assign(clip=d["clip"] if "clip" in d else [clip_name(v) for v in _col(d, "dataset")])
    es = _col(d, "eval_set")
    d = d[((es == "test_tail") | es.str.startswith("dub/")).fillna(False).astype(bool)]
    if d.empty:
        raise MetricUnavailable("no test_tail or dub/... rows in the results")
    metrics = list(dict.fromkeys(metrics))
    need = list(dict.fromkeys([*metrics, *_GAINS, *_STILL]))
    by = ["conditioner", *(["renderer"] if "renderer" in d and d["renderer"].nunique() > 1 else []),
          "clip", "eval_set", "driver"]
    run_keys = list(dict.fromkeys([*by, *(k for k in RUN_KEYS if k in d)]))
    num = pd.DataFrame({m: _numeric(d, m) for m in need}, index=d.index)
    runs = pd.concat([d[run_keys], num], axis=1).groupby(run_keys, dropna=False, sort=False)[need].mean()
    runs["_of"] = runs[_GAINS].notna().all(axis=1)
    runs["_beats"] = (runs[_GAINS] > 0).all(axis=1) & runs["_of"]
    g = runs.reset_index().groupby(by, dropna=False, sort=False)
    out = pd.DataFrame({"n": g.size()})
    for m in need:
        out[m], out[f"{m}_std"], out[f"{m}_n"] = g[m].mean(), g[m].std(), g[m].count()
    out["beats_runs"], out["beats_of"] = g["_beats"].sum().astype(int), g["_of"].sum().astype(int)
    means_of = out[_STILL]
    beats = (means_of["psnr"] > means_of[_STILL[2]]) & (means_of["mouth_psnr"] > means_of[_STILL[3]])
    out["beats"] = beats.astype(object).where(means_of.notna().all(axis=1) & (out["beats_of"] > 0), pd.NA)
    return _real_order(out)


def _mean_std(mean: float, std: float, n: int, digits: int) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 and not pd.isna(std) else "")


def _beats_cell(beats, k: int, of: int) -> str:
    if beats is pd.NA or pd.isna(beats):
        return "n/a"
    return ("yes" if beats else "no") + (f" ({k}/{of} seeds)" if of > 1 else "")


def real_clip_table(df: pd.DataFrame, metrics: Sequence[str] = REAL_METRICS, digits: int = 2) -> pd.DataFrame:
    """The real-clip table (:func:`real_clip_summary` as text): rows space × clip × eval set × driver; columns
    ``n (seeds)``, one per metric ("mean ± std over seeds"; the mean alone from one seed; "n/a" without a value)
    and :data:`BEATS` ("yes"/"no" on the means, with how many seeds beat it when there are several), placed after
    the still frame's columns."""
    s = real_clip_summary(df, metrics)
    cols = {"n (seeds)": s["n"].astype(int)}
    for m in metrics:
        cols[label(m)] = [_mean_std(a, b, n, digits) for a, b, n in zip(s[m], s[f"{m}_std"], s[f"{m}_n"])]
    cols[BEATS] = [_beats_cell(b, k, o) for b, k, o in zip(s["beats"], s["beats_runs"], s["beats_of"])]
    order = list(cols)
    after = max((order.index(label(m)) for m in ("baseline_mean_frame_psnr", "baseline_mean_frame_mouth_psnr")
                 if m in metrics), default=len(order) - 2)
    order.insert(after + 1, order.pop())
    return pd.DataFrame(cols, index=s.index)[order].rename_axis(index={"conditioner": "space"})


def still_frame_verdict(df: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Per space × clip: does the held-out tail driven by the clip's own audio (``test_tail``, driver ``audio``)
    beat the still frame on PSNR and mouth PSNR? Columns ``PSNR gain`` / ``mouth PSNR gain`` (dB over the still
    frame, mean over seeds), ``n`` (seeds with both), ``verdict`` ("yes"/"no", with k/n seeds when several; "n/a"
    without such a row) and ``line``, the sentence to print."""
    s = real_clip_summary(df, _GAINS).reset_index()
    by = [k for k in s.columns[:s.columns.get_loc("n")] if k not in ("eval_set", "driver")]
    tail = s[(s["eval_set"] == "test_tail") & (s["driver"] == "audio") & (s["beats_of"] > 0)].set_index(by)
    rows = []
    for key in dict.fromkeys(map(tuple, s[by].itertuples(index=False))):
        k = key if len(by) > 1 else key[0]
        if k in tail.index:
            r = tail.loc[k]
            gp, gm, n = r["psnr_over_baseline"], r["mouth_psnr_over_baseline"], int(r["beats_of"])
            verdict = _beats_cell(r["beats"], int(r["beats_runs"]), n)
            detail = f"PSNR {gp:+.{digits}f} dB, mouth PSNR {gm:+.{digits}f} dB over the still frame, n={n}"
        else:
            gp, gm, n, verdict = np.nan, np.nan, 0, "n/a"
            detail = "no audio-driven held-out tail row with PSNR, mouth PSNR and the still frame's"
        rows.append({**dict(zip(by, key)), "PSNR gain": gp, "mouth PSNR gain": gm, "n": n, "verdict": verdict,
                     "line": f"{' / '.join(map(str, key))}: driven by audio beats the still frame on PSNR and "
                             f"mouth PSNR: {verdict} ({detail})"})
    return pd.DataFrame(rows).set_index(by).rename_axis(index={"conditioner": "space"})


def plot_real_gains(df: pd.DataFrame, metric: str, ax, driver: str = "audio"):
    """Grouped bars: clips on x, one bar per space: ``metric`` (psnr, mouth_psnr) minus the still frame's on the
    held-out tail driven by ``driver``, mean over seeds with std error bars; above 0: beats the still frame."""
    gain = f"{metric}_over_baseline"
    s = real_clip_summary(df, [gain]).reset_index()
    s = s[(s["eval_set"] == "test_tail") & (s["driver"] == driver) & s[gain].notna()]
    if s.empty:
        raise MetricUnavailable(f"{gain}: no held-out tail rows driven by {driver!r} with {metric} and the still "
                                f"frame's")
    clips = sorted(s["clip"].unique(), key=str)
    spaces = sorted(s["conditioner"].unique(), key=_cond_rank)
    width = 0.8 / len(spaces)
    for i, c in enumerate(spaces):
        g = s[s["conditioner"] == c].groupby("clip")[[gain, f"{gain}_std"]].mean().reindex(clips)
        x = np.arange(len(clips)) + (i - (len(spaces) - 1) / 2) * width
        ax.bar(x, g[gain], width, yerr=g[f"{gain}_std"].fillna(0), capsize=3, label=c)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(clips)), clips)
    ax.set(ylabel="dB above the still frame (mean ± std over seeds)",
           title=f"{label(metric)}: held-out tail driven by {driver}")
    ax.legend(title="space")
    return ax
