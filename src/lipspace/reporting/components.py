"""Tables of the renderer-part studies: SSP-NeRF's Table-2 ablation (experiments/ssp_ablation: which variant a row
is, from its component columns) and the torso options (experiments/torso_options: each preset with its paper's
torso against torso=gt), mean ± 95 % CI over seeds of the full-frame metrics, as markdown."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from lipspace.reporting.analysis import spaces_table
from lipspace.reporting.real_clips import markdown_table
from lipspace.reporting.results_stats import clip_name

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
