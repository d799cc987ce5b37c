"""Scores one rendered sequence with every metric the eval task reports, each naming the model that computed it.

Per frame: PSNR / SSIM / L1 over the frame and the mouth box (``metrics``), LPIPS-alex v0.1 (``lpips``).
Per sequence: MediaPipe face metrics (LMD, AUE, blink rate: ``face_metrics``) and, from the same landmarks, the
weight-free lip-sync measures (``lipmotion``: lip_open_corr, lip_audio_corr), LSE-D / LSE-C with the official
SyncNet (``lse.lse_official``: empty with a reason without its weights) and the locally trained sync expert
(``lse.lse_local``, columns ``*_local``). A metric that cannot be computed (no weights, no face) is NaN and its
``*_status`` column says why; it never stops the evaluation.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lipspace.eval import metrics as M

log = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """Which metrics to compute and where their weights are (``None``: the standard lookup of each module)."""

    lpips: bool = True
    face: bool = True  # LMD / AUE / blink rate (MediaPipe FaceLandmarker)
    lse: bool = True  # official SyncNet LSE-D / LSE-C
    lse_local: bool = True  # the same protocol with the locally trained sync expert (lipspace.av)
    lpips_weights: str | None = None
    face_model: str | None = None
    syncnet_weights: str | None = None
    s3fd_weights: str | None = None
    ave_weights: str | None = None
    # official weights not found locally (SyncNet / S3FD, LPIPS): auto = download (checksummed) when the host
    # answers within a few seconds, true = always try, false = never touch the network (lipspace.assets)
    download: str | bool = "auto"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        from lipspace.assets import download_mode

        self.download = download_mode(self.download, "evaluation.metrics.download")

    @classmethod
    def of(cls, node) -> "EvalSettings":
        if node is None:
            return cls()
        if isinstance(node, EvalSettings):
            return node
        d = dict(node)
        known = {k: d.pop(k) for k in list(d) if k in cls.__dataclass_fields__ and k != "extra"}
        return cls(**known, extra=d)


def _nan_if_none(d: dict) -> dict:
    return {k: (math.nan if v is None else v) for k, v in d.items()}


class Scorer:
    """One per evaluation: loads LPIPS once; ``frame`` and ``sequence`` return metric dicts for result rows."""

    def __init__(self, settings: EvalSettings | None = None):
        _ignore_stray_sigprof()
        self.s = settings or EvalSettings()
        self.provenance = dict(M.PROVENANCE)
        self._lpips = None
        self.face_status: str | None = None  # set once face analysis cannot run (no model): not retried per sequence
        self._gt_cache: dict = {}  # ground-truth face tracks / local LSE per (metric, sequence key)
        self.lpips_status = "disabled (evaluation.lpips=false)"
        if self.s.lpips:
            self._load_lpips()

    def _load_lpips(self) -> None:
        from lipspace.errors import LipspaceError
        from lipspace.eval.lpips import load_lpips

        try:
            self._lpips = load_lpips(self.s.lpips_weights, download=self.s.download).eval()
            self.lpips_status = "ok"
            self.provenance["lpips"] = getattr(self._lpips, "provenance", "LPIPS-alex v0.1")
        except LipspaceError as e:
            self.lpips_status = f"not computed: {e}"
            log.warning("eval: LPIPS column empty: %s", e)

    def frame(self, pred: torch.Tensor, target: torch.Tensor, lmk68, scale: float) -> dict:
        out = M.frame_metrics(pred, target, lmk68, scale=scale)
        if self._lpips is None:
            out["lpips"] = math.nan  # no weights or disabled: lpips_status says why (the column always exists)
        elif min(pred.shape[:2]) < 32:
            out["lpips"] = math.nan  # AlexNet's strides need >= 32 px (lpips_status says so)
            self.lpips_status = f"not computed: frames of {tuple(pred.shape[:2])} px are below LPIPS-alex's 32 px"
        else:
            with torch.no_grad():
                out["lpips"] = float(self._lpips(pred.float(), target.float()).reshape(-1)[0])
        return out

    def sequence(self, preds: np.ndarray, gts: np.ndarray | None, lmk68: np.ndarray | None, audio: Path | None,
                 audio_offset_s: float = 0.0, fps: float = 25.0, video_path: Path | None = None,
                 gt_key=None) -> dict:
        """Sequence metrics of uint8 renders [T,H,W,3]; ``gts`` the ground truth (None for dubbed audio);
        ``lmk68`` [T,68,2] in the renders' pixels (mouth crops of the local sync expert); ``audio`` the driving
        audio from ``audio_offset_s``; ``video_path`` an mp4 of the renders with that audio if already written.
        ``gt_key`` names the ground-truth sequence: one scored under several drivers is analysed once."""
        out: dict = {"lpips_status": self.lpips_status} if gts is not None else {}
        tracks = None  # (render, ground truth or None) face tracks: the lip-motion measures reuse them
        if self.s.face and self.face_status is None:
            face, tracks = self._face(preds, gts, fps, gt_key)
            out.update(face)
        elif self.s.face:
            out["face_status"] = self.face_status
        out.update(self._lipmotion(tracks, audio, audio_offset_s, len(preds) / fps, fps))
        if audio is None or not (self.s.lse or self.s.lse_local):
            return out
        with tempfile.TemporaryDirectory(prefix="lipspace_eval_") as tmp:
            wav = audio_slice(Path(audio), audio_offset_s, len(preds) / fps, Path(tmp) / "audio.wav")
            if self.s.lse_local and lmk68 is not None:
                out.update(self._lse_local(preds, lmk68, wav, fps, source=(Path(audio), audio_offset_s)))
                if gts is not None:  # the same score on the ground truth: the ceiling this clip allows
                    gt = self._cached(("lse_local", gt_key), lambda: self._lse_local(gts, lmk68, wav, fps))
                    keys = ("lse_d_local", "lse_c_local", "lse_offset_local")
                    out.update({f"{k}_gt": gt[k] for k in keys if k in gt})
            if self.s.lse:
                if video_path is None:
                    from lipspace.eval.video import write_video

                    video_path = write_video(preds, Path(tmp) / "render.mp4", fps=int(fps), audio_path=wav)
                out.update(self._lse_official(Path(video_path)))
        return out

    def _cached(self, key, compute):
        """``compute()`` once per key (a ground-truth sequence's analysis); a None sequence key is never cached."""
        if key[-1] is None:
            return compute()
        if key not in self._gt_cache:
            self._gt_cache[key] = compute()
        return self._gt_cache[key]

    def _face(self, preds, gts, fps, gt_key=None) -> tuple[dict, tuple | None]:
        """(face metrics, (render tracks, ground-truth tracks or None)); (status only, None) when they cannot run."""
        from lipspace.errors import LipspaceError
        from lipspace.eval import face_metrics as F

        try:
            if "face_model" not in self.provenance:  # hashes the model file: once per evaluation
                self.provenance["face_model"] = F.face_model_provenance(self.s.face_model)
                self.provenance.update({k: v for k, v in F.PROVENANCE.items() if k not in self.provenance})
            if gts is not None and preds.shape != gts.shape:
                raise LipspaceError(f"face metrics: render {preds.shape} and ground truth {gts.shape} differ")
            gt = None if gts is None else self._cached(
                ("face", gt_key), lambda: F.analyse_frames(gts, self.s.face_model, fps=fps))  # None key: not cached
            pred = F.analyse_frames(preds, self.s.face_model, fps=fps)
            return F.metrics_from_tracks(pred, gt, fps), (pred, gt)
        except LipspaceError as e:
            log.warning("eval: face metrics empty: %s", e)
            self.face_status = f"not computed: {e}"
            return {"face_status": self.face_status}, None

    def _lipmotion(self, tracks, audio, audio_offset_s: float, seconds: float, fps: float) -> dict:
        """Weight-free lip-sync columns (``lipspace.eval.lipmotion``) from the face tracks; NaN with
        ``lipmotion_status`` when there are none (face analysis off or failed), no audio or no ground truth."""
        from lipspace.errors import LipspaceError
        from lipspace.eval import lipmotion as L

        if tracks is None:
            return L.unavailable(f"no face tracks ({self.face_status})" if self.face_status else
                                 "evaluation.face=false (they use its face landmarks)")
        wave, why = None, "no audio for this sequence"
        if audio is not None:
            try:
                wave = audio_segment(Path(audio), audio_offset_s, seconds)
            except LipspaceError as e:
                why = f"audio not read: {e}"
        self.provenance.update({k: v for k, v in L.PROVENANCE.items() if k not in self.provenance})
        try:
            return L.lipmotion_metrics(*tracks, audio=wave, fps=fps, no_audio=why)
        except LipspaceError as e:
            return L.unavailable(str(e))

    def _lse_local(self, frames, lmk68, wav, fps, source=None) -> dict:
        from lipspace.errors import LipspaceError
        from lipspace.eval.lse import lse_local

        try:
            out = lse_local(frames, lmk68, wav, fps=fps, weights=self.s.ave_weights, source=source)
        except LipspaceError as e:  # e.g. a sequence shorter than one 5-frame window
            return {"lse_d_local": math.nan, "lse_c_local": math.nan, "lse_local_status": f"not computed: {e}"}
        if "lse_local_model" in out:
            self.provenance["lse_local"] = out["lse_local_model"]
        return _nan_if_none(out)

    def _lse_official(self, video: Path) -> dict:
        from lipspace.errors import LipspaceError
        from lipspace.eval.lse import lse_official

        try:
            out = lse_official(video, syncnet_weights=self.s.syncnet_weights, s3fd_weights=self.s.s3fd_weights,
                               download=self.s.download)
        except LipspaceError as e:  # a weight file with the wrong checksum, an unreadable render
            return {"lse_d": math.nan, "lse_c": math.nan, "lse_status": f"not computed: {e}"}
        if out.get("lse_model"):
            self.provenance["lse"] = out["lse_model"]
        return _nan_if_none(out)


def _ignore_stray_sigprof() -> None:
    """Long test runs using MediaPipe / syncnet-python twice died with "Profiling timer expired" (SIGPROF's default
    action; the timer's source, native, was not found). When no handler is installed, ignore SIGPROF so that a stray
    profiling timer cannot kill a long evaluation; a real signal-based profiler installs its own handler first."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGPROF) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGPROF, signal.SIG_IGN)


def audio_segment(src: Path, offset_s: float, seconds: float) -> np.ndarray:
    """float32 16 kHz mono samples of ``src`` (a 16 kHz wav, read by ``lipspace.audio.features.read_audio``) from
    ``offset_s`` for ``seconds``, zero-padded at the end if shorter."""
    from lipspace.audio.features import read_audio

    y = read_audio(src)
    start, n = int(round(max(offset_s, 0.0) * 16000)), int(round(seconds * 16000))
    y = y[start:start + n]
    return np.pad(y, (0, n - len(y)))


def audio_slice(src: Path, offset_s: float, seconds: float, out: Path) -> Path:
    """``audio_segment`` written to the 16 bit wav ``out``."""
    import soundfile as sf

    sf.write(str(out), audio_segment(src, offset_s, seconds), 16000, subtype="PCM_16")
    return out
