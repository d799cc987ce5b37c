"""Evaluation results into a run's Weights & Biases run: find the training run's local W&B directory, resume it
(or open an eval run), log eval/<metric> summaries, the results table and media, and print the `wandb sync`
command for offline runs."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path

from lipspace.reporting.loggers import resolve_wandb_mode, run_tags

log = logging.getLogger(__name__)


# --- finding a run's W&B run -----------------------------------------------------------------------------------------

_RUN_DIR_NAME = re.compile(r"^(offline-)?run-(\d{8}_\d{6})-(.+)$")


@dataclass(frozen=True)
class WandbRunDir:
    """One local W&B run directory (<run_dir>/wandb/[offline-]run-<YYYYMMDD_HHMMSS>-<id>)."""

    path: Path
    run_id: str
    offline: bool
    started: str  # YYYYMMDD_HHMMSS, sorts by time

    @property
    def synced(self) -> bool:
        return any(self.path.glob("run-*.wandb.synced"))


def wandb_run_dirs(run_dir) -> list[WandbRunDir]:
    """Local W&B run directories under ``<run_dir>/wandb``, oldest first. The id comes from the run-<id>.wandb file
    (authoritative) and falls back to the directory name; ``latest-run`` links and stray entries are ignored."""
    root = Path(run_dir) / "wandb"
    found = []
    for d in root.glob("*run-*") if root.is_dir() else ():
        m = _RUN_DIR_NAME.match(d.name)
        if m is None or d.is_symlink() or not d.is_dir():
            continue
        logs = sorted(p for p in d.glob("run-*.wandb") if p.is_file())
        run_id = logs[0].name[len("run-"):-len(".wandb")] if logs else m.group(3)
        found.append(WandbRunDir(d, run_id, bool(m.group(1)), m.group(2)))
    return sorted(found, key=lambda r: (r.started, r.path.stat().st_mtime))


def find_wandb_run(run_dir) -> WandbRunDir | None:
    """The most recent W&B run written under ``<run_dir>/wandb`` (the training run's), or None."""
    runs = wandb_run_dirs(run_dir)
    return runs[-1] if runs else None


def _wait_for_own_run_dir(run_dir, run_id: str) -> None:
    """W&B names a run directory <mode>-run-<start second>-<id>: resuming an id within the second its last
    directory was started would write into that directory, so wait for the next second."""
    import time
    from datetime import datetime

    root = Path(run_dir) / "wandb"
    while any(root.glob(f"*run-{datetime.now().strftime('%Y%m%d_%H%M%S')}-{glob_escape(run_id)}")):
        time.sleep(0.1)


def _sync_command(paths) -> str:
    return "wandb sync " + " ".join(shlex.quote(str(p)) for p in paths)


# --- evaluation results into W&B -------------------------------------------------------------------------------------

# columns of an eval row that describe the run, not a measurement (besides every run_info key)
_NOT_METRICS = {"eval_set", "driver", "seed", "max_steps", "global_step", "clip_seconds", "train_seconds",
                "checkpoint", "eval_resolution", "postprocess", "metric_provenance", "video", "strip"}
_MEDIA_SUFFIXES = {".png": "image", ".jpg": "image", ".jpeg": "image", ".mp4": "video", ".webm": "video",
                   ".gif": "video"}


def primary_rows(df):
    """The rows the headline ``eval/<metric>`` numbers come from: the held-out utterances driven by audio alone
    (eval_set ``heldout/*``, driver ``audio``; averaged over utterances) when there are any, else ``test_tail``,
    else the first row. Returns (rows, label)."""
    eval_set = df["eval_set"].astype(str) if "eval_set" in df else None
    driver = df["driver"].astype(str) if "driver" in df else None
    if eval_set is not None and driver is not None:
        audio = df[eval_set.str.startswith("heldout/") & (driver == "audio")]
        if len(audio):
            return audio, f"heldout/audio (mean over {len(audio)} utterance{'s' * (len(audio) > 1)})"
    if eval_set is not None and (eval_set == "test_tail").any():
        return df[eval_set == "test_tail"].iloc[:1], "test_tail"
    return df.iloc[:1], "first row"


def _numeric_columns(df, exclude) -> dict:
    """{column: float Series} for the columns holding numbers (bools, strings and paths left out)."""
    import pandas as pd

    out = {}
    for col in df.columns:
        if col in exclude or pd.api.types.is_bool_dtype(df[col]):
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        present = df[col].notna()
        if present.any() and values[present].notna().all():
            out[col] = values.astype(float)
    return out


def eval_metrics(df, info: dict | None = None) -> dict[str, float]:
    """Flat W&B summary metrics from an eval results frame: ``eval/<metric>`` for the primary rows (see
    primary_rows) and ``eval/<eval_set>/<driver>/<metric>`` for every row; numeric columns only, NaN skipped."""
    import math

    df = df.reset_index(drop=True)  # a frame concatenated from several evaluations may repeat index labels
    exclude = _NOT_METRICS | set(info or {})
    cols = _numeric_columns(df, exclude)
    out = {}
    rows, _ = primary_rows(df)
    for col, values in cols.items():
        if col == "n_frames":
            continue
        v = values.loc[rows.index].mean(skipna=True)
        if not math.isnan(v):
            out[f"eval/{col}"] = float(v)
    for i in df.index:
        prefix = f"eval/{df.at[i, 'eval_set'] if 'eval_set' in df else i}/" \
                 f"{df.at[i, 'driver'] if 'driver' in df else 'row'}"
        for col, values in cols.items():
            if not math.isnan(values.at[i]):
                out[f"{prefix}/{col}"] = float(values.at[i])
    return out


def eval_media(run_dir, df=None) -> dict[str, Path]:
    """The strips (PNG) and side-by-side videos (mp4) of an evaluation, by file stem: the files named in the
    frame's ``strip``/``video`` columns when it has them, else every such file in ``<run_dir>/eval``."""
    paths = []
    if df is not None:
        for col in ("strip", "video"):
            if col in df:
                paths += [Path(p) for p in df[col].dropna().astype(str) if p]
    if not paths:
        eval_dir = Path(run_dir) / "eval"
        paths = sorted(p for p in eval_dir.glob("*") if p.suffix.lower() in _MEDIA_SUFFIXES) if eval_dir.is_dir() \
            else []
    return {p.stem: p for p in paths if p.is_file()}


def _table_safe(df):
    """A copy whose cells W&B's Table accepts: lists/dicts/paths as text, one type per column."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = [v if v is None or isinstance(v, (str, int, float, bool)) else
                        json.dumps(v, default=str) if isinstance(v, (list, tuple, dict)) else str(v)
                        for v in out[col]]
            kinds = {type(v) for v in out[col] if v is not None}
            if len(kinds) > 1:
                out[col] = [None if v is None else str(v) for v in out[col]]
    return out


def _run_settings(run_dir) -> dict:
    """project / entity / name / user tags of the training run, from <run_dir>/config.yaml (logger.wandb, tags)."""
    cfg_path = Path(run_dir) / "config.yaml"
    if not cfg_path.is_file():
        return {}
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=False)
    except Exception:  # an unreadable config must not stop results reaching W&B
        return {}
    wb = ((cfg.get("logger") or {}).get("wandb") or {}) if isinstance(cfg, dict) else {}
    return {"project": wb.get("project"), "entity": wb.get("entity"), "name": wb.get("name"),
            "tags": list(cfg.get("tags") or [])}


def _train_seconds(df, info: dict) -> float | None:
    """Seconds of footage trained on: info or the results' ``train_seconds``, else the configured clip_seconds."""
    import math

    candidates = [info.get("train_seconds")]
    if "train_seconds" in df:
        candidates += list(df["train_seconds"].dropna())
    candidates.append(info.get("clip_seconds"))
    for v in candidates:
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if not math.isnan(v):
            return v
    return None


def _media_object(path: Path):
    import wandb

    kind = _MEDIA_SUFFIXES.get(path.suffix.lower())
    if kind == "image":
        return wandb.Image(str(path))
    if kind == "video":
        return wandb.Video(str(path), format=path.suffix.lower().lstrip("."))
    return None


def log_eval(run_dir, df, info: dict, media: dict | None = None, mode: str | None = None, *,
             project: str | None = None, entity: str | None = None, tags=None, name: str | None = None) -> str | None:
    """Put evaluation results into the training run's W&B run; returns the `wandb sync ...` command for an offline
    run (print it), else None.

    The run is the latest one under ``<run_dir>/wandb`` (resumed by id), or a new one (job_type ``eval``) with the
    training run's project / group (``info['study']``) / name / tags. Logged: summary ``eval/<metric>`` (primary
    rows, see primary_rows), ``eval/<eval_set>/<driver>/<metric>`` for every row, ``train_seconds`` (the clip
    length trained on, the dashboard's x axis), ``eval/primary`` (which rows), ``eval/results`` (a Table of ``df``)
    and ``media/<name>`` (PNG strips as Images, mp4s as Videos; ``media=None`` takes eval_media(run_dir, df), ``{}``
    logs none). Offline unless a key is configured or ``mode``/WANDB_MODE says otherwise; ``disabled`` logs nothing.

    wandb 0.31 cannot really resume an offline run: the new directory (same id) restarts at step 0, and users
    report such history overwriting the earlier one on sync. So into a resumed offline run everything goes to the
    summary only (no history rows); the sync command names the training run's unsynced directories first, which
    `wandb sync` uploads in start order for one run id."""
    mode = resolve_wandb_mode(mode)
    if mode == "disabled":
        return None
    import wandb

    run_dir = Path(run_dir)
    saved = _run_settings(run_dir)
    previous = find_wandb_run(run_dir)
    run_id = previous.run_id if previous is not None else None
    project = project or saved.get("project") or "lipspace"
    entity = entity or saved.get("entity")
    # a resumed run keeps its own name unless one is configured; a new one is named after the run directory
    name = name or saved.get("name") or (None if previous is not None else run_dir.name)
    tags = run_tags(info, extra=tags if tags is not None else saved.get("tags", []))
    info_cfg = json.loads(json.dumps(info, default=str))

    os.environ.setdefault("WANDB_SILENT", "true")
    if run_id:
        _wait_for_own_run_dir(run_dir, run_id)
    try:
        run = wandb.init(project=project, entity=entity, group=info.get("study"), name=name, tags=tags,
                         job_type=None if run_id else "eval", id=run_id, resume="allow" if run_id else None,
                         config=None if run_id else {"run": info_cfg}, dir=str(run_dir), mode=mode,
                         reinit="create_new",
                         settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
    except wandb.errors.Error as e:  # auth / network: the results are on disk already, say so and go on
        log.warning("W&B: could not open a run for the evaluation of %s (%s); results stay in %s/eval",
                    run_dir, e, run_dir)
        return None
    offline = mode == "offline"
    try:
        if run_id:
            run.config.update({"run": info_cfg}, allow_val_change=True)
        payload = dict(eval_metrics(df, info))
        _, payload["eval/primary"] = primary_rows(df)
        clip = _train_seconds(df, info)
        if clip is not None:
            payload["train_seconds"] = clip
        payload["eval/results"] = wandb.Table(dataframe=_table_safe(df))
        for key, path in (eval_media(run_dir, df) if media is None else media).items():
            path = Path(path)
            obj = _media_object(path) if path.is_file() else None
            if obj is None:
                log.warning("W&B: %s is not an existing PNG/JPEG/mp4/webm/gif file; not logged", path)
                continue
            payload[f"media/{key}"] = obj
        if run_id and offline:
            run.summary.update(payload)  # no history rows: see the docstring
        else:
            run.log(payload)
        eval_dir = Path(run.dir).parent
    finally:
        run.finish()
    if not offline:
        return None
    earlier = [r.path for r in wandb_run_dirs(run_dir)
               if run_id and r.run_id == run_id and r.offline and not r.synced and r.path != eval_dir]
    return _sync_command([*earlier, eval_dir])
