"""A study's results table: one CSV per study (e.g. experiments/clip_length/results/results_synthetic.csv), one row
per run x eval set x driver; a run that failed to train or evaluate is a ``failed`` row instead of stopping the sweep.
Sweep jobs run in parallel processes, so every update holds an exclusive file lock and rewrites the table with the
run's previous rows (same ``run_dir``) replaced.
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

import pandas as pd
from filelock import FileLock

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


def record(run_dir, ev, df: pd.DataFrame) -> None:
    if ev.get("results_table"):
        table = append_rows(ev.get("results_table"), df)
        log.info("results: %d rows of %s -> %s", len(df), run_dir, table)
