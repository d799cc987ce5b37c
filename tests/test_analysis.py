"""lipspace.analysis (seed statistics, tables, provenance) and the two analysis notebooks, run with papermill."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lipspace import analysis as A
from lipspace.errors import LipspaceError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
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
    assert {"psnr", "mouth_region", "lse_model"} <= set(prov["what"]) and "syncnet_v2 (fixture)" in set(prov["provenance"])


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


@pytest.mark.parametrize("name,renderers,expected", [
    ("clip_length", ("mlp",), ["mouth PSNR ↑ vs clip length", "3 s", "full", "LSE-D ↓ (official SyncNet LSE)",
                               "locally trained sync expert, not comparable to published LSE", "not available:",
                               "out of memory (fixture)", "syncnet_v2 (fixture)", "claim holds: True",
                               "Dubbed audio: LSE-D ↓", "Dubbed audio: face found",
                               "mouth PSNR over the mean training frame ↑"]),
    ("conditioning_spaces", ("mlp", "triplane"), ["Table I, reconstruction", "Table I, held-out audio-driven",
                                                  "PSNR ↑", "SSIM ↑", "LPIPS ↓", "mouth PSNR ↑", "LMD ↓", "LSE-C ↑",
                                                  "triplane", "not available: lpips", "Dubbed audio"]),
])
def test_notebook_runs_on_a_results_table(name, renderers, expected, tmp_path, kernel_env):
    papermill = pytest.importorskip("papermill")
    results = write_results_fixture(tmp_path / "results.csv", renderers=renderers)
    nb = papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(tmp_path / f"{name}.out.ipynb"),
                                    parameters={"results": [str(results)], "out_dir": str(tmp_path / "out")},
                                    kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False)
    text = _text_outputs(nb)
    for header in expected:
        assert header in text, header
    assert "not available: mouth_psnr_over_baseline" not in text  # derived from the baseline column
    assert any(p.suffix == ".png" for p in (tmp_path / "out").iterdir())


@pytest.mark.parametrize("name", ["clip_length", "conditioning_spaces"])
def test_notebooks_are_saved_clean_with_a_kernelspec(name):
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    assert nb["metadata"]["kernelspec"] == {"name": "python3", "display_name": "Python 3", "language": "python"}
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert "parameters" in code[0]["metadata"].get("tags", [])


def test_heldout_audio_falls_back_to_the_audio_driven_tail_of_a_clip_without_utterances():
    from lipspace.analysis import subset_rows

    rows = pd.DataFrame([
        {"dataset": "syn", "eval_set": "test_tail", "driver": "audio", "psnr": 1.0},
        {"dataset": "syn", "eval_set": "heldout/u0", "driver": "audio", "psnr": 2.0},
        {"dataset": "syn", "eval_set": "heldout/u0", "driver": "oracle_inputs", "psnr": 3.0},
        {"dataset": "real", "eval_set": "test_tail", "driver": "audio", "psnr": 4.0},
        {"dataset": "real", "eval_set": "test_tail", "driver": "tracked_inputs", "psnr": 5.0},
        {"dataset": "real", "eval_set": "dub/de", "driver": "audio", "psnr": 6.0},
    ])
    assert sorted(subset_rows(rows, "heldout_audio").psnr) == [2.0, 4.0]
