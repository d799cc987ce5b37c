"""lipspace.reporting.analysis (seed statistics, tables, provenance, the real-clip still-frame table) and the analysis
notebooks, run with papermill."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lipspace.reporting import analysis as A
from lipspace.utils.errors import LipspaceError

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXPERIMENT = {"expression": "lipnerf", "deepspeech": "adnerf", "lipblink": "dfanerf", "blendshape_av": "synctalk"}
MOUTH_PSNR = {"expression": 30.0, "deepspeech": 27.0, "lipblink": 29.0, "blendshape_av": 28.0}


def write_results_fixture(path: Path, renderers=("mlp",), clips=(3.0, None), seeds=(0, 1)) -> Path:
    """A results table with the eval task's schema (a test fixture, not results): 4 conditioners x clips x seeds
    runs; lpips column absent, local LSE all NaN, one failed run (lipblink, shortest clip, last seed)."""
    rng = np.random.default_rng(0)
    prov = json.dumps({"psnr": "torchmetrics psnr, data_range=1", "mouth_region": "iBUG-68 points 48-67 box"})
    rows = []
    for cond, renderer, clip, seed in ((c, r, k, s) for c in EXPERIMENT for r in renderers for k in clips
                                       for s in seeds):
        run = {"study": "fixture", "conditioner": cond, "experiment": EXPERIMENT[cond], "renderer": renderer,
               "budget": "tiny", "max_steps": 100, "seed": seed, "dataset": "/data/synthetic_seed0",
               "dataset_name": "synthetic", "clip_seconds": clip, "train_seconds": clip or 18.0,
               "status": "ok", "error": None, "metric_provenance": prov, "eval_resolution": "64x64",
               "checkpoint": f"/runs/{cond}_{seed}/last.ckpt", "global_step": 100,
               "lse_model": "syncnet_v2 (fixture)", "lse_local_model": None, "lse_status": "ok"}
        if cond == "lipblink" and clip == clips[0] and seed == seeds[-1]:
            rows.append({**run, "status": "failed", "error": "RuntimeError: out of memory (fixture)"})
            continue
        short = clip is not None and clip < 10  # the expression advantage is larger for short clips
        sets = [("test_tail", "tracked_inputs"), ("heldout/utt_00", "audio"), ("heldout/utt_01", "audio"),
                ("heldout/utt_00", "oracle_inputs"), ("dub/speech_fr", "audio")]
        for eval_set, driver in sets:
            mouth = MOUTH_PSNR[cond] - (2.0 if short and cond != "expression" else 0.0) + rng.normal(0, 0.2)
            gt = not eval_set.startswith("dub/")
            rows.append({**run, "eval_set": eval_set, "driver": driver, "psnr": mouth + 5 if gt else np.nan,
                         "ssim": 0.95 if gt else np.nan, "mouth_psnr": mouth if gt else np.nan,
                         "baseline_mean_frame_mouth_psnr": 25.0 + (clip or 18.0) / 10 if gt else np.nan,
                         "lmd": 2.0 + rng.normal(0, 0.1) if gt else np.nan, "lse_d": 8.0 + rng.normal(0, 0.1),
                         "lse_c": 3.0 + rng.normal(0, 0.1), "lse_d_local": np.nan, "lse_c_local": np.nan,
                         "blink_rate": 0.3})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_real_results_fixture(path: Path, clips=("obama", "may"), seeds=(0, 1)) -> Path:
    """A real-clip results table with the eval task's schema (a test fixture, not results): the four presets on
    the tri-plane renderer x clips x seeds; the held-out tail by tracked inputs (expression, lipblink) and by audio,
    one dub; every space but deepspeech beats the still frame on both clips (deepspeech: only on the first clip);
    one failed run (blendshape_av, last clip, last seed)."""
    rng = np.random.default_rng(1)
    prov = json.dumps({"psnr": "torchmetrics psnr, data_range=1", "lip_open_corr": "inner-lip opening (fixture)"})
    rows = []
    for cond, clip, seed in ((c, k, s) for c in EXPERIMENT for k in clips for s in seeds):
        run = {"study": "conditioning_spaces", "conditioner": cond, "experiment": EXPERIMENT[cond],
               "renderer": "triplane", "budget": "tiny", "max_steps": 3000, "seed": seed,
               "dataset": f"/tmp/lipspace_prep/{clip}", "dataset_name": clip, "clip_seconds": None,
               "train_seconds": 18.0, "status": "ok", "error": None, "metric_provenance": prov,
               "lse_local_model": "locally trained AVE (fixture), NOT SyncNet", "lse_status": "not computed"}
        if cond == "blendshape_av" and clip == clips[-1] and seed == seeds[-1]:
            rows.append({**run, "status": "failed", "error": "RuntimeError: out of memory (fixture)"})
            continue
        gain = -1.0 if cond == "deepspeech" and clip != clips[0] else 1.0
        drivers = ["tracked_inputs", "audio"] if cond in ("expression", "lipblink") else ["audio"]
        for eval_set, driver in [*(("test_tail", d) for d in drivers), ("dub/dub_de_1", "audio")]:
            gt = eval_set == "test_tail"
            g = (2.0 if driver == "tracked_inputs" else gain) + rng.normal(0, 0.1)
            rows.append({**run, "eval_set": eval_set, "driver": driver,
                         "psnr": 28.0 + g if gt else np.nan, "mouth_psnr": 24.0 + g if gt else np.nan,
                         "baseline_mean_frame_psnr": 28.0 if gt else np.nan,
                         "baseline_mean_frame_mouth_psnr": 24.0 if gt else np.nan,
                         "lmd": 1.5 + rng.normal(0, 0.1) if gt else np.nan,
                         "lip_open_corr": 0.4 + rng.normal(0, 0.05) if gt else np.nan,
                         "lip_audio_corr": 0.2 + rng.normal(0, 0.05), "lip_audio_corr_gt": 0.25 if gt else np.nan,
                         "lip_audio_lag_s": 0.04, "lse_d_local": 8.0 + rng.normal(0, 0.1),
                         "lse_c_local": 2.0 + rng.normal(0, 0.1), "lse_local_seen": False})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _runs(values: dict[int, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"conditioner": "expression", "seed": s, "eval_set": f"heldout/u{i}", "psnr": v,
                          "status": "ok", "clip_label": "full"} for s, vs in values.items() for i, v in enumerate(vs)])


def test_mean_ci_averages_within_a_run_then_student_t_over_seeds():
    s = A.mean_ci(_runs({0: [10, 12], 1: [13, 13], 2: [14, 16]}), ["conditioner"], "psnr").iloc[0]
    lo, hi = stats.t.interval(0.95, 2, loc=13.0, scale=2.0 / math.sqrt(3))  # run means 11, 13, 15
    assert (s["mean"], s["std"], s["n"]) == (13.0, 2.0, 3)
    assert s["ci_low"] == pytest.approx(lo) and s["ci_high"] == pytest.approx(hi)
    assert s["half_width"] == pytest.approx((hi - lo) / 2)
    s90 = A.mean_ci(_runs({0: [10, 12], 1: [13, 13], 2: [14, 16]}), "conditioner", "psnr", level=0.9).iloc[0]
    assert s90["half_width"] == pytest.approx(stats.t.ppf(0.95, 2) * 2.0 / math.sqrt(3))


def test_one_seed_gives_nan_half_width_not_a_crash():
    s = A.mean_ci(_runs({0: [10, 12]}), ["conditioner"], "psnr").iloc[0]
    assert s["mean"] == 11.0 and s["n"] == 1 and math.isnan(s["half_width"]) and math.isnan(s["ci_low"])
    assert A.fmt_ci(s["mean"], s["half_width"]) == "11.00 ± n/a (1 seed)"


def test_clip_lengths_are_ordered_numerically_with_full_last(tmp_path):
    path = write_results_fixture(tmp_path / "r.csv", clips=(20.0, 3.0, None, 10.0, 5.0), seeds=(0,))
    df = A.load_results(path)
    assert A.clip_labels(df) == ["3 s", "5 s", "10 s", "20 s", "full"]
    table = A.clip_length_table(df, "mouth_psnr")
    assert list(table.columns) == ["3 s", "5 s", "10 s", "20 s", "full"]
    assert list(table.index) == ["expression", "deepspeech", "lipblink", "blendshape_av"]


def test_failed_rows_are_listed_and_left_out_of_statistics(tmp_path):
    df = A.load_results(write_results_fixture(tmp_path / "r.csv"))
    failed = A.failed_runs(df)
    assert len(failed) == 1 and failed.loc[0, "conditioner"] == "lipblink" and "out of memory" in failed.loc[0, "error"]
    s = A.mean_ci(A.subset_rows(df, "heldout_audio"), ["conditioner", "clip_label"], "mouth_psnr")
    n = s.set_index(["conditioner", "clip_label"])["n"]
    assert n[("lipblink", "3 s")] == 1 and n[("expression", "3 s")] == 2
    assert len(A.ok(df)) == len(df) - 1


def test_subsets_tables_and_unavailable_metrics(tmp_path):
    df = A.load_results(write_results_fixture(tmp_path / "r.csv", renderers=("mlp", "triplane")))
    assert set(A.subset_rows(df, "heldout_audio")["driver"]) == {"audio"}
    assert set(A.subset_rows(df, "dubbed")["eval_set"]) == {"dub/speech_fr"}
    table = A.spaces_table(df, ["psnr", "lpips", "lse_d_local"], "reconstruction")
    assert list(table.columns) == ["PSNR ↑", "LPIPS ↓", "LSE-D (local) ↓"]
    assert len(table) == 8 and (table["LPIPS ↓"] == "n/a").all()
    assert set(table.attrs["unavailable"]) == {"lpips", "lse_d_local"}
    with pytest.raises(A.MetricUnavailable, match="all NaN"):
        A.mean_ci(df, "conditioner", "lse_c_local")
    gap = A.gap_by_clip(df, "mouth_psnr")
    assert list(gap.index) == ["3 s", "full"] and (gap > 0).all().all()
    prov = A.provenance(df)
    assert {"psnr", "mouth_region", "lse_model"} <= set(prov["what"])
    assert "syncnet_v2 (fixture)" in set(prov["provenance"])


def test_gain_over_the_mean_frame_baseline_is_per_row(tmp_path):
    df = A.load_results(write_results_fixture(tmp_path / "r.csv"))
    gt = df[df.mouth_psnr.notna()]
    assert np.allclose(gt.mouth_psnr_over_baseline, gt.mouth_psnr - gt.baseline_mean_frame_mouth_psnr)
    assert df.loc[df.mouth_psnr.isna(), "mouth_psnr_over_baseline"].isna().all()
    assert "psnr_over_baseline" not in df  # no frame baseline column in the fixture: no derived column


def test_missing_file_error_names_file_and_producer(tmp_path):
    with pytest.raises(LipspaceError, match="nope.csv") as e:
        A.load_results(tmp_path / "nope.csv")
    assert "lipspace-eval" in str(e.value)
    study_table = tmp_path / "experiments" / "clip_length" / "results" / "results_synthetic.csv"
    with pytest.raises(LipspaceError, match="results_synthetic.csv: results table not found") as e:
        A.load_results(write_results_fixture(tmp_path / "r.csv"), study_table)
    assert "--config-dir experiments/clip_length --config-name sweep_synthetic" in str(e.value)


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A 'python3' kernelspec for this interpreter in a temporary JUPYTER_PATH: no registration, no home writes."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _text_outputs(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") + o.get("data", {}).get("text/plain", ""))
    return "\n".join(out)


@pytest.mark.parametrize("name,write,expected", [
    ("clip_length", write_results_fixture,
     ["mouth PSNR ↑ vs clip length", "3 s", "full", "LSE-D ↓ (official SyncNet LSE)",
      "locally trained sync expert, not comparable to published LSE", "not available:", "out of memory (fixture)",
      "syncnet_v2 (fixture)", "claim holds: True", "Dubbed audio: LSE-D ↓", "Dubbed audio: face found",
      "mouth PSNR over the mean training frame ↑"]),
    ("conditioning_spaces", lambda p: write_results_fixture(p, renderers=("mlp", "triplane")),
     ["Table I, reconstruction", "Table I, held-out audio-driven", "PSNR ↑", "SSIM ↑", "LPIPS ↓", "mouth PSNR ↑",
      "LMD ↓", "LSE-C ↑", "triplane", "not available: lpips", "Dubbed audio"]),
    ("real_clips", write_real_results_fixture,
     ["out of memory (fixture)", "inner-lip opening (fixture)", "still frame: mouth PSNR", A.BEATS,
      "lip-opening corr. with GT ↑", "lip–audio corr. (lag 0) ↑", "LSE-D (local) ↓", "dub/dub_de_1",
      "tracked_inputs", "expression / obama: driven by audio beats the still frame on PSNR and mouth PSNR: yes (2/2",
      "deepspeech / may: driven by audio beats the still frame on PSNR and mouth PSNR: no (0/2",
      "blendshape_av / may: driven by audio beats the still frame on PSNR and mouth PSNR: yes (PSNR",
      "beats the still frame on both: 7 of 8 space × clip pairs",
      "(the issue's criterion): 7 of 8 pairs with that measure",
      "local LSE scored on sequences the sync expert trained on: 0 row(s)"]),
])
def test_notebook_runs_on_a_results_table(name, write, expected, tmp_path, kernel_env):
    papermill = pytest.importorskip("papermill")
    results = write(tmp_path / "results.csv")
    nb = papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(tmp_path / f"{name}.out.ipynb"),
                                    parameters={"results": [str(results)], "out_dir": str(tmp_path / "out")},
                                    kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False)
    text = _text_outputs(nb)
    for header in expected:
        assert header in text, header
    assert "not available: mouth_psnr_over_baseline" not in text  # derived from the baseline column
    assert any(p.suffix == ".png" for p in (tmp_path / "out").iterdir())


@pytest.mark.parametrize("name", ["clip_length", "conditioning_spaces", "real_clips"])
def test_notebooks_are_saved_clean_with_a_kernelspec(name):
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    assert nb["metadata"]["kernelspec"] == {"name": "python3", "display_name": "Python 3", "language": "python"}
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert "parameters" in code[0]["metadata"].get("tags", [])


def test_heldout_audio_falls_back_to_the_audio_driven_tail_of_a_clip_without_utterances():
    from lipspace.reporting.analysis import subset_rows

    rows = pd.DataFrame([
        {"dataset": "syn", "eval_set": "test_tail", "driver": "audio", "psnr": 1.0},
        {"dataset": "syn", "eval_set": "heldout/u0", "driver": "audio", "psnr": 2.0},
        {"dataset": "syn", "eval_set": "heldout/u0", "driver": "oracle_inputs", "psnr": 3.0},
        {"dataset": "real", "eval_set": "test_tail", "driver": "audio", "psnr": 4.0},
        {"dataset": "real", "eval_set": "test_tail", "driver": "tracked_inputs", "psnr": 5.0},
        {"dataset": "real", "eval_set": "dub/de", "driver": "audio", "psnr": 6.0},
    ])
    assert sorted(subset_rows(rows, "heldout_audio").psnr) == [2.0, 4.0]


# ------------------------------------------------------------------------------------------ real clips: still frame
def _real_rows() -> pd.DataFrame:
    """Hand-made real-clip rows with known values: expression on obama over 2 seeds (tail by tracked inputs and by
    audio, one dub), deepspeech on obama and blendshape_av on may with one seed, lipblink with a dub only, a failed
    expression run and a held-out utterance row (both left out)."""
    nan = np.nan
    base = {"psnr": nan, "mouth_psnr": nan, "baseline_mean_frame_psnr": nan, "baseline_mean_frame_mouth_psnr": nan,
            "lmd": nan, "lip_open_corr": nan, "lse_d_local": nan, "lse_c_local": nan, "lip_audio_corr": nan,
            "lip_audio_corr_gt": nan, "status": "ok", "renderer": "triplane"}
    still = {"baseline_mean_frame_psnr": 25.0, "baseline_mean_frame_mouth_psnr": 24.0}

    def row(cond, clip, seed, eval_set, driver, **v):
        root = {"obama": "/tmp/lipspace_prep/obama", "may": "data/real/may/"}[clip]
        return {**base, "conditioner": cond, "dataset": root, "seed": seed, "eval_set": eval_set, "driver": driver,
                **v}

    return pd.DataFrame([
        row("expression", "obama", 0, "test_tail", "tracked_inputs", psnr=30.0, mouth_psnr=26.0, **still, lmd=2.0,
            lip_open_corr=0.5, lip_audio_corr=0.2, lip_audio_corr_gt=0.3),
        row("expression", "obama", 1, "test_tail", "tracked_inputs", psnr=32.0, mouth_psnr=28.0, **still, lmd=3.0,
            lip_open_corr=0.7, lip_audio_corr=0.3, lip_audio_corr_gt=0.3),
        row("expression", "obama", 0, "test_tail", "audio", psnr=26.0, mouth_psnr=25.0, **still,  # beats
            lip_open_corr=0.4),
        row("expression", "obama", 1, "test_tail", "audio", psnr=24.0, mouth_psnr=23.0, **still,  # does not
            lip_open_corr=-0.1),
        row("expression", "obama", 0, "dub/dub_de_1", "audio", lse_d_local=7.0, lse_c_local=2.0, lip_audio_corr=0.1),
        row("expression", "obama", 1, "dub/dub_de_1", "audio", lse_d_local=8.0, lse_c_local=4.0),
        row("expression", "obama", 2, "test_tail", "audio", psnr=99.0, mouth_psnr=99.0, **still, status="failed"),
        row("expression", "obama", 0, "heldout/utt_00", "audio", psnr=99.0, mouth_psnr=99.0, **still),
        row("deepspeech", "obama", 0, "test_tail", "audio", psnr=27.0, mouth_psnr=25.0, **still),
        row("lipblink", "obama", 0, "dub/dub_de_1", "audio", lip_audio_corr=-0.05),
        row("blendshape_av", "may", 0, "test_tail", "audio", psnr=29.0, mouth_psnr=20.0,
            baseline_mean_frame_psnr=28.0, baseline_mean_frame_mouth_psnr=22.0),
    ])


def test_real_clip_table_mean_std_over_seeds_and_the_still_frame_verdict():
    table = A.real_clip_table(_real_rows())
    cols = ["n (seeds)", "PSNR ↑", "mouth PSNR ↑", "still frame: PSNR", "still frame: mouth PSNR", A.BEATS, "LMD ↓",
            "lip-opening corr. with GT ↑", "LSE-D (local) ↓", "LSE-C (local) ↑", "lip–audio corr. (lag 0) ↑",
            "lip–audio corr. of the GT (ceiling)"]
    na = "n/a"
    expected = pd.DataFrame(
        [[2, "31.00 ± 1.41", "27.00 ± 1.41", "25.00 ± 0.00", "24.00 ± 0.00", "yes (2/2 seeds)", "2.50 ± 0.71",
          "0.60 ± 0.14", na, na, "0.25 ± 0.07", "0.30 ± 0.00"],
         [2, "25.00 ± 1.41", "24.00 ± 1.41", "25.00 ± 0.00", "24.00 ± 0.00", "no (1/2 seeds)", na, "0.15 ± 0.35", na,
          na, na, na],
         [2, na, na, na, na, na, na, na, "7.50 ± 0.71", "3.00 ± 1.41", "0.10", na],
         [1, "27.00", "25.00", "25.00", "24.00", "yes", na, na, na, na, na, na],
         [1, na, na, na, na, na, na, na, na, na, "-0.05", na],
         [1, "29.00", "20.00", "28.00", "22.00", "no", na, na, na, na, na, na]],
        columns=cols,
        index=pd.MultiIndex.from_tuples([("expression", "obama", "test_tail", "tracked_inputs"),
                                         ("expression", "obama", "test_tail", "audio"),
                                         ("expression", "obama", "dub/dub_de_1", "audio"),
                                         ("deepspeech", "obama", "test_tail", "audio"),
                                         ("lipblink", "obama", "dub/dub_de_1", "audio"),
                                         ("blendshape_av", "may", "test_tail", "audio")],
                                        names=["space", "clip", "eval_set", "driver"]))
    pd.testing.assert_frame_equal(table, expected)

    verdict = A.still_frame_verdict(_real_rows())
    assert list(verdict.index) == [("expression", "obama"), ("deepspeech", "obama"), ("lipblink", "obama"),
                                   ("blendshape_av", "may")]
    assert list(verdict["verdict"]) == ["no (1/2 seeds)", "yes", "n/a", "no"]
    assert list(verdict["n"]) == [2, 1, 0, 1]
    np.testing.assert_allclose(verdict["PSNR gain"], [0.0, 2.0, np.nan, 1.0])
    np.testing.assert_allclose(verdict["mouth PSNR gain"], [0.0, 1.0, np.nan, -2.0])
    np.testing.assert_allclose(verdict["lip-opening corr."], [0.15, np.nan, np.nan, np.nan])
    assert list(verdict["lip corr. > 0"]) == ["yes (1/2 seeds)", "n/a", "n/a", "n/a"]
    assert list(verdict["all three"]) == ["no", "n/a", "n/a", "n/a"]  # PSNR gains not above 0 on the means
    assert verdict["line"].iloc[0].endswith("n=2; lip-opening corr. with the ground truth +0.15, positive: yes (1/2 "
                                            "seeds))")
    assert verdict["line"].iloc[1] == ("deepspeech / obama: driven by audio beats the still frame on PSNR and mouth "
                                       "PSNR: yes (PSNR +2.00 dB, mouth PSNR +1.00 dB over the still frame, n=1)")
    assert verdict["line"].iloc[2].endswith(": n/a (no audio-driven held-out tail row with PSNR, mouth PSNR and the "
                                            "still frame's)")


def test_real_clip_summary_numbers_clip_column_and_renderer_level(tmp_path):
    rows = _real_rows()
    s = A.real_clip_summary(rows)
    tail = s.loc[("expression", "obama", "test_tail", "audio")]
    assert (tail["n"], tail["psnr"], tail["psnr_n"], tail["beats_runs"], tail["beats_of"]) == (2, 25.0, 2, 1, 1 + 1)
    assert tail["psnr_std"] == pytest.approx(math.sqrt(2)) and tail["beats"] is False
    assert math.isnan(s.loc[("deepspeech", "obama", "test_tail", "audio"), "psnr_std"])  # one seed: no std
    assert A.clip_name("/tmp/lipspace_prep/obama") == "obama" and A.clip_name("data/real/may/") == "may"
    assert A.clip_name(np.nan) is None
    rows.to_csv(tmp_path / "real.csv", index=False)
    loaded = A.load_results(tmp_path / "real.csv")
    assert list(loaded["clip"].unique()) == ["obama", "may"]
    pd.testing.assert_frame_equal(A.real_clip_table(loaded), A.real_clip_table(rows))
    two = pd.concat([rows, rows.assign(renderer="mlp", psnr=rows["psnr"] - 10)], ignore_index=True)
    s2 = A.real_clip_summary(two)
    assert s2.index.names == ["conditioner", "renderer", "clip", "eval_set", "driver"]
    assert s2.loc[("deepspeech", "mlp", "obama", "test_tail", "audio"), "beats"] is False
    assert s2.loc[("deepspeech", "triplane", "obama", "test_tail", "audio"), "beats"] is True
    with pytest.raises(A.MetricUnavailable, match="no test_tail or dub"):
        A.real_clip_summary(rows[rows.eval_set.str.startswith("heldout/")])


def test_plot_real_gains_bars_are_the_gain_over_the_still_frame():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.container import BarContainer

    fig, ax = plt.subplots()
    A.plot_real_gains(_real_rows(), "mouth_psnr", ax)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["may", "obama"]
    bars = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers
            if isinstance(c, BarContainer)}
    assert bars.keys() == {"expression", "deepspeech", "blendshape_av"}
    np.testing.assert_allclose(bars["expression"], [np.nan, 0.0])
    np.testing.assert_allclose(bars["deepspeech"], [np.nan, 1.0])
    np.testing.assert_allclose(bars["blendshape_av"], [-2.0, np.nan])
    with pytest.raises(A.MetricUnavailable, match="tracked_inputs"):  # only expression has tracked-input rows
        A.plot_real_gains(_real_rows()[lambda d: d.conditioner != "expression"], "psnr", ax,
                          driver="tracked_inputs")
    plt.close(fig)


def test_real_clips_markdown_keeps_the_row_labels_of_both_tables():
    from lipspace.reporting.real_clips import real_clips_markdown

    text = real_clips_markdown(_real_rows(), "# Real clips\n\nsettings")
    verdict, rows = text.split("## All rows")
    assert text.startswith("# Real clips\n\nsettings\n\n## Does the audio-driven")
    assert "| space | clip | PSNR gain | mouth PSNR gain | n | verdict |" in verdict
    header = next(line for line in rows.splitlines() if line.startswith("| space"))
    assert header.startswith("| space | clip | eval_set | driver | n (seeds) |")
    body = [line for line in rows.splitlines() if line.startswith("| ") and not line.startswith("| space")]
    assert body and all(len(line.split("|")) == len(header.split("|")) for line in body)
