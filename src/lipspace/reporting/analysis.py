"""The analysis notebooks' module (``from lipspace.reporting import analysis as A``, then ``A.<name>``): the
clip-length and conditioning-space study tables and plots (mean ± CI over seeds per conditioner × clip length or ×
renderer, the gap between spaces), built on the results-table reading and seed statistics of
``lipspace.reporting.results_stats``; those and the real-clip still-frame tables (``lipspace.reporting.real_clips``)
are re-exported here so that the notebooks reach everything through this one module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from lipspace.reporting.real_clips import (BEATS, REAL_METRICS, TRACKED_DRIVERS, plot_real_gains, real_clip_summary,
                                           real_clip_table, still_frame_verdict)
from lipspace.reporting.results_stats import (CONDITIONER_ORDER, METRIC_LABELS, RUN_KEYS, SUBSETS, MetricUnavailable,
                                              _clip_order, _cond_rank, _sort, clip_labels, clip_name, failed_runs,
                                              fmt_ci, label, load_results, mean_ci, ok, provenance, subset_rows)

__all__ = [  # the notebooks' names: this module's tables and plots, and the ones re-exported from its two parts
    "AUDIO_SPACES", "clip_length_table", "spaces_table", "gap_by_clip", "plot_vs_clip_length", "plot_spaces_bars",
    "RUN_KEYS", "CONDITIONER_ORDER", "METRIC_LABELS", "SUBSETS", "MetricUnavailable", "label", "clip_name",
    "load_results", "ok", "failed_runs", "subset_rows", "mean_ci", "clip_labels", "fmt_ci", "provenance",
    "REAL_METRICS", "TRACKED_DRIVERS", "BEATS", "real_clip_summary", "real_clip_table", "still_frame_verdict",
    "plot_real_gains",
]
AUDIO_SPACES = ["deepspeech", "blendshape_av"]


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
                 level: float = 0.95, digits: int = 3, by: Sequence[str] = ("conditioner", "renderer")) -> pd.DataFrame:
    """Table-I style: rows conditioner × renderer (or the columns ``by``), one column per metric ("mean ± CI");
    "n/a" if unavailable.

    ``table.attrs["unavailable"]`` maps each metric that could not be summarised to the reason; if none can be,
    MetricUnavailable is raised."""
    rows, metrics, cols, missing = subset_rows(df, subset), list(metrics), {}, {}
    by = [k for k in by if k in rows]
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
