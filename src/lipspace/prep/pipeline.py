"""The preprocessing pipeline: one talking-head video -> one lipspace dataset directory (schema v1).

Stages, in order (each cached by ``lipspace.prep.cache``; a re-run redoes only what changed or was interrupted):

  decode      probe the container, audio -> 16 kHz mono ``audio.wav`` (video frames are decoded into memory
              at constant 25 fps whenever a later stage needs the source frames; decoding is cheap)
  track       MediaPipe FaceLandmarker (VIDEO mode): 478 landmarks, 52 blendshapes, transforms, validity
  crop        one square crop per clip around the face track, resized to ``size``; ``frames/``
  head        focal-length search, per-frame head pose (smoothed), ICT-FaceKit 3DMM fit (identity + 53 expr)
  parsing     class masks from landmark polygons + selfie and hair segmenters; ``parsing/``
  background  masked median of background pixels, holes inpainted; ``background.png``
  finalize    blink / lip signals, lmk68, bounds, ``tracks.npz`` + ``meta.json``, schema validation, overlays
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lipspace.utils.assets import file_sha256
from lipspace.data.schema import FPS, SAMPLE_RATE
from lipspace.utils.errors import LipspaceError
from lipspace.prep.cache import CACHE_DIR, StageCache, stage_key
from lipspace.prep.options import PrepOptions, PrepResult
from lipspace.prep.runs import evenly_spaced

log = logging.getLogger(__name__)

# Bump a stage's version when its code changes what it writes: that stage and everything after it is redone.
STAGE_VERSIONS = {"decode": 2, "track": 1, "crop": 1, "head": 1, "parsing": 1, "background": 1, "finalize": 1}
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
        self._src_frames: np.ndarray | None = None
        self._frames: np.ndarray | None = None
        self._parsing: np.ndarray | None = None

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

    def _check_out_dir(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise LipspaceError(f"{self.out}: exists and is not a directory; choose another output directory")
        if self.out.is_dir() and any(self.out.iterdir()):
            ours = (self.out / CACHE_DIR).is_dir() or (self.out / "meta.json").is_file()
            if not ours:
                raise LipspaceError(f"{self.out}: is not empty and was not written by lipspace-prep; choose an empty "
                                    f"or new output directory (nothing was changed)")
        self.out.mkdir(parents=True, exist_ok=True)

    def _decode(self):
        """Source frames at 25 fps (kept in memory until the crop stage) and the decoder's VideoInfo."""
        from lipspace.prep.io import decode_video_25fps

        self._src_frames, info = decode_video_25fps(self.video, FPS, max_side=self.opt.max_side,
                                                    max_seconds=self.opt.max_seconds)
        return self._src_frames, info

    def _source_frames(self) -> np.ndarray:
        return self._src_frames if self._src_frames is not None else self._decode()[0]

    def _crop_frames(self, indices=None) -> np.ndarray:
        """Cropped frames (all, or ``indices``): from memory when this run made them, else from frames/."""
        return self._stored("frames", self._frames, indices, rgb=True)

    def _parsing_maps(self, indices=None) -> np.ndarray:
        return self._stored("parsing", self._parsing, indices, rgb=False)

    def _stored(self, sub: str, in_memory: np.ndarray | None, indices, rgb: bool) -> np.ndarray:
        from lipspace.prep.pngio import read_pngs

        if in_memory is not None:
            return in_memory if indices is None else in_memory[indices]
        arr = read_pngs(self.out / sub, self.n_frames, rgb=rgb, indices=indices)
        if indices is None:  # keep a full read for the next stage
            if sub == "frames":
                self._frames = arr
            else:
                self._parsing = arr
        return arr

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
        import soundfile as sf

        from lipspace.prep.io import extract_audio_16k, probe_video

        info = probe_video(self.video)
        if not info.has_audio:  # fail before spending time on the video
            extract_audio_16k(self.video)  # raises the clear no-audio error
        frames, vinfo = self._decode()
        # audio_offset_s > 0 (audio late): audio sample 0 is taken from that much after video frame 0
        audio = extract_audio_16k(self.video, n_frames=len(frames), fps=FPS,
                                  video_start_s=vinfo.start_s + self.opt.audio_offset_s)
        sf.write(str(self.out / "audio.wav"), audio, SAMPLE_RATE, subtype="PCM_16")
        if info.fps and abs(info.fps - FPS) > 0.01:
            log.info("%s: %.3f fps source resampled to %d fps by presentation time", self.video, info.fps, FPS)
        return {"n_frames": len(frames), "source": asdict(info), "source_hw": list(frames.shape[1:3]),
                "video_start_s": vinfo.start_s}

    def stage_track(self) -> dict:
        from lipspace.prep.face import invalid_ranges, track_faces

        frames = self._source_frames()
        model = self._model_path("face_landmarker.task", None)
        with _bar(len(frames), "track", self.opt.progress) as bar:
            tr = track_faces(frames, model, self.opt.max_invalid_fraction, source=str(self.video), progress=bar.update)
        self.cache.save_arrays("track", landmarks=tr.landmarks, blendshapes=tr.blendshapes,
                               transforms=tr.transforms, valid=tr.valid, n_faces=tr.n_faces)
        return {"valid_fraction": float(tr.valid.mean()), "invalid_ranges_s": invalid_ranges(tr.valid, FPS),
                "multi_face_frames": int((tr.n_faces > 1).sum())}

    def stage_crop(self) -> dict:
        from lipspace.prep.crop import crop_frames, face_crop_box
        from lipspace.prep.pngio import write_pngs

        tr = self.cache.load_arrays("track")
        frames = self._source_frames()
        box = face_crop_box(tr["landmarks"], tr["valid"], frames.shape[1:3], face_scale=self.opt.face_scale,
                            source=str(self.video))
        lmk = box.apply_to_landmarks(tr["landmarks"], self.opt.size)
        self._frames = crop_frames(frames, box, self.opt.size)
        with _bar(len(self._frames), "frames", self.opt.progress) as bar:
            write_pngs(self.out / "frames", self._frames, rgb=True, progress=bar.update)
        self.cache.save_arrays("crop", landmarks=lmk)
        self._src_frames = None  # the source frames are not needed any more: free the memory
        return {"box": {"x0": box.x0, "y0": box.y0, "side": box.side}, "scale": self.opt.size / box.side}

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
        from lipspace.prep.parsing_clip import parse_frames
        from lipspace.prep.pngio import write_pngs
        from lipspace.prep.segment import Segmenters

        frames = self._crop_frames()
        tr = self.cache.load_arrays("track")
        lmk = self.cache.load_arrays("crop")["landmarks"]
        o = self.opt
        with Segmenters(self._model_path("selfie_segmenter.tflite", None),
                        self._model_path("hair_segmenter_derived.tflite", None),
                        multiclass=o.multiclass_model) as seg, _bar(len(frames), "parsing", o.progress) as bar:
            self._parsing = parse_frames(frames, lmk, tr["valid"], seg, hair_stride=o.hair_stride,
                                         progress=bar.update)
        write_pngs(self.out / "parsing", self._parsing, rgb=False)
        counts = np.bincount(self._parsing[:: max(1, len(frames) // 50)].reshape(-1), minlength=10)
        return {"class_fraction": {str(k): round(float(c) / counts.sum(), 5) for k, c in enumerate(counts)}}

    def stage_background(self) -> dict:
        import cv2

        from lipspace.prep.background import estimate_background

        frames, parsing = self._crop_frames(), self._parsing_maps()
        # The background is static: a median over BACKGROUND_FRAMES frames spread over the clip gives the same image
        # as over all of them (on the 71 s clip a spot uncovered for > 0.5 s is still seen) at a fraction of
        # the cost.
        idx = evenly_spaced(np.arange(len(frames)), BACKGROUND_FRAMES)
        bg, filled = estimate_background(frames[idx], parsing[idx] == 0, source=str(self.video))
        cv2.imwrite(str(self.out / "background.png"), np.ascontiguousarray(bg[:, :, ::-1]))
        return {"inpainted_fraction": round(float(filled.mean()), 5)}

    def stage_finalize(self) -> dict:
        from lipspace.prep.finalize import finalize

        return finalize(self)

    # ----------------------------------------------------------------------------------------------- runner
    def run(self) -> PrepResult:
        if not self.video.is_file():
            from lipspace.prep.io import probe_video

            probe_video(self.video)  # the clear missing-file / not-a-file error
        self._check_out_dir()
        self.cache = StageCache(self.out)
        result = PrepResult(self.out)
        upstream: list[str] = []
        redone = False
        for name in STAGES:
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
        result.summary = {name: (self.cache.marker(name) or {}).get("info", {}) for name in STAGES}
        return result


def prepare(video: str | Path, out_dir: str | Path, options: PrepOptions | None = None, **kwargs) -> PrepResult:
    """Preprocess ``video`` into the dataset directory ``out_dir`` (resumes / reuses cached stages)."""
    if kwargs:
        options = PrepOptions(**{**asdict(options or PrepOptions()), **kwargs})
    return Preprocessor(video, out_dir, options).run()
