"""Study plumbing: evaluate a run with the `evaluation` config, append its rows to the study's results table, and
record a failing run as a ``failed`` row instead of stopping the sweep.

The results table is one CSV per study (e.g. experiments/clip_length/results/results_synthetic.csv), one row per
run x eval set x driver. Sweep jobs run in parallel processes, so every update holds an exclusive file lock and
rewrites the table with the run's previous rows (same ``run_dir``) replaced.
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

import pandas as pd
from filelock import FileLock

from lipspace.errors import LipspaceError

log = logging.getLogger(__name__)


def _locked(path: Path) -> FileLock:
    """An exclusive lock on ``path``.lock (parallel sweep jobs append to one table)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


def append_rows(table, df: pd.DataFrame) -> Path:
    """Add ``df`` (rows of one run, ``run_dir`` column set) to the CSV ``table``, replacing that run's old rows."""
    table = Path(table)
    with _locked(table):
        old = pd.read_csv(table) if table.is_file() and table.stat().st_size else pd.DataFrame()
        if len(old) and "run_dir" in old:
            old = old[~old["run_dir"].isin(set(df["run_dir"]))]
        new = pd.concat([old, df], ignore_index=True) if len(old) else df
        tmp = table.with_name(table.name + ".tmp")
        new.to_csv(tmp, index=False)
        tmp.replace(table)
    return table


def failed_row(run_dir, error: BaseException | str, stage: str) -> pd.DataFrame:
    """One ``status=failed`` row for a run that did not train or evaluate, with its provenance when run.json
    exists and the error's last line; the full traceback goes to <run_dir>/FAILED."""
    run_dir = Path(run_dir)
    info = {}
    if (run_dir / "run.json").is_file():
        info = json.loads((run_dir / "run.json").read_text())
    if isinstance(error, BaseException):
        text = "".join(traceback.format_exception(error))
        message = f"{type(error).__name__}: {error}"
    else:
        text = message = str(error)
    run_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(error, BaseException) or not (run_dir / "FAILED").is_file():
        (run_dir / "FAILED").write_text(f"stage: {stage}\n{text}\n")
    return pd.DataFrame([{**info, "run_dir": str(run_dir), "status": "failed", "failed_stage": stage,
                          "error": message.strip().splitlines()[-1][:500] if message.strip() else stage}])


def evaluate_run(run_dir, ev) -> pd.DataFrame:
    """`lipspace.tasks.evaluate.evaluate` with the options of an `evaluation` config node ``ev``."""
    from lipspace.tasks.evaluate import evaluate

    df = evaluate(run_dir, ckpt=ev.get("ckpt", "last"), videos=bool(ev.get("videos", True)),
                  max_heldout=ev.get("max_heldout"), downscale=int(ev.get("downscale", 1)),
                  settings=ev.get("metrics"), dub_audio=list(ev.get("dub_audio") or []),
                  dub_seconds=ev.get("dub_seconds"), max_tail_frames=ev.get("max_tail_frames"),
                  oracle=bool(ev.get("oracle", True)))
    df.insert(0, "run_dir", str(Path(run_dir)))
    log_to_wandb(run_dir, df)
    return df


def log_to_wandb(run_dir, df: pd.DataFrame) -> None:
    """When the run logged to W&B (logger.wandb in its config), add the eval summary (eval/<metric>), the results
    table and the media to that run; prints the `wandb sync` command of an offline run."""
    from omegaconf import OmegaConf

    cfg_path = Path(run_dir) / "config.yaml"
    if not cfg_path.is_file() or not (OmegaConf.load(cfg_path).get("logger") or {}).get("wandb"):
        return
    from lipspace.wandb_eval import log_eval

    info_path = Path(run_dir) / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    cmd = log_eval(run_dir, df, {**info, "train_seconds": float(df["train_seconds"].iloc[0])})
    if cmd:
        print(f"W&B eval logged offline; upload with: {cmd}")


def record(run_dir, ev, df: pd.DataFrame) -> None:
    if ev.get("results_table"):
        table = append_rows(ev.get("results_table"), df)
        log.info("results: %d rows of %s -> %s", len(df), run_dir, table)


def is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file() or (path / "run.json").is_file()


def evaluate_sweep(sweep_dir, ev) -> pd.DataFrame:
    """Evaluate every run under ``sweep_dir`` (its subfolders holding config.yaml); a run that failed to train
    (FAILED marker, no checkpoint) or to evaluate becomes a failed row; never stops at one run."""
    sweep_dir = Path(sweep_dir)
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and is_run(p))
    if not runs:
        raise LipspaceError(f"{sweep_dir}: no runs inside (no subfolder has config.yaml). Pass run_dir=<a training "
                            "run or a sweep directory printed by lipspace-train -m>.")
    frames = []
    for run in runs:
        ckpt = run / "checkpoints" / "last.ckpt"
        if (run / "FAILED").is_file() and not ckpt.is_file():
            df = failed_row(run, (run / "FAILED").read_text().splitlines()[-1], "train")
        elif not ckpt.is_file():
            df = failed_row(run, f"{ckpt} missing: training did not finish (re-run the sweep: it resumes)", "train")
        else:
            try:
                df = evaluate_run(run, ev)
            except Exception as e:  # noqa: BLE001 - a failing run is recorded, the sweep goes on
                log.error("eval of %s failed: %s", run, e)
                df = failed_row(run, e, "eval")
        record(run, ev, df)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)
