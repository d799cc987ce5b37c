"""The renderer-part studies' pages, one command each: a page is its hand-written header (<page>.note.md) plus tables
written from the results; paired contrasts over any results column; the head-sync page's pose jitter read from the
datasets the rows name."""

import numpy as np
import pandas as pd
import pytest

from lipspace.reporting.components import paired_contrast
from lipspace.reporting.pages import main, pose_jitter_table, write_page
from lipspace.reporting.results_stats import load_results
from lipspace.utils.errors import LipspaceError


def _row(seed, dataset, psnr, **kw):
    return {"run_dir": f"r_{dataset}_{kw}_{seed}", "study": "s", "conditioner": "deepspeech", "renderer": "triplane",
            "experiment": "synctalk", "seed": seed, "dataset": dataset, "status": "ok", "eval_set": "test_tail",
            "driver": "audio", "torso": "gt", "psnr": psnr, "ssim": 0.9, "lpips": 0.05, "lmd": 1.0,
            "mouth_psnr": 25.0, "baseline_mean_frame_psnr": 23.0} | kw


def _csv(tmp_path, records, name="results.csv"):
    path = tmp_path / name
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def test_paired_contrast_pairs_seeds_over_any_column(tmp_path):
    # one clip prepared twice: stabilized − fitted per seed is +1, +2, +3 dB
    recs = [_row(s, "/d/obama", 28.0 + s, head_pose="fitted") for s in range(3)]
    recs += [_row(s, "/d/obama", 29.0 + 2 * s, head_pose="stabilized") for s in range(3)]
    recs.append(_row(7, "/d/obama", 40.0, head_pose="stabilized"))  # no fitted twin: not paired
    table = paired_contrast(load_results(_csv(tmp_path, recs)), "head_pose", "stabilized", "fitted", ("psnr", "lmd"))
    half = 4.303 * 1.0 / np.sqrt(3)  # t(0.975, 2) x std(1, 2, 3) / sqrt(3)
    assert table.loc[("obama", "stabilized − fitted"), "PSNR ↑"] == f"2.00 ± {half:.2f}"
    assert table.loc[("obama", "stabilized − fitted"), "LMD ↓"] == "0.00 ± 0.00"
    assert table.loc[("obama", "stabilized − fitted"), "seeds"] == 3


def test_a_page_is_its_note_plus_tables_written_from_the_results(tmp_path):
    recs = []
    for preset, own in (("adnerf", "nerf"), ("sspnerf", "deform")):
        for torso, psnr in ((own, 25.0), ("gt", 30.0)):
            recs += [_row(s, "/d/obama", psnr + s, experiment=preset, torso=torso) for s in (0, 1)]
    recs.append(_row(0, "/d/obama", 10.0, experiment="adnerf", torso="nerf", driver="tracked_inputs"))  # not audio
    results, page = _csv(tmp_path, recs), tmp_path / "torso_real.md"
    with pytest.raises(LipspaceError, match="torso_real.note.md.*header is missing"):
        write_page("torso", [results], page)
    page.with_suffix(".note.md").write_text("# Torso options\n\nSettings, machine, date.\n")
    with pytest.raises(LipspaceError, match="no results table"):
        write_page("torso", [tmp_path / "none.csv"], page)
    main(["torso", str(results), str(page)])
    text = page.read_text()
    assert text.startswith("# Torso options\n\nSettings, machine, date.\n\n| experiment | torso |")
    assert "| adnerf | gt | 30.50 ± " in text and "| adnerf | nerf | 25.50 ± " in text  # audio rows only
    assert "## Modelled torso − pasted torso, paired by seed" in text
    assert "| adnerf | obama | nerf − gt | -5.00 ± 0.00 |" in text
    assert "| sspnerf | obama | deform − gt | -5.00 ± 0.00 |" in text
    with pytest.raises(LipspaceError, match="unknown page"):
        write_page("tables", [results], page)


def test_the_head_sync_page_reads_each_pose_tracks_jitter_from_its_dataset(tmp_path):
    steady = tmp_path / "obama_sync"
    steady.mkdir()
    pose = np.tile(np.eye(4), (10, 1, 1))
    pose[:, 0, 3] = np.arange(10) ** 2 * 0.01  # constant acceleration 0.02 per frame²
    np.savez(steady / "tracks.npz", pose=pose, valid=np.ones(10, bool))
    recs = [_row(s, str(tmp_path / "obama"), 28.0, head_pose="fitted") for s in range(2)]
    recs += [_row(s, str(steady), 28.5, head_pose="stabilized") for s in range(2)]
    df = load_results(_csv(tmp_path, recs))
    jitter = pose_jitter_table(df)
    assert jitter.loc["stabilized", "translation acc. mean"] == "0.02000"
    assert jitter.loc["stabilized", "rotation acc. mean (deg)"] == "0.0000"
    assert "not on this machine" in jitter.loc["fitted", "missing"]
    page = tmp_path / "head_sync_real.md"
    page.with_suffix(".note.md").write_text("# Head sync\n")
    text = write_page("head_sync", [_csv(tmp_path, recs)], page)
    assert "| obama + obama_sync | stabilized − fitted | 0.500 ± 0.000 |" in text


def _ssp(seed, psnr, deform=True, class_loss="total"):
    return _row(seed, "/d/obama", psnr, experiment="sspnerf", torso="deform", torso_deform=deform,
                semantic_weight=0.04, sampling="semantic", latent_codes=16, class_loss=class_loss)


def test_the_ablation_page_compares_full_with_the_variants_of_its_own_sampler(tmp_path):
    page = tmp_path / "ablation.md"
    page.with_suffix(".note.md").write_text("# Ablation\n")
    recs = [_ssp(s, 30.0 + s) for s in range(3)] + [_ssp(s, 25.0 + s, deform=False) for s in range(3)]
    text = write_page("ablation", [_csv(tmp_path, recs)], page)
    assert "| obama | deformation | 5.32 | 5.00 ± 0.00 | 3 | holds |" in text
    assert "| obama | full − w/o deformation | 5.000 ± 0.000 |" in text and "sampler's class loss" not in text
    # the mean-loss sampler's study alone: its full against its own w/o variants
    mean = [_ssp(s, 29.0, class_loss="mean") for s in range(2)] + [_ssp(s, 30.0, False, "mean") for s in range(2)]
    text = write_page("ablation", [_csv(tmp_path, mean, "mean.csv")], page)
    assert "| obama | full (mean-loss sampler) − w/o deformation (mean-loss sampler) | -1.000 ± 0.000 |" in text
    assert "| obama | deformation | 5.32 | -1.00 ± 0.00 | 2 | reversed |" in text
    # both: the two samplers compared
    text = write_page("ablation", [_csv(tmp_path, recs), _csv(tmp_path, mean, "mean.csv")], page)
    assert "| obama | full − full (mean-loss sampler) | 1.50 ± " in text
