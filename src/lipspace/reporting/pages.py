"""The renderer-part studies' results pages, each one command: the page's header (title, settings, machine, date and
what the numbers say, written by whoever ran the study) is kept beside it as ``<page>.note.md``; the tables under it
are written from the study's results table by this module, so a page never holds a number no command regenerates:

    python -m lipspace.reporting.pages ablation  experiments/ssp_ablation/results/results_real.csv \\
        experiments/ssp_ablation/results/ablation_real.md
    python -m lipspace.reporting.pages torso     experiments/torso_options/results/results_real.csv \\
        experiments/torso_options/results/torso_real.md
    python -m lipspace.reporting.pages head_sync experiments/head_sync/results/results_real.csv \\
        experiments/head_sync/results/head_sync_real.md

(reads ``<page>.note.md``, writes ``<page>``.)"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from lipspace.reporting.analysis import spaces_table
from lipspace.reporting.components import (FULL_FRAME_METRICS, MEAN_LOSS, PRESET_ORDER, ablation_table,
                                           ablation_verdict, paired_contrast, ssp_variant, torso_table, variant_rank)
from lipspace.reporting.real_clips import markdown_table
from lipspace.reporting.results_stats import clip_name, load_results
from lipspace.utils.errors import LipspaceError

CONTRAST_METRICS = ("psnr", "lpips", "lmd", "mouth_psnr")
WORSE_IF_HIGHER = "LPIPS and LMD: lower is better, so a negative difference favours"


def audio_tail(d: pd.DataFrame) -> pd.Series:
    """The held-out tail driven by the clip's audio: the rows every renderer-part page reports."""
    return (d["eval_set"] == "test_tail") & (d["driver"] == "audio")


def audio_driven(d: pd.DataFrame) -> pd.Series:
    """Every eval set driven by its audio (the held-out tail and held-out utterances, averaged per run)."""
    return d["driver"] == "audio"


def _section(title: str, intro: str, table: pd.DataFrame) -> str:
    return f"\n## {title}\n\n{intro}\n\n{markdown_table(table)}\n"


def ablation_page(df: pd.DataFrame) -> str:
    """SSP-NeRF's Table 2: every variant (``ablation_table``), which of the paper's drops hold (``ablation_verdict``)
    and every metric paired by seed, full − each w/o variant (``paired_contrast``); "full" is the preset's run, or
    the mean-loss sampler's (MEAN_LOSS) in a table of that study alone, compared with the w/o variants of its
    sampler; with both, a section comparing the two samplers."""
    present = set(ssp_variant(df[audio_tail(df)]))
    full = "full" if "full" in present else "full" + MEAN_LOSS
    suffix = full.removeprefix("full")
    body = markdown_table(ablation_table(df, subset=audio_tail)) + "\n"
    body += _section("Which of the paper's drops hold here (PSNR, paired by seed)",
                     "full − w/o per seed, mean ± 95 % Student-t interval over the paired seeds; holds: the interval "
                     "lies above 0 (the paper's side), reversed: below 0, not resolved: it spans 0. Written by "
                     "`lipspace.reporting.components.ablation_verdict`.",
                     ablation_verdict(df, subset=audio_tail, full=full))
    same_sampler = [v for v in sorted(present, key=variant_rank) if v.startswith("w/o ") and (
        v == "w/o dynamic sampling" or (v.endswith(MEAN_LOSS) if suffix else not v.endswith(MEAN_LOSS)))]
    contrasts = [paired_contrast(df, "variant", full, v, CONTRAST_METRICS, audio_tail, digits=3)
                 for v in same_sampler]
    if contrasts:
        body += _section("Every metric, paired by seed",
                         f"full − w/o per seed, mean ± 95 % Student-t interval ({WORSE_IF_HIGHER} the full model). "
                         "Written by `lipspace.reporting.components.paired_contrast`.", pd.concat(contrasts))
    if {"full", "full" + MEAN_LOSS} <= present:
        body += _section("The sampler's class loss: total (the preset) against mean (paired by seed)",
                         "`full` follows each class's total loss in the frame (`data.class_loss=total`, the preset "
                         "since d4541d6); `full (mean-loss sampler)` its mean loss per pixel (the preset before). "
                         "Written by `lipspace.reporting.components.paired_contrast`.",
                         paired_contrast(df, "variant", "full", "full" + MEAN_LOSS, ("psnr", "lmd"), audio_tail))
    return body


def torso_page(df: pd.DataFrame) -> str:
    """Each preset's torso options (``torso_table``, the ground-truth torso first) and, per preset with its
    modelled torso and torso=gt on the same seeds, modelled − gt paired by seed; rows: every eval set driven by
    its audio, averaged per run."""
    body = markdown_table(torso_table(df, subset=audio_driven)) + "\n"
    contrasts = []
    rank = {p: i for i, p in enumerate(PRESET_ORDER)}
    groups = df[audio_driven(df)].groupby("experiment", sort=False)
    for preset, rows in sorted(groups, key=lambda g: rank.get(g[0], len(rank))):
        for option in (o for o in dict.fromkeys(rows["torso"]) if o != "gt"):
            table = paired_contrast(rows, "torso", option, "gt", CONTRAST_METRICS, audio_driven, digits=2)
            table = table.assign(experiment=preset).reset_index()
            contrasts.append(table.set_index(["experiment", "clip", "contrast"]))
    if any(len(t) for t in contrasts):
        body += _section("Modelled torso − pasted torso, paired by seed",
                         f"Per preset, its modelled torso − torso=gt on the same seeds, mean ± 95 % Student-t interval "
                         f"(n/a with one seed; {WORSE_IF_HIGHER} the modelled torso). Written by "
                         "`lipspace.reporting.components.paired_contrast`.", pd.concat(contrasts))
    return body


def pose_jitter_table(df: pd.DataFrame) -> pd.DataFrame:
    """Pose jitter (``lipspace.prep.camera.pose_jitter`` over the valid frames) of each head_pose's dataset, read
    from the dataset directory the rows name; a dataset not on this machine gets NaN and its path in ``missing``."""
    from lipspace.prep.camera import pose_jitter

    rows = []
    for pose, dataset in df.groupby("head_pose")["dataset"].first().items():
        tracks = Path(dataset) / "tracks.npz"
        row = {"head_pose": pose, "clip": clip_name(dataset)}
        if tracks.is_file():
            with np.load(tracks) as t:
                jitter = pose_jitter(t["pose"], t["valid"])
            row |= {"rotation acc. mean (deg)": f"{jitter['rot_acc_deg_mean']:.4f}",
                    "rotation acc. p95 (deg)": f"{jitter['rot_acc_deg_p95']:.4f}",
                    "translation acc. mean": f"{jitter['trans_acc_mean']:.5f}",
                    "translation acc. p95": f"{jitter['trans_acc_p95']:.5f}"}
        else:
            row["missing"] = f"{tracks} not on this machine (re-prepare it to recompute)"
        rows.append(row)
    return pd.DataFrame(rows).set_index("head_pose")


def head_sync_page(df: pd.DataFrame) -> str:
    """The Head-Sync Stabilizer judged by rendering: every metric per head pose × driver, the two pose tracks' jitter
    and stabilized − fitted paired by seed (the two datasets are one clip prepared twice, so they pair)."""
    body = markdown_table(spaces_table(df, FULL_FRAME_METRICS, "reconstruction", digits=2,
                                       by=("head_pose", "driver"))) + "\n"
    body += _section("Pose jitter of the two pose tracks",
                     "Frame-to-frame acceleration of each dataset's `pose` track "
                     "(`lipspace.prep.camera.pose_jitter`, valid frames; translation in head-space units).",
                     pose_jitter_table(df))
    one_clip = df.assign(dataset=" + ".join(sorted(df["dataset"].map(clip_name).dropna().unique())))
    body += _section("Paired by seed (audio-driven tail)",
                     f"stabilized − fitted per seed, mean ± 95 % Student-t interval ({WORSE_IF_HIGHER} the "
                     "stabilised pose). Written by `lipspace.reporting.components.paired_contrast`.",
                     paired_contrast(one_clip, "head_pose", "stabilized", "fitted",
                                     ("psnr", "ssim", "lpips", "lmd", "mouth_psnr"), audio_tail, digits=3))
    return body


PAGES: dict[str, Callable[[pd.DataFrame], str]] = {"ablation": ablation_page, "torso": torso_page,
                                                   "head_sync": head_sync_page}


def write_page(kind: str, results: list[Path], page: Path) -> str:
    """``page`` = ``<page>.note.md`` (its header) + the tables of ``kind`` from the ``results`` tables (e.g. a study
    and the earlier runs it is compared with); returns the text."""
    if kind not in PAGES:
        raise LipspaceError(f"unknown page {kind!r}: one of {sorted(PAGES)}")
    note = page.with_suffix(".note.md")
    if not note.is_file():
        raise LipspaceError(f"{note}: the page's header is missing; write it (a '# title' line, then the settings, "
                            f"machine, date and what the numbers say) and run again")
    for path in results:
        if not path.is_file():
            raise LipspaceError(f"{path}: no results table; run the study's sweep first (its README says how)")
    text = note.read_text().rstrip() + "\n\n" + PAGES[kind](load_results(*results))
    page.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lipspace.reporting.pages", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=sorted(PAGES))
    parser.add_argument("results", type=Path, nargs="+", help="the study's results tables (CSV)")
    parser.add_argument("page", type=Path, help="the page to write (.md); its header is read from <page>.note.md")
    args = parser.parse_args(argv)
    write_page(args.kind, args.results, args.page)
    print(f"wrote {args.page}")


if __name__ == "__main__":
    main()
