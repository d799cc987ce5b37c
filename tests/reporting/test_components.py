"""The renderer-part study tables: ablation rows labelled by their components, ordered as SSP-NeRF's Table 2 with
its PSNR beside them; torso-option rows per preset, the ground-truth torso first."""

import pandas as pd

from lipspace.reporting.components import (
    MEAN_LOSS,
    ablation_table,
    ablation_verdict,
    ssp_variant,
    tables_markdown,
    torso_table,
    variant_contrast,
)
from lipspace.reporting.results_stats import load_results


def _rows(tmp_path, records):
    path = tmp_path / "results.csv"
    pd.DataFrame(records).to_csv(path, index=False)
    return load_results(path)  # through the CSV: booleans come back as the table holds them


def _ssp(seed, deform=True, semantic=0.04, sampling="semantic", codes=16, psnr=30.0, class_loss="total"):
    return {"run_dir": f"r_{deform}_{semantic}_{sampling}_{codes}_{class_loss}_{seed}", "study": "ssp_ablation",
            "conditioner": "deepspeech", "renderer": "triplane", "experiment": "sspnerf", "seed": seed,
            "dataset": "/data/synthetic_128px_20s_seed0", "status": "ok", "eval_set": "test_tail", "driver": "audio",
            "torso": "deform", "torso_deform": deform, "semantic_weight": semantic, "sampling": sampling,
            "latent_codes": codes, "psnr": psnr + seed, "ssim": 0.9, "class_loss": class_loss}


def test_ablation_rows_are_labelled_by_their_components_in_the_papers_order(tmp_path):
    df = _rows(tmp_path, [_ssp(s, **kw) for s in (0, 1) for kw in (
        {}, {"deform": False, "psnr": 28.0}, {"semantic": 0.0}, {"sampling": "head_fraction"}, {"codes": 0},
        {"codes": 0, "deform": False})])
    labels = set(ssp_variant(df))
    assert labels == {"full", "w/o deformation", "w/o semantic branch", "w/o dynamic sampling", "w/o 3-D codes",
                      "w/o deformation + 3-D codes"}
    table = ablation_table(df, ["psnr", "ssim"])
    variants = [v for _, v in table.index]
    assert variants[:5] == ["full", "w/o deformation", "w/o semantic branch", "w/o dynamic sampling",
                            "w/o 3-D codes"]
    assert table.loc[("synthetic_128px_20s_seed0", "w/o deformation"), "PSNR ↑"].startswith("28.50 ± ")
    assert table["paper PSNR"].iloc[0] == 32.79
    assert "| full |" in tables_markdown("ablation", table).replace("synthetic_128px_20s_seed0 | ", "")


def test_verdict_pairs_seeds_and_says_which_of_the_papers_drops_hold(tmp_path):
    # full = 30 + seed; w/o deformation 1 dB lower in every seed (holds), w/o dynamic sampling 1 dB higher
    # (reversed), w/o semantic branch ±1 around full (not resolved); w/o 3-D codes has one seed only
    recs = [_ssp(s, psnr=30.0) for s in (0, 1, 2)]
    recs += [_ssp(s, deform=False, psnr=29.0 - 0.1 * s) for s in (0, 1, 2)]
    recs += [_ssp(s, sampling="head_fraction", psnr=31.0 + 0.1 * s) for s in (0, 1, 2)]
    recs += [_ssp(s, semantic=0.0, psnr=30.0 + (1.0, -1.0, 0.1)[s]) for s in (0, 1, 2)]
    recs += [_ssp(0, codes=0, psnr=30.5)]
    v = ablation_verdict(_rows(tmp_path, recs)).droplevel("clip")
    assert v.loc["deformation", "verdict"] == "holds" and v.loc["deformation", "seeds"] == 3
    assert v.loc["deformation", "here: full − w/o (dB)"].startswith("1.10 ± ")  # paired: the seed offsets cancel
    assert v.loc["deformation", "paper: full − w/o (dB)"] == 5.32
    assert v.loc["dynamic sampling", "verdict"] == "reversed"
    assert v.loc["semantic branch", "verdict"] == "not resolved"
    assert v.loc["3-D codes", "verdict"] == "one seed: opposite sign" and v.loc["3-D codes", "seeds"] == 1
    assert ablation_verdict(_rows(tmp_path, [_ssp(0, deform=False)])).empty  # no full run: nothing to compare


def test_mean_loss_sampler_runs_are_their_own_variants_compared_like_for_like(tmp_path):
    # full (total loss, the preset) = 30 + seed; full with the mean-loss sampler 0.5 dB below it in every seed (rows
    # from before the class_loss column have it empty: they sampled by the mean); sampling off (no class loss) 1 dB
    # above full; w/o deformation with the mean-loss sampler 1 dB below full with it
    recs = [_ssp(s, psnr=30.0) for s in (0, 1, 2)]
    recs += [_ssp(s, psnr=29.5 - 0.01 * s, class_loss=loss) for s, loss in ((0, "mean"), (1, None), (2, "mean"))]
    recs += [_ssp(s, sampling="head_fraction", psnr=31.0, class_loss=None) for s in (0, 1, 2)]
    recs += [_ssp(s, deform=False, psnr=28.49 - 0.01 * s + (0.1, -0.1, 0.0)[s], class_loss="mean") for s in (0, 1, 2)]
    df = _rows(tmp_path, recs)
    assert set(ssp_variant(df)) == {"full", "full" + MEAN_LOSS, "w/o dynamic sampling",
                                    "w/o deformation" + MEAN_LOSS}
    table = ablation_table(df, ["psnr"])
    assert [v for _, v in table.index] == ["full", "full" + MEAN_LOSS, "w/o deformation" + MEAN_LOSS,
                                           "w/o dynamic sampling"]
    assert table["paper PSNR"].tolist() == [32.79, 32.79, 27.47, 29.51]
    v = ablation_verdict(df).droplevel("clip")
    assert list(v.index) == ["dynamic sampling"]  # no w/o deformation with the total-loss sampler
    assert v.loc["dynamic sampling", "verdict"] == "reversed"
    m = ablation_verdict(df, full="full" + MEAN_LOSS).droplevel("clip")
    assert list(m.index) == ["deformation", "dynamic sampling"]
    assert m.loc["deformation", "here: full − w/o (dB)"].startswith("1.01 ± ")  # like for like, not 1.5
    assert m.loc["deformation", "verdict"] == "holds"
    c = variant_contrast(df, "full", "full" + MEAN_LOSS, metrics=["psnr", "ssim", "lmd"]).droplevel("clip")
    assert list(c.columns) == ["PSNR ↑", "SSIM ↑", "LMD ↓", "seeds"] and c["seeds"].iloc[0] == 3
    assert c["LMD ↓"].iloc[0] == "n/a"  # these rows have no lmd column
    assert c["PSNR ↑"].iloc[0].startswith("0.51 ± ") and c["SSIM ↑"].iloc[0].startswith("0.00 ± ")
    assert variant_contrast(df, "full", "w/o 3-D codes").empty  # no such runs: nothing to pair


def test_torso_table_puts_presets_in_paper_order_gt_first(tmp_path):
    recs = []
    for preset, own in (("sspnerf", "deform"), ("adnerf", "nerf"), ("lipnerf", "gt")):
        for torso in {own, "gt"}:
            recs.append({**_ssp(0), "run_dir": f"{preset}_{torso}", "experiment": preset, "torso": torso,
                         "psnr": 30.0 if torso == "gt" else 29.0})
    table = torso_table(_rows(tmp_path, recs), ["psnr"])
    assert list(table.index) == [("lipnerf", "gt"), ("adnerf", "gt"), ("adnerf", "nerf"), ("sspnerf", "gt"),
                                 ("sspnerf", "deform")]
