"""Study plumbing: the results table, failed runs recorded (never stopping a sweep), the sweep configs resolving
with the joblib and submitit launchers, and a real tiny sweep whose table the two notebooks read (slow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from lipspace.utils.errors import LipspaceError
from lipspace.reporting.results_table import append_rows, failed_row
from lipspace.tasks.evaluate import evaluate_sweep

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_append_rows_replaces_a_runs_old_rows_and_keeps_the_others(tmp_path):
    table = tmp_path / "res" / "results.csv"
    append_rows(table, pd.DataFrame([{"run_dir": "a", "psnr": 1.0}, {"run_dir": "a", "psnr": 2.0}]))
    append_rows(table, pd.DataFrame([{"run_dir": "b", "psnr": 3.0, "lse_d": 7.0}]))
    append_rows(table, pd.DataFrame([{"run_dir": "a", "psnr": 5.0}]))  # a re-evaluated run
    df = pd.read_csv(table)
    assert sorted(df.psnr) == [3.0, 5.0] and set(df.columns) == {"run_dir", "psnr", "lse_d"}


def test_failed_row_keeps_provenance_and_the_traceback(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"conditioner": "expression", "seed": 2}))
    try:
        raise ValueError("bad thing\nlast line")
    except ValueError as e:
        row = failed_row(run, e, "train").iloc[0]
    assert row.status == "failed" and row.conditioner == "expression" and row.seed == 2
    assert row.failed_stage == "train" and row.error == "last line"
    assert "Traceback" in (run / "FAILED").read_text()


def test_evaluate_sweep_records_failures_and_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    for name in ("a_no_ckpt", "b_broken"):
        (sweep / name).mkdir(parents=True)
        (sweep / name / "config.yaml").write_text("seed: 0\n")
    (sweep / "b_broken" / "checkpoints").mkdir()
    (sweep / "b_broken" / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    ev = OmegaConf.create({"results_table": str(tmp_path / "t.csv"), "videos": False})
    df = evaluate_sweep(sweep, ev)
    assert list(df.status) == ["failed", "failed"]
    assert list(df.failed_stage) == ["train", "eval"]
    assert "training did not finish" in df.error[0]
    assert len(pd.read_csv(tmp_path / "t.csv")) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LipspaceError, match="no runs inside"):
        evaluate_sweep(empty, ev)


def test_failing_sweep_jobs_are_recorded_and_the_sweep_finishes(tmp_path):
    """`lipspace-train -m` over two jobs that fail at start-up: exit 0, two failed rows, a FAILED file each."""
    table = tmp_path / "results.csv"
    cmd = [str(BIN / "lipspace-train"), "-m", "data=dir", f"data.root={tmp_path}/missing_a,{tmp_path}/missing_b",
           "logger=csv", "evaluation.after_train=true", f"evaluation.results_table={table}",
           f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("recorded, the sweep goes on") == 2
    df = pd.read_csv(table)
    assert list(df.status) == ["failed", "failed"] and df.error.str.contains("missing_").all()
    assert len(list((tmp_path / "sweep").glob("*/FAILED"))) == 2


@pytest.mark.parametrize("study,name,tag", [("clip_length", "sweep_synthetic", "synthetic"),
                                          ("clip_length", "sweep_anchor", "anchor"),
                                          ("clip_length", "sweep_anchor_triplane", "anchor_triplane"),
                                          ("conditioning_spaces", "sweep_synthetic", "synthetic"),
                                          ("torso_options", "sweep_real", "real"),
                                          ("ssp_ablation", "sweep_real", "real")])
def test_sweep_configs_resolve_with_joblib_and_submitit(study, name, tag, tmp_path):
    base = [str(BIN / "lipspace-train"), "--config-dir", str(ROOT / "experiments" / study), "--config-name", name]
    for launcher, target in ((None, "joblib_launcher.JoblibLauncher"),
                             ("submitit_slurm", "submitit_launcher.SlurmLauncher")):
        extra = [f"hydra/launcher={launcher}"] if launcher else []
        proc = subprocess.run([*base, *extra, "--cfg", "hydra"], capture_output=True, text=True,
                              timeout=120, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        hydra_cfg = OmegaConf.create(proc.stdout)
        assert hydra_cfg.hydra.launcher._target_.endswith(target)
        assert hydra_cfg.hydra.mode == "MULTIRUN" and hydra_cfg.hydra.sweeper.params
    job = subprocess.run([*base, "--cfg", "job", "--resolve"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert job.returncode == 0, job.stderr[-2000:]
    cfg = OmegaConf.create(job.stdout)
    assert cfg.study == study and cfg.evaluation.after_train
    assert cfg.evaluation.results_table.endswith(f"experiments/{study}/results/results_{tag}.csv")
    assert cfg.data.synthetic is None or tag == "synthetic"  # a real dataset is never generated
    if study == "clip_length":  # one renderer for every space, although the synctalk preset's own is the tri-plane
        params = hydra_cfg.hydra.sweeper.params  # the launcher does not change the swept params
        renderer, target = ("triplane", "TriPlaneRenderer") if name.endswith("triplane") else ("mlp", "NeRFRenderer")
        assert params.renderer == renderer
        pinned = subprocess.run([*base, "experiment=synctalk", f"renderer={params.renderer}", "--cfg", "job"],
                                capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert OmegaConf.create(pinned.stdout).renderer._target_.endswith(target), pinned.stderr[-2000:]


@pytest.mark.slow
def test_real_tiny_sweep_feeds_both_notebooks(tiny_dataset, tmp_path, monkeypatch):
    """A real (tiny) clip-length sweep through the study config and the joblib launcher: 2 spaces x 2 clip lengths x
    2 seeds train, evaluate and append to one table; both notebooks execute on it."""
    papermill = pytest.importorskip("papermill")

    table = tmp_path / "results_tiny.csv"
    cmd = [str(BIN / "lipspace-train"), "--config-dir", str(ROOT / "experiments" / "clip_length"), "--config-name",
           "sweep_synthetic", "data=dir", f"data.root={tiny_dataset}", "data.synthetic=null", "debug=fast",
           "trainer.max_steps=4",
           f"evaluation.results_table={table}", "evaluation.downscale=1",
           f"hydra.sweep.dir={tmp_path / 'sweep'}", "seed=0,1",
           "experiment=lipnerf,adnerf", "data.clip_seconds=0.4,null", "hydra.launcher.n_jobs=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_csv(table)
    assert (df.status == "ok").all(), df.get("error")
    runs = df.groupby(["conditioner", "clip_seconds", "seed"], dropna=False).size()
    assert len(runs) == 8 and set(df.conditioner) == {"expression", "deepspeech"}
    assert {"psnr", "lpips", "lse_d", "lse_status", "metric_provenance", "train_seconds"} <= set(df.columns), \
        sorted({"psnr", "lpips", "lse_d", "lse_status", "metric_provenance", "train_seconds"} - set(df.columns))
    jp = tmp_path / "jupyter" / "kernels" / "python3"
    jp.mkdir(parents=True)
    (jp / "kernel.json").write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                                         "{connection_file}"], "display_name": "Python 3",
                                                "language": "python"}))
    for var, sub in (("JUPYTER_PATH", "jupyter"), ("JUPYTER_RUNTIME_DIR", "rt"), ("IPYTHONDIR", "ipy"),
                     ("MPLCONFIGDIR", "mpl")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for name in ("clip_length", "conditioning_spaces"):
        nb = papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                                        parameters={"results": [str(table)]}, kernel_name="python3",
                                        cwd=str(ROOT / "notebooks"))
        assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
def test_every_dubbed_file_of_the_shared_assets_drives_an_eval_row(tiny_dataset, tmp_path):
    """CI has ../shared/assets/audio: each dubbed file renders, is muxed and scored; metrics that cannot be computed
    on a 24x24 toy render are NaN with their status, never an exception."""
    from tests.conftest import assets_dir

    from lipspace.utils.config import compose_train
    from lipspace.tasks.evaluate import evaluate
    from lipspace.tasks.train import train

    assets = assets_dir()
    if assets is None or not (assets / "audio").is_dir():
        pytest.skip("no shared assets (set LIPSPACE_ASSETS): the dubbed speech files live in assets/audio")
    out = tmp_path / "run"
    overrides = ["data=dir", f"data.root={tiny_dataset}", "debug=fast", "logger=csv", "experiment=adnerf",
                 "conditioner.audio.backend=mel"]
    train(compose_train(overrides, out), out)
    wavs = sorted((assets / "audio").glob("*.wav"))
    df = evaluate(out, videos=True, dub_audio=[assets / "audio"], dub_seconds=0.4)
    dubs = df[df.eval_set.str.startswith("dub/")]
    assert sorted(dubs.eval_set) == sorted(f"dub/{w.stem}" for w in wavs) and (dubs.n_frames == 10).all()
    assert dubs.video.map(lambda p: Path(p).is_file()).all()
    assert dubs.lse_status.str.len().gt(0).all() and dubs.lse_d.isna().all()  # no official weights here
    assert {"face_status", "lse_local_status", "metric_provenance"} <= set(dubs.columns)
