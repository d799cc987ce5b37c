"""train -> eval -> render on CPU in seconds; resume after a kill and DDP run in subprocesses (slow)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lipspace.utils.config import compose_train
from lipspace.tasks.evaluate import evaluate
from lipspace.tasks.render import render
from lipspace.tasks.train import train

FAST = ["debug=fast", "logger=csv"]


def test_train_eval_render_end_to_end(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    cfg = compose_train(["data=dir", f"data.root={tiny_dataset}", *FAST], out)
    metrics = train(cfg, out, {"conditioner": "expression", "renderer": "mlp"})
    assert metrics["global_step"] == 6
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "csv" / "metrics.csv").is_file() and list((out / "val").glob("step_*.png"))
    df = evaluate(out, videos=True)
    assert list(df.eval_set) == ["test_tail", "heldout/utt_00"]
    assert np.isfinite(df.psnr).all() and np.isfinite(df.baseline_mean_frame_psnr).all()
    assert df.loc[1, "driver"] == "oracle_inputs"
    assert {"conditioner", "renderer", "seed", "budget", "dataset", "metric_provenance"} <= set(df.columns)
    assert (out / "eval" / "results.csv").is_file() and Path(df.loc[0, "video"]).is_file()
    video = render(out, "heldout/utt_00")
    import av

    with av.open(str(video)) as container:
        assert container.streams.video[0].average_rate == 25
        assert len(container.streams.audio) == 1, "the driving audio is muxed in"
        assert sum(1 for _ in container.decode(video=0)) == 8


def test_render_unknown_driver_is_clear(tiny_dataset, tmp_path):
    from lipspace.utils.errors import LipspaceError

    out = tmp_path / "run"
    train(compose_train(["data=dir", f"data.root={tiny_dataset}", *FAST], out), out)
    with pytest.raises(LipspaceError, match="driver must be one of"):
        render(out, "heldout/nope")


def _train_cmd(dataset, run_dir, *extra):
    # the installed console script, as a user runs it (Lightning's DDP launcher re-executes sys.argv)
    exe = Path(sys.executable).parent / "lipspace-train"
    return [str(exe), "data=dir", f"data.root={dataset}", "logger=csv", f"hydra.run.dir={run_dir}", *extra]


@pytest.mark.slow
def test_resume_from_last_ckpt_after_kill(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    args = ["trainer.max_steps=400", "data.steps_per_epoch=10", "data.rays_per_batch=64", "renderer.n_coarse=8",
            "renderer.n_fine=8", "callbacks.model_checkpoint.every_n_train_steps=10",
            "trainer.check_val_every_n_epoch=100"]
    proc = subprocess.Popen(_train_cmd(tiny_dataset, run, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)  # no clean shutdown: only what was already on disk survives
    proc.wait()
    assert last.is_file(), "no checkpoint was written before the kill"
    import torch

    step_at_kill = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < step_at_kill < 400
    done = subprocess.run(_train_cmd(tiny_dataset, run, *args), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr + done.stdout
    final = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert final == 400


@pytest.mark.slow
def test_ddp_two_cpu_processes(tiny_dataset, tmp_path):
    run = tmp_path / "ddp"
    proc = subprocess.run(_train_cmd(tiny_dataset, run, "trainer=ddp", "trainer.devices=2", "debug=fast"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_eval_and_render_console_scripts(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(compose_train(["data=dir", f"data.root={tiny_dataset}", *FAST], run), run)
    bin_dir = Path(sys.executable).parent
    ev = subprocess.run([str(bin_dir / "lipspace-eval"), f"run_dir={run}", "videos=false"], capture_output=True,
                        text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert "heldout/utt_00" in ev.stdout and (run / "eval" / "results.csv").is_file()
    rd = subprocess.run([str(bin_dir / "lipspace-render"), f"run_dir={run}", "driver=test_tail"], capture_output=True,
                        text=True, timeout=300)
    assert rd.returncode == 0, rd.stderr[-2000:]
    assert (run / "render" / "test_tail.mp4").is_file()
    bad = subprocess.run([str(bin_dir / "lipspace-eval"), f"run_dir={tmp_path / 'nope'}"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "not a lipspace training run" in bad.stderr and "Traceback" not in bad.stderr
