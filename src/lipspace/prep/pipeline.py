"""The preprocessing pipeline: one talking-head video -> one lipspace dataset directory (schema v1).

Stages, in order (each cached by ``lipspace.prep.cache``; a re-run redoes only what changed or was interrupted):

  decode      probe the container, count the 25 fps frames, audio -> 16 kHz mono ``audio.wav``
  track       MediaPipe FaceLandmarker (VIDEO mode): 478 landmarks, 52 blendshapes, transforms, validity
  crop        one square crop per clip around the face track, resized to ``size``; ``frames/``
  head        focal-length search, per-frame head pose (smoothed), ICT-FaceKit 3DMM fit (identity + 53 expr)
  parsing     class masks from landmark polygons + selfie and hair segmenters; ``parsing/``
  background  masked median of background pixels, holes inpainted; ``background.png``
  stabilize   only with ``stabilize=sync``: SyncTalk's Head-Sync Stabilizer, optical-flow keypoints + bundle
              adjustment refine the head poses (lipspace.prep.stabilize); with the default ``none`` the stage is
              not part of the chain at all, so the keys and outputs are those of a pipeline without it
  finalize    blink / lip signals, lmk68, bounds, ``tracks.npz`` + ``meta.json``, schema validation, overlays

No stage holds the clip's frames: the video is decoded as a stream (decode, track, and again to crop), frames/ and
parsing/ are written and read in chunks (lipspace.prep.frame_stages), so peak memory hardly grows with the clip's
length; ``run`` estimates it first and refuses a run that cannot fit (lipspace.prep.memory).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lipspace.utils.assets import file_sha256
from lipspace.data.schema import FPS
from lipspace.utils.errors import LipspaceError
from lipspace.prep.cache import CACHE_DIR, StageCache, stage_key
from lipspace.prep.options import PrepOptions, PrepResult

log = logging.getLogger(__name__)

# Bump a stage's version when its code changes what it writes: that stage and everything after it is redone.
STAGE_VERSIONS = {"decode": 2, "track": 1, "crop": 1, "head": 1, "parsing": 1, "background": 1, "stabilize": 1,
                  "finalize": 2}
STAGES = tuple(STAGE_VERSIONS)
BACKGROUND_FRAMES = 150


def _bar(total: int, desc: str, enabled: bool | None):
    from tqdm.auto import tqdm

    # tqdm's disable=None: draw only on a terminal (never floods a log file).
    return tqdm(total=total, desc=f"{desc:<10}", unit="fr", disable={True: False, False: True}.get(enabled),
                leave=False, file=sys.stderr, dynamic_ncols=True)


class Preprocessor:
    """Runs the stages for one video and output directory; see the module docstring."""

    def __init__(self, video: str | Path, out_dir: str | Path, options: PrepOptions | None = None):
        self.video = Path(video)
        self.out = Path(out_dir)
        self.opt = options or PrepOptions()
        self._check_options()

    # ----------------------------------------------------------------------------------------------- plumbing
    def _check_options(self) -> None:
        o = self.opt
        if not (64 <= o.size <= 2048) or o.size % 2:
            raise LipspaceError(f"size={o.size}: choose an even frame size between 64 and 2048 (default 512)")
        if o.max_side < 128:
            raise LipspaceError(f"max_side={o.max_side}: must be at least 128 pixels (default 1280)")
        if not 0.0 <= o.max_invalid_fraction < 1.0:
            raise LipspaceError(f"max_invalid_fraction={o.max_invalid_fraction}: must be in [0, 1)")
        if o.hair_stride < 1:
            raise LipspaceError(f"hair_stride={o.hair_stride}: must be >= 1")
        if o.face_model_kind not in ("ict", "bfm"):
            raise LipspaceError(f"face_model_kind={o.face_model_kind!r}: choose 'ict' or 'bfm'")
        if o.stabilize not in ("none", "sync"):
            raise LipspaceError(f"stabilize={o.stabilize!r}: choose 'none' (the fitted, smoothed poses) or 'sync' "
                                f"(SyncTalk's Head-Sync Stabilizer)")

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages this run chains: STAGES without ``stabilize`` unless it is asked for."""
        return tuple(s for s in STAGES if s != "stabilize" or self.opt.stabilize != "none")

    def _check_out_dir(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise LipspaceError(f"{self.out}: exists and is not a directory; choose another output directory")
        if self.out.is_dir() and any(self.out.iterdir()):
            ours = (self.out / CACHE_DIR).is_dir() or (self.out / "meta.json").is_file()
            if not ours:
                raise LipspaceError(f"{self.out}: is not empty and was not written by lipspace-prep; choose an empty "
                                    f"or new output directory (nothing was changed)")
        self.out.mkdir(parents=True, exist_ok=True)

    def video_frames(self, pixels: bool = True, warn: bool = False):
        """The source frames at 25 fps as a stream (each iteration decodes the video again; nothing is kept)."""
        from lipspace.prep.video_frames import VideoFrames

        return VideoFrames(self.video, FPS, max_side=self.opt.max_side, max_seconds=self.opt.max_seconds,
                           pixels=pixels, warn=warn)

    def crop_frames(self, indices) -> np.ndarray:
        """Cropped frames ``indices`` [k,size,size,3], read from frames/."""
        from lipspace.prep.pngio import read_pngs

        return read_pngs(self.out / "frames", None, rgb=True, indices=indices)

    def parsing_maps(self, indices) -> np.ndarray:
        """Parsing maps ``indices`` [k,size,size], read from parsing/."""
        from lipspace.prep.pngio import read_pngs

        return read_pngs(self.out / "parsing", None, rgb=False, indices=indices)

    @property
    def n_frames(self) -> int:
        return int(self.cache.marker("decode")["info"]["n_frames"])

    def _model_path(self, known: str, given: str | None) -> Path:
        from lipspace.utils.assets import resolve_known

        if given:
            p = Path(given)
            if not p.is_file():
                raise LipspaceError(f"{p}: model file not found; check the path or leave the option unset to use "
                                    f"the default {known}")
            return p
        return resolve_known(known)

    # ----------------------------------------------------------------------------------------------- stages
    def _params(self, name: str) -> dict:
        o = self.opt
        if name == "decode":
            return {"video_sha256": file_sha256(self.video), "max_side": o.max_side, "max_seconds": o.max_seconds,
                    "audio_offset_s": o.audio_offset_s}
        if name == "track":
            return {"model": file_sha256(self._model_path("face_landmarker.task", None)),
                    "max_invalid_fraction": o.max_invalid_fraction}
        if name == "crop":
            return {"size": o.size, "face_scale": o.face_scale}
        if name == "head":
            return {"model": file_sha256(self._face_model_path()), "kind": o.face_model_kind}
        if name == "parsing":
            return {"selfie": file_sha256(self._model_path("selfie_segmenter.tflite", None)),
                    "hair": file_sha256(self._model_path("hair_segmenter_derived.tflite", None)),
                    "multiclass": file_sha256(o.multiclass_model) if o.multiclass_model else None,
                    "hair_stride": o.hair_stride}
        if name == "stabilize":
            return {"method": o.stabilize}
        if name == "finalize":
            return {"overlays": o.overlays}
        return {}

    def _face_model_path(self) -> Path:
        if self.opt.face_model:
            return self._model_path("ict_face_light.npz", self.opt.face_model)
        if self.opt.face_model_kind == "bfm":
            raise LipspaceError("face_model_kind=bfm needs face_model=<path to BFM_model_front.mat> (the Basel Face "
                                "Model is licensed; lipspace cannot download it)")
        return self._model_path("ict_face_light.npz", None)

    def stage_decode(self) -> dict:
        from lipspace.prep.frame_stages import decode

        return decode(self)

    def stage_track(self) -> dict:
        from lipspace.prep.frame_stages import track

        return track(self)

    def stage_crop(self) -> dict:
        from lipspace.prep.frame_stages import crop

        return crop(self)

    def stage_head(self) -> dict:
        from lipspace.prep.facemodel import load_face_model
        from lipspace.prep.fit3dmm import fit_head

        tr = self.cache.load_arrays("track")
        lmk = self.cache.load_arrays("crop")["landmarks"]
        model = load_face_model(self._face_model_path(), kind=self.opt.face_model_kind)
        with _bar(3, "head", self.opt.progress) as bar:  # focal search, identity, pose + expressions
            def step(what: str) -> None:
                bar.set_postfix_str(what)
                bar.update(1)

            fit = fit_head(lmk[..., :2], tr["valid"], (self.opt.size, self.opt.size), model,
                           blendshapes=tr["blendshapes"], fps=FPS, progress=step)
        self.cache.save_arrays("head", intrinsics=fit.intrinsics, pose=fit.pose, pose_raw=fit.pose_raw,
                               identity=fit.identity, expr=fit.expr, reproj_px=fit.reproj_px)
        return {**fit.summary(), "expr_names": list(model.expr_names)}

    def stage_parsing(self) -> dict:
        from lipspace.prep.frame_stages import parsing

        return parsing(self)

    def stage_background(self) -> dict:
        from lipspace.prep.frame_stages import background

        return background(self)

    def stage_stabilize(self) -> dict:
        from lipspace.prep.stabilize import stabilize

        return stabilize(self)

    def stage_finalize(self) -> dict:
        from lipspace.prep.finalize import finalize

        return finalize(self)

    # ----------------------------------------------------------------------------------------------- runner
    def run(self) -> PrepResult:
        from lipspace.prep.memory import check_memory

        check_memory(self.video, self.opt)  # the clear missing-file / not-a-video errors too; before any write
        self._check_out_dir()
        self.cache = StageCache(self.out)
        result = PrepResult(self.out)
        upstream: list[str] = []
        redone = False
        for name in self.stages:
            key = stage_key(name, STAGE_VERSIONS[name], self._params(name), upstream)
            upstream = [key]  # the pipeline is a chain: each stage hashes the one before it
            if not redone and self.cache.is_done(name, key):
                result.cached.append(name)
                result.seconds[name] = 0.0
                continue
            # Once a stage is redone, every stage after it is redone too: their inputs were rewritten (a changed
            # parameter also changes their keys; an interrupted stage does not).
            redone = True
            self.cache.invalidate(name)
            t0 = time.perf_counter()
            info = getattr(self, f"stage_{name}")()
            dt = time.perf_counter() - t0
            self.cache.mark_done(name, key, info, seconds=dt)
            result.seconds[name] = dt
            log.info("%s: stage %-10s %6.1f s", self.out, name, dt)
        result.n_frames = self.n_frames
        result.summary = {name: (self.cache.marker(name) or {}).get("info", {}) for name in self.stages}
        return result


def prepare(video: str | Path, out_dir: str | Path, options: PrepOptions | None = None, **kwargs) -> PrepResult:
    """Preprocess ``video`` into the dataset directory ``out_dir`` (resumes / reuses cached stages)."""
    if kwargs:
        options = PrepOptions(**{**asdict(options or PrepOptions()), **kwargs})
    return Preprocessor(video, out_dir, options).run()
