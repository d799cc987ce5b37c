"""The local LSE: the LSE-D / LSE-C offset search (``lipspace.eval.lse.offset_search``) with lipspace's LOCALLY
trained audio-visual sync expert (``lipspace.av``) on mouth crops from 68-point landmarks. A sanity signal for this
project only: never comparable to published LSE-D / LSE-C.

:class:`LocalSyncExpert` is the expert loaded once (an evaluation scores many sequences with it): the checkpoint is
read and hashed once, and the audio embeddings of a clip are kept for the next sequence with the same audio (a
render and its ground truth are scored against the same samples). ``lipspace.eval.lse.lse_local`` is the one-call
form.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from lipspace.utils.errors import LipspaceError
from lipspace.eval.lse import _nan, offset_search

_AUDIO_CACHE = 4  # audio embeddings kept per expert (by the samples' digest and the frame count)


def _fill_missing(lmk: np.ndarray) -> np.ndarray:
    """Frames whose landmarks are not finite take those of the nearest finite frame."""
    ok = np.isfinite(lmk).all((1, 2))
    if ok.all():
        return lmk
    if not ok.any():
        raise LipspaceError("lmk68 has no frame with finite landmarks: cannot place mouth crops")
    idx = np.flatnonzero(ok)
    nearest = idx[np.abs(np.arange(len(lmk))[:, None] - idx[None]).argmin(1)]
    return lmk[nearest]


class LocalSyncExpert:
    """The AVE checkpoint ``weights`` (> ``$LIPSPACE_AVE_WEIGHTS`` > $LIPSPACE_CACHE/ave_local.pt, as the ``ave``
    audio backend), loaded once; :meth:`score` gives the ``lse_*_local`` columns of one sequence. A missing
    checkpoint is not an error: every score is NaN with ``lse_local_status`` saying where it looked."""

    def __init__(self, weights=None):
        from lipspace.av.backend import AVE_WEIGHTS_ENV, AveBackend, ave_weights_path

        self.weights, self.path = weights, ave_weights_path(weights)
        self._audio: OrderedDict = OrderedDict()
        self.missing: dict | None = None
        if not self.path.is_file():
            env = os.environ.get(AVE_WEIGHTS_ENV)
            self.missing = _nan("lse_local", f"no AVE checkpoint at {self.path} (weights={weights}, "
                                             f"${AVE_WEIGHTS_ENV} {'= ' + env if env else 'unset'}); train one with "
                                             f"`python -m lipspace.av.train --train <dataset> --out {self.path}`",
                                "locally trained AVE (not found), NOT SyncNet: not comparable to published "
                                "LSE-D/LSE-C")
            return
        backend = AveBackend(self.path)  # loads (cached by sha256) and reads the provenance
        self.model, self.provenance = backend.model, backend.provenance
        prov = self.provenance
        trained_on = (", ".join(f"{r['root']} frames [{r['start']}, {r['stop']})"
                                for r in prov.get("train_frames") or [])
                      or ", ".join(map(str, prov.get("train_clips", []))) or prov.get("weights", "unrecorded data"))
        self.label = (f"locally trained AVE (sha256 {backend.sha256}, trained on {trained_on}), NOT SyncNet: not "
                      f"comparable to published LSE-D/LSE-C")

    def audio_features(self, audio_path, n_frames: int) -> torch.Tensor:
        """[n_frames, dim] audio embeddings of the 16 kHz wav ``audio_path`` (windows centred on each video frame,
        as in training); kept for the next call with the same samples and frame count."""
        from lipspace.audio.features import MelBackend, read_audio

        samples = read_audio(audio_path)
        key = (hashlib.sha256(samples.tobytes()).hexdigest(), len(samples), int(n_frames))
        if key not in self._audio:
            mel = MelBackend(n_mels=int(self.model.config["n_mels"])).compute(samples)
            self._audio[key] = self.model.encode_audio_clip(mel, n_frames)
            while len(self._audio) > _AUDIO_CACHE:
                self._audio.popitem(last=False)
        self._audio.move_to_end(key)
        return self._audio[key]

    def mouth_features(self, frames: np.ndarray, lmk: np.ndarray, centres: np.ndarray) -> torch.Tensor:
        """[len(centres), dim] mouth embeddings of the 5-frame windows centred on ``centres``."""
        import cv2

        from lipspace.av import data as avd

        crop_hw = tuple(self.model.config["crop_hw"])
        boxes = avd.mouth_boxes(_fill_missing(lmk), crop_hw)
        out_hw = (crop_hw[0] + 2 * avd.MARGIN[0], crop_hw[1] + 2 * avd.MARGIN[1])
        crops = avd.centre_crop(np.stack([avd.crop_frame(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), b, out_hw)
                                          for f, b in zip(frames, boxes)]))
        h, video = avd.VIDEO_FRAMES // 2, []
        with torch.no_grad():
            for i in range(0, len(centres), 128):
                t = centres[i:i + 128]
                win = crops[t[:, None] + np.arange(avd.VIDEO_FRAMES)[None] - h]  # [B, 5, H, W]
                video.append(self.model.mouth(torch.from_numpy(np.ascontiguousarray(win))))
        return torch.cat(video)

    def score(self, frames, lmk68, audio_path, fps: float = 25.0, vshift: int = 15, source=None) -> dict:
        """``lipspace.eval.lse.lse_local``'s result for one sequence (see there)."""
        from lipspace.av import data as avd
        from lipspace.data.schema import FPS

        frames, lmk = np.asarray(frames), np.asarray(lmk68, np.float64)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise LipspaceError(f"lse_local: frames must be uint8 [T, H, W, 3] RGB, got {frames.dtype} "
                                f"{frames.shape}")
        if lmk.shape != (len(frames), 68, 2):
            raise LipspaceError(f"lse_local: lmk68 must be [T={len(frames)}, 68, 2], got {lmk.shape}")
        if abs(float(fps) - FPS) > 1e-6:
            raise LipspaceError(f"lse_local: fps={fps}, but the AVE windows are 5 frames = 0.2 s at {FPS} fps; "
                                f"resample the video to {FPS} fps first")
        if len(frames) < avd.VIDEO_FRAMES:
            raise LipspaceError(f"lse_local: {len(frames)} frames, need at least {avd.VIDEO_FRAMES} for one window")
        if self.missing is not None:
            return dict(self.missing)
        h = avd.VIDEO_FRAMES // 2
        audio = self.audio_features(audio_path, len(frames))
        centres = np.arange(h, len(frames) - h)
        v = F.normalize(self.mouth_features(frames, lmk, centres), dim=1, eps=1e-8)
        a = F.normalize(audio[centres], dim=1, eps=1e-8)
        r = offset_search(v, a, vshift)
        out = {"lse_d_local": r["min_dist"], "lse_c_local": r["conf"], "lse_offset_local": r["offset"],
               "lse_local_status": f"ok: {len(centres)} windows, offsets +-{vshift} frames",
               "lse_local_model": self.label}
        if source is not None:
            from lipspace.av.record import seen_by

            out["lse_local_seen"] = seen_by(self.provenance, source[0], float(source[1]), len(frames), fps)
        return out
