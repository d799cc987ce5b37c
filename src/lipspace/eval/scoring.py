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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lipspace.eval import metrics as M

log = logging.getLogger(__name__)
BATCH_PIXELS = 1 << 21  # frames per batch of Scorer.frames: 128 at 128², 8 at 512²


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
    # answers within a few seconds, true = always try, false = never touch the network (lipspace.utils.assets)
    download: str | bool = "auto"

    def __post_init__(self):
        from lipspace.utils.assets import download_mode

        self.download = download_mode(self.download, "evaluation.metrics.download")

    @classmethod
    def of(cls, node) -> "EvalSettings":
        if node is None:
            return cls()
        if isinstance(node, EvalSettings):
            return node
        d = dict(node)
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:  # a misspelt key (lpip: false) would otherwise be ignored and the metric computed anyway
            from lipspace.utils.errors import LipspaceError

            raise LipspaceError(f"unknown evaluation.metrics key(s) {', '.join(unknown)}; valid keys: "
                                f"{', '.join(cls.__dataclass_fields__)}")
        return cls(**d)


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
        self._expert = None  # the local sync expert (lse_local.LocalSyncExpert), loaded at its first use
        self._official_unavailable: dict | None = None  # official LSE's NaN row once it is known not to run
        self.lpips_status = "disabled (evaluation.lpips=false)"
        if self.s.lpips:
            self._load_lpips()

    def _load_lpips(self) -> None:
        from lipspace.utils.errors import LipspaceError
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
        out["lpips"] = self._lpips_values(pred[None], target[None])[0]
        return out

    def frames(self, preds: torch.Tensor, targets: torch.Tensor, lmk68s, scale: float) -> list[dict]:
        """``frame`` of each pair of frames [B,H,W,3] in [0, 1], SSIM and LPIPS computed in batches (their
        per-call overhead dominated at 128²); values equal ``frame``'s up to float32 summation order (< 1e-6,
        tests/eval/test_scoring.py). ``lmk68s``: None or one [68,2] (or None) per frame."""
        lmk68s = [None] * len(preds) if lmk68s is None else list(lmk68s)
        step = max(1, BATCH_PIXELS // max(1, preds.shape[1] * preds.shape[2]))
        rows = []
        for i in range(0, len(preds), step):
            p, t = preds[i:i + step], targets[i:i + step]
            part = M.frame_metrics_batch(p, t, lmk68s[i:i + step], scale=scale)
            for row, value in zip(part, self._lpips_values(p, t), strict=True):
                row["lpips"] = value
            rows += part
        return rows

    def _lpips_values(self, preds: torch.Tensor, targets: torch.Tensor) -> list[float]:
        """LPIPS of frames [B,H,W,3]; NaN without weights (lpips_status says why: the column always exists)."""
        if self._lpips is None:
            return [math.nan] * len(preds)
        if min(preds.shape[1:3]) < 32:  # AlexNet's strides need >= 32 px (lpips_status says so)
            self.lpips_status = f"not computed: frames of {tuple(preds.shape[1:3])} px are below LPIPS-alex's 32 px"
            return [math.nan] * len(preds)
        with torch.no_grad():
            return self._lpips(preds.permute(0, 3, 1, 2).float(), targets.permute(0, 3, 1, 2).float()).tolist()

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
        out.update(self._sync(preds, gts, lmk68, audio, audio_offset_s, fps, video_path, gt_key))
        return out

    def _sync(self, preds, gts, lmk68, audio, audio_offset_s, fps, video_path, gt_key) -> dict:
        """Local and official LSE columns of a sequence (none without audio or with both off)."""
        out: dict = {}
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
                out.update(self._lse_official(preds, wav, fps, video_path, Path(tmp) / "render.mp4"))
        return out

    def _cached(self, key, compute):
        """``compute()`` once per key (a ground-truth sequence's analysis); a None sequence key is never cached."""
        if key[-1] is None:
            return compute()
        if key not in self._gt_cache:
            self._gt_cache[key] = compute()
        return self._gt_cache[key]

    def _face(self, preds, gts, fps, gt_key=None) -> tuple[dict, tuple | None]:
        """(face metrics, (render tracks, ground-truth tracks or None)); (status only, None) when they cannot run.
        A ground truth not analysed yet is analysed in a second thread beside the render: MediaPipe's landmarker
        runs on one core, so on 2 free cores the pair takes the time of one (the same values: each sequence has
        its own landmarker)."""
        from lipspace.utils.errors import LipspaceError
        from lipspace.eval import face_metrics as F

        try:
            if "face_model" not in self.provenance:  # hashes the model file: once per evaluation
                self.provenance["face_model"] = F.face_model_provenance(self.s.face_model)
                self.provenance.update({k: v for k, v in F.PROVENANCE.items() if k not in self.provenance})
            if gts is not None and preds.shape != gts.shape:
                raise LipspaceError(f"face metrics: render {preds.shape} and ground truth {gts.shape} differ")
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lipspace-face-gt") as pool:
                gt_job = None if gts is None else pool.submit(  # None key: not cached
                    self._cached, ("face", gt_key), lambda: F.analyse_frames(gts, self.s.face_model, fps=fps))
                pred = F.analyse_frames(preds, self.s.face_model, fps=fps)
                gt = None if gt_job is None else gt_job.result()
            return F.metrics_from_tracks(pred, gt, fps), (pred, gt)
        except LipspaceError as e:
            log.warning("eval: face metrics empty: %s", e)
            self.face_status = f"not computed: {e}"
            return {"face_status": self.face_status}, None

    def _lipmotion(self, tracks, audio, audio_offset_s: float, seconds: float, fps: float) -> dict:
        """Weight-free lip-sync columns (``lipspace.eval.lipmotion``) from the face tracks; NaN with
        ``lipmotion_status`` when there are none (face analysis off or failed), no audio or no ground truth."""
        from lipspace.utils.errors import LipspaceError
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
        """Local LSE columns with the sync expert, loaded once per evaluation (``lse_local.LocalSyncExpert``)."""
        from lipspace.utils.errors import LipspaceError
        from lipspace.eval.lse_local import LocalSyncExpert

        try:
            if self._expert is None or self._expert.weights != self.s.ave_weights:
                self._expert = LocalSyncExpert(self.s.ave_weights)
            out = self._expert.score(frames, lmk68, wav, fps=fps, source=source)
        except LipspaceError as e:  # e.g. a sequence shorter than one 5-frame window
            return {"lse_d_local": math.nan, "lse_c_local": math.nan, "lse_local_status": f"not computed: {e}"}
        if "lse_local_model" in out:
            self.provenance["lse_local"] = out["lse_local_model"]
        return _nan_if_none(out)

    def _lse_official(self, frames, wav: Path, fps: float, video: Path | None, scratch: Path) -> dict:
        """Official LSE columns. Whether it can run at all (syncnet-python, weights, ffmpeg) is asked once per
        evaluation; when it cannot, no video is encoded for it and every sequence gets that NaN row."""
        from lipspace.utils.errors import LipspaceError
        from lipspace.eval.lse import lse_official, official_setup

        kw = {"syncnet_weights": self.s.syncnet_weights, "s3fd_weights": self.s.s3fd_weights,
              "download": self.s.download}
        try:
            if self._official_unavailable is None:
                _, _, not_ready = official_setup(**kw)
                if not_ready is not None:
                    self._official_unavailable = _nan_if_none(not_ready)
            if self._official_unavailable is not None:
                out = dict(self._official_unavailable)
            else:
                if video is None:
                    from lipspace.eval.video import write_video

                    video = write_video(frames, scratch, fps=int(fps), audio_path=wav)
                out = _nan_if_none(lse_official(Path(video), **kw))
        except LipspaceError as e:  # a weight file with the wrong checksum, an unreadable render
            return {"lse_d": math.nan, "lse_c": math.nan, "lse_status": f"not computed: {e}"}
        if out.get("lse_model"):
            self.provenance["lse"] = out["lse_model"]
        return out


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
