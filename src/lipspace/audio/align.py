"""The one audio/frame alignment helper: a window of W feature frames centred on each video frame.

Conventions (every backend and conditioner goes through here, so they cannot drift apart):
- video frame t stands for its display interval [t/fps, (t+1)/fps); its centre time is (t + 0.5) / fps
  (the synthetic head renders the articulation at exactly that time);
- feature frame j has its centre at ``first_feature_time_s + j / feature_rate`` (librosa ``center=True``:
  first_feature_time_s = 0);
- the centre index is round-half-up of that time in feature frames, clamped to the last feature (audio a
  little shorter than the video keeps using its last frame instead of failing);
- the window is indices centre - W//2 ... centre - W//2 + W - 1 (AD-NeRF: 8 before, 7 after for W = 16);
  indices outside the feature sequence are zero-padded (``pad="zero"``, as AD-NeRF) or repeat the edge
  feature (``pad="edge"``).
"""

from __future__ import annotations

import numpy as np

from lipspace.utils.errors import LipspaceError


def centre_indices(n_frames: int, n_features: int, feature_rate: float, fps: float = 25.0,
                   first_feature_time_s: float = 0.0) -> np.ndarray:
    """Index of the feature frame nearest to the centre of each video frame, clamped to [0, n_features-1]."""
    if n_features < 1:
        raise LipspaceError("audio features are empty: the audio track has no samples. Check the input audio.")
    t = (np.arange(n_frames) + 0.5) / fps - first_feature_time_s
    idx = np.floor(t * feature_rate + 0.5).astype(np.int64)  # round half up, not to even
    return np.clip(idx, 0, n_features - 1)


def window_indices(n_frames: int, n_features: int, window: int, feature_rate: float, fps: float = 25.0,
                   first_feature_time_s: float = 0.0) -> np.ndarray:
    """[n_frames, window] feature indices (may fall outside [0, n_features) at the ends)."""
    if window < 1:
        raise LipspaceError(f"audio window={window}: must be >= 1 feature frame.")
    c = centre_indices(n_frames, n_features, feature_rate, fps, first_feature_time_s)
    return c[:, None] - window // 2 + np.arange(window)[None, :]


def frame_windows(features: np.ndarray, n_frames: int, window: int, feature_rate: float, fps: float = 25.0,
                  first_feature_time_s: float = 0.0, pad: str = "zero") -> np.ndarray:
    """Windows of ``features`` [T, D] for each of ``n_frames`` video frames -> [n_frames, window, D]."""
    feats = np.asarray(features)
    if feats.ndim != 2:
        raise LipspaceError(f"audio features must be [time, dim], got shape {feats.shape}.")
    if pad not in ("zero", "edge"):
        raise LipspaceError(f"pad={pad!r}: use 'zero' or 'edge'.")
    idx = window_indices(n_frames, len(feats), window, feature_rate, fps, first_feature_time_s)
    out = feats[np.clip(idx, 0, len(feats) - 1)]
    if pad == "zero":
        out[(idx < 0) | (idx >= len(feats))] = 0
    return out
