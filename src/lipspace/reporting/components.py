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
from lipspace.reporting.results_stats import clip_name, fmt_ci, subset_rows

# SSP-NeRF's Table 2 (PSNR, its May / Obama average) for the same variants
SSP_PAPER_PSNR = {"full": 32.79, "w/o deformation": 27.47, "w/o semantic branch": 29.48,
                  "w/o dynamic sampling": 29.51, "w/o 3-D codes": 31.06}
FULL_FRAME_METRICS = ["psnr", "ssim", "lpips", "lmd", "mouth_psnr", "baseline_mean_frame_psnr"]
PRESET_ORDER = ["lipnerf", "adnerf", "dfanerf", "synctalk", "sspnerf"]


def ssp_variant(df: pd.DataFrame) -> pd.Series:
    """Which ablation variant each row is, from the component columns run.json records (semantic_weight, sampling,
    torso_deform, latent_codes): "full", "w/o <component>", or the components turned off joined by " + "."""
    def one(r) -> str:
        off = [name for name, is_off in (
            ("deformation", r.get("torso_deform") is False or str(r.get("torso_deform")) == "False"),
            ("semantic branch", float(r.get("semantic_weight") or 0.0) == 0.0),
            ("dynamic sampling", r.get("sampling") != "semantic"),
            ("3-D codes", float(r.get("latent_codes") or 0) == 0)) if is_off]
        return "full" if not off else "w/o " + " + ".join(off)
    return df.apply(one, axis=1) if len(df) else pd.Series(dtype="string")


def ablation_table(df: pd.DataFrame, metrics: Sequence[str] = FULL_FRAME_METRICS, subset: str = "reconstruction",
                   digits: int = 2) -> pd.DataFrame:
    """Rows clip × variant (full first, then the paper's order), a column per metric, plus the paper's PSNR."""
    d = df.assign(variant=ssp_variant(df), clip=df["dataset"].map(clip_name) if "dataset" in df else "")
    table = spaces_table(d, metrics, subset, digits=digits, by=("clip", "variant"))
    order = {v: i for i, v in enumerate(SSP_PAPER_PSNR)}
    table = table.iloc[sorted(range(len(table)), key=lambda i: (table.index[i][0],
                                                                 order.get(table.index[i][1], len(order))))]
    table["paper PSNR"] = [SSP_PAPER_PSNR.get(v, float("nan")) for _, v in table.index]
    return table


def ablation_verdict(df: pd.DataFrame, subset: str = "reconstruction", level: float = 0.95,
                     digits: int = 2) -> pd.DataFrame:
    """Which of the paper's PSNR drops hold here: per clip and component, SSP-NeRF's drop from removing it
    (full − w/o, Table 2) beside this study's, paired by seed (each run's eval rows of ``subset`` averaged, then the
    per-seed differences full − w/o: mean ± Student-t ``level`` interval). Verdict: "holds" where the interval lies
    above 0 (the paper's side: every one of its drops is positive), "reversed" below 0, "not resolved" across it;
    with one paired seed only the sign ("one seed: same sign" / "one seed: opposite sign")."""
    d = subset_rows(df, subset)
    d = d.assign(variant=ssp_variant(d), clip=d["dataset"].map(clip_name))
    runs = d.groupby(["clip", "variant", "seed"])["psnr"].mean()  # one value per run
    rows = []
    for clip in runs.index.unique("clip"):
        per = runs.loc[clip]
        if "full" not in per.index.unique("variant"):
            continue
        full = per.loc["full"]
        for variant, paper in SSP_PAPER_PSNR.items():
            if variant == "full" or variant not in per.index.unique("variant"):
                continue
            wo = per.loc[variant]
            seeds = sorted(set(full.index) & set(wo.index))
            if not seeds:
                continue
            diff = np.array([full[s] - wo[s] for s in seeds])
            n, mean = len(diff), float(diff.mean())
            paper_drop = SSP_PAPER_PSNR["full"] - paper
            if n == 1:
                half, verdict = float("nan"), "one seed: " + ("same sign" if mean > 0 else "opposite sign")
            else:
                half = float(stats.t.ppf((1 + level) / 2, n - 1) * diff.std(ddof=1) / np.sqrt(n))
                verdict = "holds" if mean - half > 0 else "reversed" if mean + half < 0 else "not resolved"
            rows.append({"clip": clip, "component": variant.removeprefix("w/o "),
                         "paper: full − w/o (dB)": round(paper_drop, digits),
                         "here: full − w/o (dB)": fmt_ci(mean, half, digits), "seeds": n, "verdict": verdict})
    columns = ["clip", "component", "paper: full − w/o (dB)", "here: full − w/o (dB)", "seeds", "verdict"]
    return pd.DataFrame(rows, columns=columns).set_index(["clip", "component"])


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
