"""Runs of consecutive True values in a boolean sequence (frames without a face, closed-eye spans, ...)."""

from __future__ import annotations

import numpy as np


def true_runs(mask) -> list[tuple[int, int]]:
    """[(start, end)] with end exclusive for each maximal run of True in a 1-D boolean sequence."""
    m = np.asarray(mask, bool).reshape(-1).astype(np.int8)
    d = np.diff(np.concatenate([[0], m, [0]]))
    return [(int(s), int(e)) for s, e in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1))]
