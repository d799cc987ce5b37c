"""Stage-wise pre-training shared by conditioners: a cache file per (settings, training data), written atomically,
and the check that a learned part beats the trivial predictor on held-out data (logged, warned when it does not).

A conditioner whose ``prepare`` trains a part before the NeRF keys the result by :func:`stage_key` over its
settings and the arrays it reads, saves ``{"state", "metrics"}`` with :func:`save_stage` and reloads it with
:func:`load_stage` (None: absent or unusable, retrain). Its metrics carry one :func:`learned_check` entry per
learned part, so a run's ``prepare.json`` says, for each part, its held-out error, the trivial predictor's and
whether it learned."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def stage_key(settings: dict, *arrays) -> str:
    """16 hex digits of a sha256 over the settings (JSON, sorted keys) and the arrays' bytes, shapes and dtypes."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def save_stage(path: Path, state: dict, metrics: dict) -> None:
    """Write ``{"state", "metrics"}`` to ``path`` through a temporary file (a killed run never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: parallel sweep jobs share the cache
    torch.save({"state": state, "metrics": metrics}, tmp)
    tmp.replace(path)


def load_stage(path: Path, expected: dict) -> tuple[dict, dict] | None:
    """(state, metrics) from ``path`` when it exists and holds exactly ``expected``'s keys and shapes; None
    otherwise (a damaged or foreign file is a cache miss, logged, never a partial load)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        state, metrics = saved["state"], saved["metrics"]
        if set(state) != set(expected) or any(v.shape != expected[k].shape for k, v in state.items()):
            raise ValueError("other keys or shapes than this model's")
    except Exception as e:  # noqa: BLE001 - any unreadable file means: retrain and overwrite
        log.warning("%s: not a usable cached stage (%s); retraining", path, " ".join(str(e).split())[:160])
        return None
    return state, metrics


def learned_check(who: str, error: float, trivial: float, trivial_name: str, on: str,
                  higher_is_better: bool = False, min_gain: float = 0.02) -> dict:
    """Compare a learned part's held-out ``error`` with the trivial predictor's; log it, warn when it does not
    beat it by ``min_gain`` (relative: an error at most (1 - min_gain) x the trivial one, or a score at least
    (1 + min_gain) x; a regressor shrunk to the mean ties the mean within 0.1 %, which is not learning). Returns
    the entry a stage's metrics carry."""
    if higher_is_better:
        learned = bool(np.isfinite(error) and error > (1 + min_gain) * trivial)
        ratio = error / trivial if trivial else float("nan")
    else:
        learned = bool(np.isfinite(error) and error < (1 - min_gain) * trivial)
        ratio = error / trivial if trivial > 0 else float("nan")
    entry = {"value": float(error), "trivial": float(trivial), "ratio": float(ratio), "learned": learned,
             "min_gain": float(min_gain), "trivial_predictor": trivial_name, "on": on}
    if learned:
        log.info("%s learned: %.5g on %s vs %.5g for %s (ratio %.3f)", who, error, on, trivial, trivial_name, ratio)
    else:
        log.warning("%s did NOT beat %s by %g %% on %s: %.5g vs %.5g. Driving by audio will be no better than a "
                    "still mouth; use a longer clip, pool other clips (pools=) or another audio backend", who,
                    trivial_name, 100 * min_gain, on, error, trivial)
    return entry
