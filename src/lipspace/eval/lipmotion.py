"""Weight-free lip-sync measures from the MediaPipe face tracks the evaluation already has (no SyncNet needed).

The signal is the inner-lip opening: the image-plane distance of mesh points 13 and 14 over the inter-ocular
distance (outer eye corners 33 and 263) of the same frame, so head distance and resolution drop out. Two figures:

* ``lip_open_corr`` (ground truth needed): Pearson correlation over time of the render's and the ground truth's
  opening, over the frames with a face in both. 1 for the ground truth against itself; on the real clips -0.02
  (anchor) and 0.15 (obama) against itself shifted by 5 frames (the opening's autocorrelation).
* ``lip_audio_corr`` (any audio, dubs included): Pearson correlation of the frame-to-frame *change* of the opening
  and of the speech envelope (log RMS per frame interval, ``lipspace.prep.avsync.audio_envelope``) at lag 0, over
  consecutive frame pairs with a face. Changes, not levels: onsets carry the sync and slow drifts (pauses, a head
  moving off) do not. Lag 0, not the best lag: it is unbiased (the real clips' lips against unrelated speech give
  0.00 ± 0.07 over 10 s windows; the noise is about 1/sqrt(frames)), and it is what drops when the audio is off
  (in-sync real clips 0.20-0.32; shifted by >= 5 frames |r| < 0.05). ``lip_audio_corr_peak`` and
  ``lip_audio_lag_s`` are the maximum over lags within ±0.5 s and its lag (``lipspace.prep.avsync.
  estimate_av_offset``; positive: the audio is late). The maximum of 25 correlations is biased upwards, 0.14 ± 0.04
  for unrelated speech over 10 s: read it for the lag, not as a score.
  ``*_gt`` are the same figures on the ground-truth frames: the ceiling the clip allows.

A still mouth (opening std below ``STILL_STD``) carries no sync: the render's figure is 0, its lag NaN, and
``lipmotion_status`` says so. A reference without variance (ground-truth mouth still, silent audio) leaves the figure
undefined: NaN with the reason. Missing inputs (no ground truth, no audio, no face analysis) give NaN, never raise.
"""

from __future__ import annotations

import math

import numpy as np

from lipspace.data.schema import FPS
from lipspace.utils.errors import LipspaceError
from lipspace.eval.face_metrics import _MODEL, OUTER_EYE_CORNERS, FaceTracks
from lipspace.prep.avsync import audio_envelope, estimate_av_offset

INNER_LIP = (13, 14)  # upper / lower inner-lip midpoints of the MediaPipe mesh
MAX_LAG_S = 0.5  # lags searched for lip_audio_corr_peak / lip_audio_lag_s
# A mouth whose opening varies less than 0.1 % of the eye distance (std over frames with a face) is still: a
# talking face varies by 3-5 % on the real clips, one 128² anchor frame repeated 250 times by 0.005 % (MediaPipe's
# tracker settling); a render whose mouth barely moves above this floor scores about 0 anyway (noise).
STILL_STD = 1e-3
MIN_FRAMES = 10  # fewest frames (pairs for lip_audio_*) a correlation is computed on: estimate_av_offset's minimum

KEYS = ("lip_open_corr", "lip_audio_corr", "lip_audio_corr_peak", "lip_audio_lag_s",
        "lip_audio_corr_gt", "lip_audio_corr_peak_gt", "lip_audio_lag_s_gt")
_ENVELOPE = "the speech envelope (log RMS of the 16 kHz audio in each frame's interval [t, t+1)/fps, " \
            "lipspace.prep.avsync.audio_envelope; no model)"
PROVENANCE: dict[str, str] = {
    "lip_open_corr": "Pearson correlation over time, over frames with a face in both, of the inner-lip opening "
                     "(image-plane distance of mesh points 13-14 over the same frame's inter-ocular distance 33-263) "
                     f"of render vs ground truth; 0 when the render's opening is still (std < {STILL_STD}), NaN with "
                     f"lipmotion_status when the ground truth's is or < {MIN_FRAMES} frames have both; {_MODEL}",
    "lip_audio_corr": "Pearson correlation at lag 0 of the frame-to-frame change of the render's inner-lip opening "
                      f"(as lip_open_corr) and of {_ENVELOPE}, over consecutive frame pairs with a face; unbiased "
                      "(unrelated speech: 0.00 ± 0.07 over 10 s), in-sync real clips 0.20-0.32, audio shifted by "
                      ">= 5 frames |r| < 0.05; 0 for a still mouth, NaN for silent audio; weight-free, not LSE; lip "
                      f"landmarks by {_MODEL}",
    "lip_audio_corr_peak": f"maximum of lip_audio_corr's correlation over lags within ±{MAX_LAG_S} s "
                           "(lipspace.prep.avsync.estimate_av_offset); biased upwards by the maximum over 25 lags "
                           "(unrelated speech: 0.14 ± 0.04 over 10 s): read with lip_audio_lag_s, not as a score",
    "lip_audio_lag_s": "lag of lip_audio_corr_peak in seconds, positive: the audio is late relative to the lips",
    "lip_audio_corr_gt": "lip_audio_corr of the ground-truth frames with the same audio: the ceiling of the clip",
    "lip_audio_corr_peak_gt": "lip_audio_corr_peak of the ground-truth frames",
    "lip_audio_lag_s_gt": "lip_audio_lag_s of the ground-truth frames (the clip's own A/V offset)",
}


def lip_opening(lmk: np.ndarray, found: np.ndarray | None = None) -> np.ndarray:
    """[T] inner-lip gap over inter-ocular distance of landmarks [T,478,>=2] (x, y used); NaN where no face
    (``found`` False or landmarks NaN) or the eye distance is 0."""
    lmk = np.asarray(lmk, np.float64)[..., :2]
    gap = np.linalg.norm(lmk[:, INNER_LIP[0]] - lmk[:, INNER_LIP[1]], axis=-1)
    iod = np.linalg.norm(lmk[:, OUTER_EYE_CORNERS[0]] - lmk[:, OUTER_EYE_CORNERS[1]], axis=-1)
    ok = np.isfinite(gap) & np.isfinite(iod) & (iod > 0)
    if found is not None:
        ok &= np.asarray(found, bool)
    return np.where(ok, gap / np.where(ok, iod, 1.0), np.nan)


def _still(x: np.ndarray) -> bool:
    x = x[np.isfinite(x)]
    return len(x) > 0 and float(np.std(x)) < STILL_STD


def open_corr(pred_open: np.ndarray, gt_open: np.ndarray) -> tuple[float, str | None]:
    """(lip_open_corr, None) or (value, the reason it is 0 / NaN) of two openings [T] (NaN: no face)."""
    p, g = np.asarray(pred_open, np.float64), np.asarray(gt_open, np.float64)
    both = np.isfinite(p) & np.isfinite(g)
    if both.sum() < MIN_FRAMES:
        return math.nan, f"lip_open_corr: {int(both.sum())} frames with a face in both (< {MIN_FRAMES})"
    if _still(g[both]):
        return math.nan, f"lip_open_corr: the ground truth's lip opening is still (std < {STILL_STD})"
    if _still(p[both]):
        return 0.0, f"lip_open_corr: the render's lip opening is still (std < {STILL_STD}): scored 0"
    return float(np.corrcoef(p[both], g[both])[0, 1]), None


def audio_sync(opening: np.ndarray, audio: np.ndarray, fps: float = FPS,
               who: str = "render") -> tuple[dict, str | None]:
    """({"corr": lag 0, "peak": max within ±MAX_LAG_S, "lag_s": its lag}, None or the reason for 0 / NaN) of a lip
    opening [T] (NaN: no face) against the 16 kHz mono audio of those T frames (sample 0 at frame 0)."""
    nan = {"corr": math.nan, "peak": math.nan, "lag_s": math.nan}
    opening = np.asarray(opening, np.float64)
    valid = np.isfinite(opening)
    pairs = int((valid[1:] & valid[:-1]).sum())
    if pairs < MIN_FRAMES:
        return nan, f"lip_audio ({who}): {pairs} consecutive frame pairs with a face (< {MIN_FRAMES})"
    env = audio_envelope(np.asarray(audio, np.float32), len(opening), fps)
    if np.ptp(env) < 1e-9:
        return nan, f"lip_audio ({who}): the audio is silent (no envelope variance)"
    if _still(opening):
        return {"corr": 0.0, "peak": 0.0, "lag_s": math.nan}, \
            f"lip_audio ({who}): the lip opening is still (std < {STILL_STD}): scored 0"
    with np.errstate(invalid="ignore", divide="ignore"):  # a lag whose masked signal is constant: NaN, skipped
        res = estimate_av_offset(np.where(valid, opening, 0.0), np.asarray(audio, np.float32), valid, fps=fps,
                                 max_shift_s=MAX_LAG_S)
    peak = res["correlation"]
    out = {"corr": float(res["zero_lag"]), "peak": math.nan if peak is None else float(peak),
           "lag_s": math.nan if peak is None else float(res["offset_s"])}
    return out, None if math.isfinite(out["corr"]) else f"lip_audio ({who}): correlation undefined at lag 0"


def unavailable(reason: str) -> dict:
    """Every lip-motion column NaN, with the reason in ``lipmotion_status``."""
    return {**{k: math.nan for k in KEYS}, "lipmotion_status": f"not computed: {reason}"}


def lipmotion_metrics(pred: FaceTracks, gt: FaceTracks | None = None, audio: np.ndarray | None = None,
                      fps: float = FPS, no_audio: str = "no audio for this sequence") -> dict:
    """All ``KEYS`` of a render's face tracks, against the ground truth's (None for dubbed audio) and the 16 kHz
    audio of the same frames (None: ``no_audio`` says why); ``lipmotion_status`` is "ok" or lists what is 0/NaN."""
    out, notes = {k: math.nan for k in KEYS}, []
    p_open = lip_opening(pred.lmk, pred.found)
    g_open = None if gt is None else lip_opening(gt.lmk, gt.found)
    if g_open is None:
        notes.append("lip_open_corr and *_gt: no ground truth")
    else:
        if len(g_open) != len(p_open):
            raise LipspaceError(f"lip motion: render ({len(p_open)} frames) and ground truth ({len(g_open)} frames) "
                                "differ in length; score the utterance's own frames")
        out["lip_open_corr"], note = open_corr(p_open, g_open)
        notes += [note] if note else []
    if audio is None:
        notes.append(f"lip_audio_*: {no_audio}")
    else:
        for suffix, opening, who in (("", p_open, "render"), ("_gt", g_open, "ground truth")):
            if opening is None:
                continue
            res, note = audio_sync(opening, audio, fps, who=who)
            out.update({f"lip_audio_corr{suffix}": res["corr"], f"lip_audio_corr_peak{suffix}": res["peak"],
                        f"lip_audio_lag_s{suffix}": res["lag_s"]})
            notes += [note] if note else []
    out["lipmotion_status"] = "ok" if not notes else "; ".join(notes)
    return out
