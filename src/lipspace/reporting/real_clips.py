"""The real-clip still-frame claim: every space, driven by the clip's own audio alone, must beat a still frame (the
mean training frame) on real footage. Summarises the held-out tail (``test_tail``, per driver) and dub (``dub/<file>``,
no ground truth) rows of a results table over seeds, and turns the summary into the real-clip table, the per space ×
clip verdict sentences and the gain bars; rows, statistics and labels come from ``lipspace.reporting.results_stats``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lipspace.reporting.results_stats import RUN_KEYS, MetricUnavailable, _col, _cond_rank, clip_name, label, ok

# Every space, driven by the clip's own audio alone, must beat a still frame (the mean training frame) on real
# footage. Rows: the held-out tail (eval_set test_tail) per driver, and the dubs (dub/<file>: no ground truth).
REAL_METRICS = ["psnr", "mouth_psnr", "baseline_mean_frame_psnr", "baseline_mean_frame_mouth_psnr", "lmd",
                "lip_open_corr", "lse_d_local", "lse_c_local", "lip_audio_corr", "lip_audio_corr_gt"]
TRACKED_DRIVERS = ("tracked_inputs", "oracle_inputs")  # the tail driven by its tracked inputs (not audio alone)
BEATS = "beats still frame (PSNR and mouth PSNR)"
_GAINS = ["psnr_over_baseline", "mouth_psnr_over_baseline"]
_STILL = ["psnr", "mouth_psnr", "baseline_mean_frame_psnr", "baseline_mean_frame_mouth_psnr"]
_LIP = "lip_open_corr"  # the third condition: the mouth moves with the ground truth's (correlation > 0)


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
    on both / runs with the four numbers; ``lip_pos_runs`` / ``lip_of``: runs whose lip-opening correlation with
    the ground truth is positive / runs with one. Failed runs are left out; a missing metric gives NaN; ``clip`` is the
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
    need = list(dict.fromkeys([*metrics, *_GAINS, *_STILL, _LIP]))
    by = ["conditioner", *(["renderer"] if "renderer" in d and d["renderer"].nunique() > 1 else []),
          "clip", "eval_set", "driver"]
    run_keys = list(dict.fromkeys([*by, *(k for k in RUN_KEYS if k in d)]))
    num = pd.DataFrame({m: _numeric(d, m) for m in need}, index=d.index)
    runs = pd.concat([d[run_keys], num], axis=1).groupby(run_keys, dropna=False, sort=False)[need].mean()
    runs["_of"] = runs[_GAINS].notna().all(axis=1)
    runs["_beats"] = (runs[_GAINS] > 0).all(axis=1) & runs["_of"]
    runs["_lip_of"], runs["_lip_pos"] = runs[_LIP].notna(), runs[_LIP] > 0
    g = runs.reset_index().groupby(by, dropna=False, sort=False)
    out = pd.DataFrame({"n": g.size()})
    for m in need:
        out[m], out[f"{m}_std"], out[f"{m}_n"] = g[m].mean(), g[m].std(), g[m].count()
    out["beats_runs"], out["beats_of"] = g["_beats"].sum().astype(int), g["_of"].sum().astype(int)
    out["lip_pos_runs"], out["lip_of"] = g["_lip_pos"].sum().astype(int), g["_lip_of"].sum().astype(int)
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
    beat the still frame on PSNR and mouth PSNR, and does its mouth move with the ground truth's? Columns
    ``PSNR gain`` / ``mouth PSNR gain`` (dB over the still frame, mean over seeds), ``n`` (seeds with both),
    ``verdict`` ("yes"/"no", with k/n seeds when several; "n/a" without such a row), ``lip-opening corr.`` (with the
    ground truth, mean over seeds), ``lip corr. > 0`` ("yes"/"no" on the mean, with k/n seeds; "n/a" without one),
    ``all three`` (the issue's criterion: both gains and the mean correlation positive) and ``line``, the sentence
    to print."""
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
            corr, lip_of = r[_LIP], int(r["lip_of"])
            lip = _beats_cell(pd.NA if lip_of == 0 else bool(corr > 0), int(r["lip_pos_runs"]), lip_of)
            if lip_of:
                detail += f"; lip-opening corr. with the ground truth {corr:+.{digits}f}, positive: {lip}"
            both = "n/a" if lip == "n/a" else ("yes" if bool(r["beats"]) and corr > 0 else "no")
        else:
            gp, gm, n, verdict, corr, lip, both = np.nan, np.nan, 0, "n/a", np.nan, "n/a", "n/a"
            detail = "no audio-driven held-out tail row with PSNR, mouth PSNR and the still frame's"
        rows.append({**dict(zip(by, key)), "PSNR gain": gp, "mouth PSNR gain": gm, "n": n, "verdict": verdict,
                     "lip-opening corr.": corr, "lip corr. > 0": lip, "all three": both,
                     "line": f"{' / '.join(map(str, key))}: driven by audio beats the still frame on PSNR and "
                             f"mouth PSNR: {verdict} ({detail})"})
    return pd.DataFrame(rows).set_index(by).rename_axis(index={"conditioner": "space"})


def markdown_table(table: pd.DataFrame) -> str:
    """A table (its index as leading columns) as GitHub markdown, floats at 2 decimals (no tabulate needed)."""
    t = table.reset_index()
    cell = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, t.columns)) + " |", "|" + "---|" * len(t.columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in t.itertuples(index=False)])


def real_clips_markdown(df: pd.DataFrame, header: str) -> str:
    """experiments/conditioning_spaces/results/real_clips.md: ``header`` (the study's settings, written by hand),
    the still-frame verdict per space x clip and every row (mean ± std over seeds)."""
    verdict = still_frame_verdict(df).drop(columns="line")
    return (header.rstrip() + "\n\n## Does the audio-driven held-out tail beat the still frame?\n\n"
            + markdown_table(verdict) + "\n\n## All rows (mean ± std over seeds)\n\n"
            + markdown_table(real_clip_table(df)) + "\n")


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
