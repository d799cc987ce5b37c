"""Face tracking of a decoded 25-fps clip with the MediaPipe Tasks FaceLandmarker (VIDEO mode).

Per frame: 478 landmarks (pixels), 52 blendshapes (MediaPipe order), the 4x4 facial transformation matrix.
Frames without a face are marked invalid; when two faces are seen the largest one is kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipspace.data.schema import FPS, MP_BLENDSHAPE_NAMES
from lipspace.utils.errors import LipspaceError
from lipspace.prep.runs import true_runs

log = logging.getLogger(__name__)

N_LANDMARKS = 478
N_BLENDSHAPES = 52


@dataclass
class FaceTracks:
    landmarks: np.ndarray  # [N,478,3] float32: x, y in pixels of the frames; z = MediaPipe z * width (pixels)
    blendshapes: np.ndarray  # [N,52] float32, MediaPipe order (see names)
    transforms: np.ndarray  # [N,4,4] float32 facial transformation matrix (identity where invalid)
    valid: np.ndarray  # [N] bool: a face was found
    n_faces: np.ndarray  # [N] int: faces MediaPipe reported (0, 1 or 2)
    names: list[str] = field(default_factory=lambda: list(MP_BLENDSHAPE_NAMES))

    def __len__(self) -> int:
        return len(self.valid)


def invalid_ranges(valid: np.ndarray, fps: float = FPS) -> list[tuple[float, float]]:
    """Time ranges [start, end) in seconds of consecutive invalid frames (frame i covers [i/fps, (i+1)/fps))."""
    return [(s / fps, e / fps) for s, e in true_runs(~np.asarray(valid, bool))]


def _fmt_ranges(ranges: list[tuple[float, float]], limit: int = 8) -> str:
    s = ", ".join(f"{a:.2f}-{b:.2f}s" for a, b in ranges[:limit])
    return s + (f" (+{len(ranges) - limit} more)" if len(ranges) > limit else "")


def _fmt_frames(idx: list[int], limit: int = 10) -> str:
    s = ", ".join(str(i) for i in idx[:limit])
    return s + (f" (+{len(idx) - limit} more)" if len(idx) > limit else "")


def _open_landmarker(model_path: Path, num_faces: int):
    try:
        from mediapipe.tasks.python import BaseOptions
        from mediapipe.tasks.python.vision import FaceLandmarker, FaceLandmarkerOptions, RunningMode
    except ImportError as e:
        raise LipspaceError(f"mediapipe is not importable ({e}); install it with "
                            f"`pip install -c constraints.txt mediapipe==1.2.2`") from None
    opts = FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(model_path)),
        running_mode=RunningMode.VIDEO,
        num_faces=num_faces,
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
    )
    try:
        return FaceLandmarker.create_from_options(opts)
    except (RuntimeError, ValueError, OSError) as e:
        why = " ".join(str(e).split())[:200]
        raise LipspaceError(f"{model_path}: cannot load as a MediaPipe FaceLandmarker model ({why}); use the official "
                            "face_landmarker.task "
                            "(lipspace.utils.assets.resolve_known('face_landmarker.task'))") from None


def _check_frame(img, source: str) -> None:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
        what = f"{img.dtype} {tuple(img.shape)}" if isinstance(img, np.ndarray) else type(img).__name__
        raise LipspaceError(f"{source}: track_faces needs uint8 RGB frames [H,W,3], got {what}; decode with "
                            f"lipspace.prep.video_frames.VideoFrames")


def track_faces(frames, model_path: str | Path, max_invalid_fraction: float = 0.2, source: str = "<frames>",
                fps: float = FPS, num_faces: int = 2, progress=None, n_frames: int | None = None) -> FaceTracks:
    """Track the (largest) face in uint8 RGB frames at `fps`; see FaceTracks for the outputs.

    ``frames``: an array [N,H,W,3], or an iterable of [H,W,3] frames (e.g. lipspace.prep.video_frames.VideoFrames,
    so a long clip is never held in memory) with its length ``n_frames``. ``progress``, when given, is called with 1
    after each frame (e.g. a tqdm bar's ``update``)."""
    import mediapipe as mp  # deferred: the import costs ~1 s and only preprocessing needs it

    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
            raise LipspaceError(f"{source}: track_faces needs uint8 RGB frames [N,H,W,3] with N >= 1, got "
                                f"{frames.dtype} {tuple(frames.shape)}; decode with "
                                f"lipspace.prep.io.decode_video_25fps")
        n_frames = len(frames)
    elif n_frames is None or n_frames < 1:
        raise LipspaceError(f"{source}: track_faces needs n_frames >= 1 with an iterable of frames, got {n_frames}")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise LipspaceError(f"{model_path}: face landmarker model not found; resolve it with "
                            f"lipspace.utils.assets.resolve_known('face_landmarker.task') or set LIPSPACE_ASSETS")
    n = n_frames
    lmk = np.zeros((n, N_LANDMARKS, 3), np.float32)
    bs = np.zeros((n, N_BLENDSHAPES), np.float32)
    tf = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    valid = np.zeros(n, bool)
    n_faces = np.zeros(n, np.int64)
    multi: list[int] = []
    seen = 0

    landmarker = _open_landmarker(model_path, num_faces)
    try:
        for i, frame in enumerate(frames):
            if i >= n:
                raise LipspaceError(f"{source}: track_faces got more frames than n_frames={n}")
            _check_frame(frame, source)
            seen = i + 1
            h, w = frame.shape[:2]
            img = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
            # Timestamps must increase strictly; frame i is shown at i / fps.
            res = landmarker.detect_for_video(img, int(round(i * 1000 / fps)))
            if progress is not None:
                progress(1)
            faces = res.face_landmarks or []
            n_faces[i] = len(faces)
            if not faces:
                continue
            scale = np.array([w, h, w], np.float32)
            pts = [np.array([(p.x, p.y, p.z) for p in f], np.float32) * scale for f in faces]
            k = 0
            if len(pts) > 1:
                multi.append(i)
                areas = [float(np.ptp(q[:, 0]) * np.ptp(q[:, 1])) for q in pts]
                k = int(np.argmax(areas))
            lmk[i] = pts[k]
            if res.face_blendshapes and len(res.face_blendshapes) > k:
                bs[i] = [c.score for c in res.face_blendshapes[k]]
            if res.facial_transformation_matrixes and len(res.facial_transformation_matrixes) > k:
                tf[i] = np.asarray(res.facial_transformation_matrixes[k], np.float32).reshape(4, 4)
            valid[i] = True
    finally:
        landmarker.close()
    if seen != n:
        raise LipspaceError(f"{source}: track_faces got {seen} frames, n_frames={n} was given")

    if multi:
        log.warning("%s: %d frame(s) show more than one face (frames %s); keeping the largest face in each — crop "
                    "the clip to the speaker if that is the wrong one", source, len(multi), _fmt_frames(multi))
    if not valid.any():
        raise LipspaceError(f"{source}: no face found in any of the {n} frames; lipspace needs a clip of one visible, "
                            f"roughly frontal speaker (check the file is the right one and the face is not tiny)")
    ranges = invalid_ranges(valid, fps)
    if ranges:
        frac = 1.0 - valid.mean()
        if frac > max_invalid_fraction:
            raise LipspaceError(f"{source}: no face in {frac:.1%} of the frames (> max_invalid_fraction="
                                f"{max_invalid_fraction:g}) at {_fmt_ranges(ranges)}; crop or trim the clip to where "
                                f"the face is visible, or raise max_invalid_fraction")
        log.warning("%s: no face in %d of %d frames (%.1f%%) at %s; these frames are marked invalid",
                    source, int((~valid).sum()), n, 100 * frac, _fmt_ranges(ranges))
    return FaceTracks(landmarks=lmk, blendshapes=bs, transforms=tf, valid=valid, n_faces=n_faces)
