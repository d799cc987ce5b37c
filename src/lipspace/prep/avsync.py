"""Model-free audio/video offset check: the lip opening of a talking face rises and falls with the speech energy,
so the lag that best correlates the two estimates how late the audio is. Preprocessing reports it and warns when
it is large; ``lipspace-prep ... audio_offset_s=<s>`` corrects a clip whose source is out of sync (the shared
Obama clip's audio is ~0.2 s late in the source itself)."""

from __future__ import annotations

import numpy as np

from lipspace.data.schema import FPS, SAMPLE_RATE

WARN_OFFSET_S = 0.1  # larger offsets are visible and hurt every lip-sync metric


def audio_envelope(audio: np.ndarray, n_frames: int, fps: float = FPS, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Log RMS energy of the audio in each video frame's interval [t/fps, (t+1)/fps) -> [n_frames]."""
    hop = sr / fps
    out = np.zeros(n_frames, np.float64)
    for t in range(n_frames):
        seg = audio[int(round(t * hop)): int(round((t + 1) * hop))]
        out[t] = np.log(np.sqrt(np.mean(seg.astype(np.float64) ** 2)) + 1e-4) if len(seg) else np.log(1e-4)
    return out


def estimate_av_offset(lip_opening: np.ndarray, audio: np.ndarray, valid: np.ndarray | None = None,
                       fps: float = FPS, max_shift_s: float = 0.5) -> dict:
    """{"offset_s": how late the audio is (negative: early), "correlation": at that lag, "zero_lag": at 0}.

    Correlates the frame-to-frame change of both signals (onsets matter; slow drifts do not) over valid frames."""
    n = len(lip_opening)
    env = np.diff(audio_envelope(audio, n, fps))
    lip = np.diff(np.asarray(lip_opening, np.float64))
    ok = np.ones(n - 1, bool) if valid is None else (np.asarray(valid[1:], bool) & np.asarray(valid[:-1], bool))
    max_lag = int(round(max_shift_s * fps))
    best, corrs = (0, -np.inf), {}
    for lag in range(-max_lag, max_lag + 1):
        if abs(lag) >= len(env):  # a lag longer than the sequence leaves nothing to correlate (and its negative
            continue              # slice ends would wrap around)
        # audio late by `lag` frames: lip at t goes with audio at t + lag
        a = env[max(lag, 0): len(env) + min(lag, 0)]
        v = lip[max(-lag, 0): len(lip) + min(-lag, 0)]
        m = ok[max(-lag, 0): len(ok) + min(-lag, 0)]
        if m.sum() < 10:
            continue
        c = float(np.corrcoef(a[m], v[m])[0, 1])
        corrs[lag] = c
        if c > best[1]:
            best = (lag, c)
    return {"offset_s": best[0] / fps, "correlation": round(best[1], 4) if np.isfinite(best[1]) else None,
            "zero_lag": round(corrs.get(0, float("nan")), 4)}
