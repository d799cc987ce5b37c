"""Evaluation results into W&B (offline, read back from the run's .wandb log) and the study dashboard's spec / CLI."""

from __future__ import annotations

import ast
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lipspace.reporting.wandb_eval import eval_metrics, find_wandb_run, log_eval, primary_rows, wandb_run_dirs

INFO = {"conditioner": "expression", "renderer": "mlp", "experiment": None, "budget": "tiny", "seed": 0,
        "dataset": "/data/synth_a", "clip_seconds": 5, "gt_background_classes": [0], "bounds": [[-1, 1]],
        "study": "clip_length", "max_steps": 10}


# --- reading an offline run back --------------------------------------------------------------------------------------
# wandb 0.31 writes no files/wandb-summary.json offline and ships no Python reader of run-<id>.wandb (a LevelDB-style
# log of protobuf Records: 7-byte header, 32 KiB blocks, records of crc32(4) length(2) type(1) + data), so read it.

def wandb_records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", path
    i, pending = 7, b""
    while i + 7 <= len(data):
        left = block - i % block
        if left < 7:
            i += left
            continue
        _, length, kind = struct.unpack("<IHB", data[i:i + 7])
        if kind == 0 and length == 0:  # block padding
            i += left
            continue
        chunk, i = data[i + 7:i + 7 + length], i + 7 + length
        if kind in (1, 2):  # full, first
            pending = chunk
        else:  # middle, last
            pending += chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def finished_records(run_dir: Path, timeout_s: float = 30.0) -> list:
    """The run's records once its exit record is on disk: wandb-core may still be writing the log when
    run.finish() returns (measured: a 7-byte file right after finish, the whole log a moment later)."""
    import time

    (log_file,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + timeout_s
    while True:
        records = list(wandb_records(log_file))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def read_offline_run(run_dir: Path) -> dict:
    """{"run": RunRecord, "summary": {key: value}, "history_rows": n, "config": {key: value}} of one offline run."""
    out = {"run": None, "summary": {}, "history_rows": 0, "config": {}}
    for r in finished_records(run_dir):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
            for u in r.run.config.update:  # config given to wandb.init
                out["config"][u.key or ".".join(u.nested_key)] = json.loads(u.value_json)
        elif kind == "summary":  # keys come whole (`key`) or as a path into nested values (`nested_key`)
            for u in r.summary.update:
                *parents, leaf = [u.key] if u.key else list(u.nested_key)
                node = out["summary"]
                for k in parents:
                    node = node.setdefault(k, {})
                node[leaf] = json.loads(u.value_json)
        elif kind == "history":
            out["history_rows"] += 1
        elif kind == "config":
            for u in r.config.update:
                out["config"][u.key or ".".join(u.nested_key)] = json.loads(u.value_json)
    return out


# --- fixtures --------------------------------------------------------------------------------------------------------

def make_eval_dir(run_dir: Path) -> pd.DataFrame:
    """A tiny eval: a PNG strip, a 5-frame mp4, and a results frame shaped like tasks.evaluate's."""
    import imageio.v3 as iio

    from lipspace.eval.video import write_video

    eval_dir = run_dir / "eval"
    eval_dir.mkdir(parents=True)
    iio.imwrite(eval_dir / "test_tail_strip.png", np.full((8, 16, 3), 127, np.uint8))
    write_video(np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8), eval_dir / "test_tail.mp4",
                fps=5)
    rows = [{"eval_set": "test_tail", "driver": "tracked_inputs", "psnr": 25.0, "lse_d": 8.0, "n_frames": 5,
             "strip": str(eval_dir / "test_tail_strip.png"), "video": str(eval_dir / "test_tail.mp4")},
            {"eval_set": "heldout/u1", "driver": "oracle_inputs", "psnr": 30.0, "lse_d": 6.0, "n_frames": 5},
            {"eval_set": "heldout/u1", "driver": "audio", "psnr": 20.0, "lse_d": 9.0, "n_frames": 5},
            {"eval_set": "heldout/u2", "driver": "audio", "psnr": 22.0, "lse_d": float("nan"), "n_frames": 5}]
    return pd.DataFrame([{**INFO, **r, "metric_provenance": "{}"} for r in rows])


@pytest.fixture
def offline_env(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


# --- eval metrics ----------------------------------------------------------------------------------------------------

def test_primary_is_heldout_audio_mean_else_test_tail():
    rows = pd.DataFrame([{**INFO, "eval_set": "test_tail", "driver": "tracked_inputs", "psnr": 25.0, "lse_d": 8.0},
                         {**INFO, "eval_set": "heldout/u1", "driver": "audio", "psnr": 20.0, "lse_d": 9.0},
                         {**INFO, "eval_set": "heldout/u2", "driver": "audio", "psnr": 22.0, "lse_d": float("nan")}])
    m = eval_metrics(rows, INFO)
    assert m["eval/psnr"] == pytest.approx(21.0) and m["eval/lse_d"] == pytest.approx(9.0)  # NaN skipped
    assert m["eval/heldout/u1/audio/psnr"] == 20.0 and m["eval/test_tail/tracked_inputs/lse_d"] == 8.0
    assert "eval/heldout/u2/audio/lse_d" not in m
    assert not any(k.endswith(("/seed", "/max_steps", "/clip_seconds")) for k in m)  # run_info is not a metric
    assert "audio" in primary_rows(rows)[1]
    tail_only = rows[rows.eval_set == "test_tail"]
    assert eval_metrics(tail_only, INFO)["eval/psnr"] == 25.0 and primary_rows(tail_only)[1] == "test_tail"


# --- log_eval ---------------------------------------------------------------------------------------------------------

def test_log_eval_offline_new_run(offline_env, tmp_path):
    run_dir = tmp_path / "run"
    df = make_eval_dir(run_dir)
    cmd = log_eval(run_dir, df, INFO)

    (wb,) = wandb_run_dirs(run_dir)
    assert wb.offline and wb.path.is_dir()
    assert cmd == f"wandb sync {wb.path}"
    got = read_offline_run(wb.path)
    s = got["summary"]
    assert s["eval/psnr"] == pytest.approx(21.0)  # held-out audio rows, not test_tail (25) nor oracle (30)
    assert s["eval/heldout/u1/oracle_inputs/psnr"] == 30.0 and s["train_seconds"] == 5.0
    assert s["eval/results"]["_type"] == "table-file" and s["media/test_tail"]["_type"] == "video-file"
    assert s["media/test_tail_strip"]["_type"] == "image-file"
    run = got["run"]
    assert run.job_type == "eval" and run.run_group == "clip_length" and run.display_name == "run"
    assert {"cond:expression", "renderer:mlp", "budget:tiny", "data:synth_a", "clip:5s", "seed:0"} <= set(run.tags)
    assert got["config"]["run"]["conditioner"] == "expression"  # the dashboard's config key run.conditioner
    media = wb.path / "files" / "media"
    assert list(media.rglob("*.png")) and list(media.rglob("*.mp4")) and list(media.rglob("*.table.json"))


def test_log_eval_resumes_the_training_run(offline_env, tmp_path):
    import wandb

    run_dir = tmp_path / "run"
    df = make_eval_dir(run_dir)
    (run_dir / "config.yaml").write_text("tags: [mine]\nlogger:\n  wandb:\n    project: lipspace-test\n")
    train = wandb.init(project="lipspace-test", group="clip_length", dir=str(run_dir), mode="offline",
                       settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
    train.log({"loss": 1.0})
    train.finish()
    (train_dir,) = wandb_run_dirs(run_dir)

    df["train_seconds"] = 4.0  # tasks.evaluate's measured training length wins over the configured clip_seconds
    cmd = log_eval(run_dir, df, INFO, media={"strip": run_dir / "eval" / "test_tail_strip.png"})

    dirs = wandb_run_dirs(run_dir)
    assert [d.run_id for d in dirs] == [train.id, train.id]
    eval_dir = dirs[1].path
    assert cmd == f"wandb sync {train_dir.path} {eval_dir}"  # training first: synced in order
    got = read_offline_run(eval_dir)
    assert got["summary"]["eval/psnr"] == pytest.approx(21.0) and got["summary"]["train_seconds"] == 4.0
    assert "eval/test_tail/tracked_inputs/train_seconds" not in got["summary"]
    assert got["history_rows"] == 0  # a step-0 history row would clobber the training curves on sync
    assert got["run"].project == "lipspace-test" and "mine" in got["run"].tags
    assert got["run"].display_name == "" and got["run"].job_type == ""  # the training run keeps its name/type
    assert got["config"]["run"]["clip_seconds"] == 5
    assert "media/test_tail" not in got["summary"] and list((eval_dir / "files" / "media").rglob("*.png"))
    assert find_wandb_run(run_dir).path == eval_dir


def test_find_wandb_run_ignores_links_and_strays(tmp_path):
    root = tmp_path / "wandb"
    for name, log in (("offline-run-20260101_000000-aaa", "run-aaa.wandb"), ("run-20260102_000000-b-b", None),
                      ("offline-run-20260103_000000-ccc", "run-ccc.wandb")):
        (root / name).mkdir(parents=True)
        if log:
            (root / name / log).write_bytes(b":W&B")
    (root / "latest-run").symlink_to(root / "offline-run-20260101_000000-aaa")
    (root / "run-junk").mkdir()
    runs = wandb_run_dirs(tmp_path)
    assert [(r.run_id, r.offline) for r in runs] == [("aaa", True), ("b-b", False), ("ccc", True)]
    assert find_wandb_run(tmp_path).run_id == "ccc" and find_wandb_run(tmp_path / "nothing") is None


def test_log_eval_disabled_writes_nothing(tmp_path):
    df = pd.DataFrame([{"eval_set": "test_tail", "driver": "tracked_inputs", "psnr": 1.0}])
    assert log_eval(tmp_path, df, INFO, mode="disabled") is None
    assert not (tmp_path / "wandb").exists()


# --- dashboard --------------------------------------------------------------------------------------------------------

def test_dashboard_spec_has_the_panels():
    from lipspace.reporting.wandb_report import panel_specs, report_spec

    panels = panel_specs()
    scatter = {p["y"]: p for p in panels if p["kind"] == "scatter"}
    assert set(scatter) == {"summary:eval/lse_d", "summary:eval/lse_c", "summary:eval/psnr",
                            "summary:eval/mouth_psnr"}
    assert all(p["x"] == "summary:train_seconds" for p in scatter.values())
    bars = [p for p in panels if p["kind"] == "bar"]
    assert len(bars) == 4 and all(p["groupby"] == "config:run.conditioner" for p in bars)
    (table,) = [p for p in panels if p["kind"] == "runs_table"]
    assert "config:run.conditioner" in table["columns"] and "summary:eval/lse_d" in table["columns"]

    spec = report_spec("lipspace", "clip_length", "me")
    (rs,) = spec["runsets"]
    assert rs["groupby"] == ["config.run.conditioner"] and "'clip_length'" in rs["filters"]
    per = report_spec("lipspace", "clip_length", conditioners=["expression", "hubert"])["runsets"]
    assert [r["name"] for r in per] == ["expression", "hubert"] and "'hubert'" in per[1]["filters"]
    for r in per + [rs]:
        ast.parse(r["filters"], mode="eval")  # W&B parses filter strings as Python expressions
    json.dumps(spec)  # plain data


def _run_cli(monkeypatch, capsys, *args):
    from lipspace.cli import dashboard

    monkeypatch.setattr(sys, "argv", ["lipspace-dashboard", *args])
    with pytest.raises(SystemExit) as e:
        dashboard.main()
    return e.value.code, capsys.readouterr()


def test_dashboard_cli_without_the_report_package(monkeypatch, capsys):
    import lipspace.reporting.wandb_report as wr

    monkeypatch.setattr(wr, "report_package_available", lambda: False)
    code, out = _run_cli(monkeypatch, capsys, "project=lipspace", "entity=me", "study=clip_length")
    assert code == 2 and out.out == ""
    assert len(out.err.strip().splitlines()) == 1
    assert "wandb-workspaces" in out.err and "pip install wandb-workspaces" in out.err


def test_dashboard_cli_without_a_key(monkeypatch, capsys, offline_env):
    import lipspace.reporting.wandb_report as wr

    monkeypatch.setattr(wr, "report_package_available", lambda: True)
    code, out = _run_cli(monkeypatch, capsys, "study=clip_length")
    assert code == 2 and len(out.err.strip().splitlines()) == 1
    assert "online W&B account" in out.err and "wandb sync" in out.err


def test_dashboard_cli_rejects_unknown_args_and_dry_runs(monkeypatch, capsys):
    code, out = _run_cli(monkeypatch, capsys, "stduy=clip_length")
    assert code == 2 and "unexpected argument 'stduy=clip_length'" in out.err

    from lipspace.cli import dashboard

    monkeypatch.setattr(sys, "argv", ["lipspace-dashboard", "study=clip_length", "dry_run=true"])
    dashboard.main()
    spec = json.loads(capsys.readouterr().out)
    assert spec["study"] == "clip_length" and any(p["kind"] == "scatter" for p in spec["panels"])


def test_report_objects_build(monkeypatch):
    pytest.importorskip("wandb_workspaces")
    from lipspace.reporting.wandb_report import build_report, report_spec

    report = build_report(report_spec("lipspace", "clip_length", "me", ["expression", "hubert"]))
    (grid,) = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
    assert len(grid.runsets) == 2 and len(grid.panels) == 9
    from wandb_workspaces import expr

    tree = expr.expr_to_filters(grid.runsets[1].filters)
    assert {(f.key.section, f.key.name, f.value) for f in tree.filters} == {("run", "group", "clip_length"),
                                                                              ("config", "run.conditioner", "hubert")}


def test_resuming_waits_for_a_run_directory_of_its_own(tmp_path):
    from datetime import datetime

    from lipspace.reporting.wandb_eval import _wait_for_own_run_dir

    now = datetime.now().strftime("%Y%m%d_%H%M%S")
    (tmp_path / "wandb" / f"offline-run-{now}-abc").mkdir(parents=True)  # W&B would reuse this name this second
    _wait_for_own_run_dir(tmp_path, "abc")
    assert datetime.now().strftime("%Y%m%d_%H%M%S") != now
