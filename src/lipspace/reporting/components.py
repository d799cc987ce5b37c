"""Tables of the renderer-part studies: SSP-NeRF's Table-2 ablation (experiments/ssp_ablation: which variant a row
is, from its component columns) and the torso options (experiments/torso_options: each preset with its paper's
torso against torso=gt), mean ± 95 % CI over seeds of the full-frame metrics, as markdown."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from lipspace.reporting.analysis import spaces_table
from lipspace.reporting.real_clips import markdown_table
from lipspace.reporting.results_stats import MetricUnavailable, clip_name, fmt_ci, label, subset_rows

# SSP-NeRF's Table 2 (PSNR, its May / Obama average) for the same variants
SSP_PAPER_PSNR = {"full": 32.79, "w/o deformation": 27.47, "w/o semantic branch": 29.48,
                  "w/o dynamic sampling": 29.51, "w/o 3-D codes": 31.06}
FULL_FRAME_METRICS = ["psnr", "ssim", "lpips", "lmd", "mouth_psnr", "baseline_mean_frame_psnr"]
PRESET_ORDER = ["lipnerf", "adnerf", "dfanerf", "synctalk", "sspnerf"]


MEAN_LOSS = " (mean-loss sampler)"  # the label suffix of runs whose dynamic sampler follows each class's mean loss


def ssp_variant(df: pd.DataFrame) -> pd.Series:
    """Which ablation variant each row is, from the component columns run.json records (semantic_weight, sampling,
    class_loss, torso_deform, latent_codes): "full", "w/o <component>", or the components turned off joined by
    " + "; runs whose dynamic sampler follows each class's mean loss per pixel instead of its total in the frame
    (class_loss=mean, the default until 2026-12-06; rows from before the column existed sampled so) carry MEAN_LOSS
    after the label."""
    def one(r) -> str:
        off = [name for name, is_off in (
            ("deformation", r.get("torso_deform") is False or str(r.get("torso_deform")) == "False"),
            ("semantic branch", float(r.get("semantic_weight") or 0.0) == 0.0),
            ("dynamic sampling", r.get("sampling") != "semantic"),
            ("3-D codes", float(r.get("latent_codes") or 0) == 0)) if is_off]
        mean = r.get("sampling") == "semantic" and r.get("class_loss") != "total"
        return ("full" if not off else "w/o " + " + ".join(off)) + (MEAN_LOSS if mean else "")
    return df.apply(one, axis=1) if len(df) else pd.Series(dtype="string")


def variant_rank(variant: str) -> tuple:
    """The paper's order (full first), each variant's mean-loss-sampler twin right after it, others last."""
    order = list(SSP_PAPER_PSNR)
    base = variant.removesuffix(MEAN_LOSS)
    return (order.index(base) if base in order else len(order), variant != base, variant)


def ablation_table(df: pd.DataFrame, metrics: Sequence[str] = FULL_FRAME_METRICS, subset: str = "reconstruction",
                   digits: int = 2) -> pd.DataFrame:
    """Rows clip × variant (full first, then the paper's order), a column per metric, plus the paper's PSNR (the
    variants of its Table 2, either reading of its sampler's class loss)."""
    d = df.assign(variant=ssp_variant(df), clip=df["dataset"].map(clip_name) if "dataset" in df else "")
    table = spaces_table(d, metrics, subset, digits=digits, by=("clip", "variant"))
    table = table.iloc[sorted(range(len(table)), key=lambda i: (table.index[i][0], variant_rank(table.index[i][1])))]
    table["paper PSNR"] = [SSP_PAPER_PSNR.get(v.removesuffix(MEAN_LOSS), float("nan")) for _, v in table.index]
    return table


def _paired(runs: pd.Series, a: str, b: str, level: float) -> tuple[int, float, float] | None:
    """Variant a − variant b over the seeds both ran (``runs``: a metric per variant × seed of one clip): the number
    of paired seeds, the mean difference and its Student-t ``level`` half-width (nan for one seed); None if no seed
    is shared."""
    variants = runs.index.unique("variant")
    if a not in variants or b not in variants:
        return None
    ra, rb = runs.loc[a], runs.loc[b]
    seeds = sorted(set(ra.index) & set(rb.index))
    if not seeds:
        return None
    diff = np.array([ra[s] - rb[s] for s in seeds])
    n = len(diff)
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return n, float(diff.mean()), half


def _run_metric(df: pd.DataFrame, subset, metric: str = "psnr", column: str = "variant") -> pd.Series:
    """One value of ``metric`` per run (its eval rows of ``subset`` averaged), indexed clip × variant × seed, the
    "variant" level holding ``column``'s value: the SSP-NeRF ablation variant of each row (ssp_variant) for
    "variant", else that column of ``df`` (:func:`_paired` pairs the variant level's values)."""
    d = subset_rows(df, subset)
    d = d.assign(clip=d["dataset"].map(clip_name))
    if column == "variant":
        d = d.assign(variant=ssp_variant(d))
    if column not in d:
        raise MetricUnavailable(f"{column}: column not in the results table")
    return d.groupby(["clip", column, "seed"])[metric].mean().rename_axis(["clip", "variant", "seed"])


def ablation_verdict(df: pd.DataFrame, subset: str = "reconstruction", level: float = 0.95,
                     digits: int = 2, full: str = "full") -> pd.DataFrame:
    """Which of the paper's PSNR drops hold here: per clip and component, SSP-NeRF's drop from removing it
    (full − w/o, Table 2) beside this study's, paired by seed (each run's eval rows of ``subset`` averaged, then the
    per-seed differences full − w/o: mean ± Student-t ``level`` interval). Verdict: "holds" where the interval lies
    above 0 (the paper's side: every one of its drops is positive), "reversed" below 0, "not resolved" across it;
    with one paired seed only the sign ("one seed: same sign" / "one seed: opposite sign"). ``full``: "full" or
    "full" + MEAN_LOSS, compared with the w/o variants of the same sampler loss (and with "w/o dynamic sampling",
    which has no sampler loss)."""
    suffix = full.removeprefix("full")
    runs = _run_metric(df, subset)
    rows = []
    for clip in runs.index.unique("clip"):
        for variant, paper in SSP_PAPER_PSNR.items():
            if variant == "full":
                continue
            paired = _paired(runs.loc[clip], full, variant + ("" if variant == "w/o dynamic sampling" else suffix),
                             level)
            if paired is None:
                continue
            n, mean, half = paired
            if n == 1:
                verdict = "one seed: " + ("same sign" if mean > 0 else "opposite sign")
            else:
                verdict = "holds" if mean - half > 0 else "reversed" if mean + half < 0 else "not resolved"
            rows.append({"clip": clip, "component": variant.removeprefix("w/o "),
                         "paper: full − w/o (dB)": round(SSP_PAPER_PSNR["full"] - paper, digits),
                         "here: full − w/o (dB)": fmt_ci(mean, half, digits), "seeds": n, "verdict": verdict})
    columns = ["clip", "component", "paper: full − w/o (dB)", "here: full − w/o (dB)", "seeds", "verdict"]
    return pd.DataFrame(rows, columns=columns).set_index(["clip", "component"])


def variant_contrast(df: pd.DataFrame, a: str, b: str, metrics: Sequence[str] = ("psnr", "lmd"),
                     subset="reconstruction", level: float = 0.95, digits: int = 2) -> pd.DataFrame:
    """SSP-NeRF ablation variant a − variant b (ssp_variant): :func:`paired_contrast` over the variants, e.g. the
    total-loss sampler against the mean-loss one (a="full", b="full" + MEAN_LOSS)."""
    return paired_contrast(df, "variant", a, b, metrics, subset, level, digits)


def paired_contrast(df: pd.DataFrame, column: str, a: str, b: str, metrics: Sequence[str] = ("psnr", "lmd"),
                    subset="reconstruction", level: float = 0.95, digits: int = 2) -> pd.DataFrame:
    """Rows with ``column`` = a minus rows with ``column`` = b per clip, paired by seed (each run's rows of
    ``subset`` averaged; each of ``metrics``: mean ± Student-t ``level`` interval of the per-seed differences;
    columns named as the results tables name them; n/a for a metric the table lacks). ``column``: a results column
    (e.g. head_pose: "stabilized" − "fitted") or "variant" (the SSP-NeRF ablation variant, ssp_variant)."""
    names = [label(m) for m in metrics]
    rows = []
    for metric, name in zip(metrics, names):
        if metric not in df:  # a table without the metric: n/a
            continue
        runs = _run_metric(df, subset, metric, column)
        for clip in runs.index.unique("clip"):
            paired = _paired(runs.loc[clip], a, b, level)
            if paired is not None:
                n, mean, half = paired
                rows.append({"clip": clip, "contrast": f"{a} − {b}", "metric": name,
                             "difference": fmt_ci(mean, half, digits), "seeds": n})
    if not rows:
        return pd.DataFrame(columns=["clip", "contrast", *names, "seeds"]).set_index(["clip", "contrast"])
    long = pd.DataFrame(rows)
    table = long.pivot(index=["clip", "contrast"], columns="metric", values="difference")
    table = table.reindex(columns=names).fillna("n/a")
    table.columns.name = None
    return table.assign(seeds=long.groupby(["clip", "contrast"])["seeds"].min())


def torso_table(df: pd.DataFrame, metrics: Sequence[str] = FULL_FRAME_METRICS, subset: str = "reconstruction",
                digits: int = 2) -> pd.DataFrame:
    """Rows preset × torso option (the presets in paper order), a column per metric."""
    table = spaces_table(df, metrics, subset, digits=digits, by=("experiment", "torso"))
    rank = {p: i for i, p in enumerate(PRESET_ORDER)}
    return table.iloc[sorted(range(len(table)), key=lambda i: (rank.get(table.index[i][0], len(rank)),
                                                               table.index[i][1] != "gt"))]


def tables_markdown(title: str, table: pd.DataFrame, note: str = "") -> str:
    """One results page: a title, a note (settings, machine, date) and the table."""
    return f"# {title}\n\n{note.strip()}\n\n{markdown_table(table)}\n"
