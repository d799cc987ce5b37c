"""Index helpers: runs of consecutive True values (frames without a face, closed-eye spans, ...) and evenly spaced
subsets of frame indices."""

from __future__ import annotations

import numpy as np


def true_runs(mask) -> list[tuple[int, int]]:
    """[(start, end)] with end exclusive for each maximal run of True in a 1-D boolean sequence."""
    m = np.asarray(mask, bool).reshape(-1).astype(np.int8)
    d = np.diff(np.concatenate([[0], m, [0]]))
    return [(int(s), int(e)) for s, e in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1))]


def evenly_spaced(idx, k: int) -> np.ndarray:
    """At most k entries of ``idx`` spread evenly from its first to its last (all of them when len <= k)."""
    idx = np.asarray(idx)
    if len(idx) <= k:
        return idx
    return idx[np.round(np.linspace(0, len(idx) - 1, k)).astype(int)]
