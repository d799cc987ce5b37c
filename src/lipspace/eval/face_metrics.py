"""Face-analysis metrics of rendered vs ground-truth frames (LMD, blink rate, AUE) from MediaPipe FaceLandmarker.

Every frame sequence is analysed by the MediaPipe Tasks FaceLandmarker (VIDEO mode, one face, the same opener as
preprocessing: ``lipspace.prep.face._open_landmarker``): 478 landmarks and the 52 ARKit blendshapes per frame.
Frames whose shorter side is below ``min_side`` (64², 128² renders) are upsampled with cv2 INTER_CUBIC before
detection; MediaPipe's landmarks are normalised to the image, so multiplying them by the *input* width/height maps
them back to the input's pixels exactly. Metrics compare render and ground truth frame by frame and only over
frames where a face was found in both; see PROVENANCE for the definitions.
"""

from __future__ import annotations

import functools
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipspace.data.schema import FPS, MP_BLENDSHAPE_NAMES
from lipspace.utils.errors import LipspaceError
from lipspace.eval.motion import blinks_per_second

MODEL_ASSET = "face_landmarker.task"
# The 40 lip points of MediaPipe's FACEMESH_LIPS (outer + inner contour), used when mediapipe cannot be imported;
# lip_indices() prefers mediapipe's own FaceLandmarksConnections.FACE_LANDMARKS_LIPS (a test checks they agree).
LIP_INDICES = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269,
               270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)
OUTER_EYE_CORNERS = (33, 263)  # right / left outer eye corner: the inter-ocular distance of lmd_norm
# Hysteresis on the mean eyeBlink score (lipspace.eval.motion.blink_events): MediaPipe's eyeBlink rests at
# ~0.10-0.15 with open eyes and reaches 0.45-0.8 in a blink (measured on the obama and may clips), so 0.5 misses
# partial blinks; an event starts at >= 0.4 and ends below 0.25.
BLINK_HIGH, BLINK_LOW = 0.4, 0.25
# eyeLook* (gaze direction) and _neutral are no facial action and belong to neither AUE group.
UPPER_PREFIXES = ("brow", "eyeBlink", "eyeSquint", "eyeWide")
LOWER_PREFIXES = ("jaw", "mouth", "cheek", "nose")


def _mp_version() -> str:
    try:
        return importlib.metadata.version("mediapipe")
    except importlib.metadata.PackageNotFoundError:
        return "(mediapipe not installed)"


_MODEL = f"MediaPipe FaceLandmarker {_mp_version()} (Tasks API, VIDEO mode; exact model file: face_model_provenance())"
PROVENANCE: dict[str, str] = {
    "lmd": "mouth landmark distance (Chen et al. 2018 style): mean over frames with a face in both render and ground "
           "truth and over the 40 FACEMESH_LIPS points of the Euclidean (x, y) distance render vs ground truth, in "
           f"pixels of the evaluated frame (frames < 256 px upsampled for detection only); {_MODEL}",
    "lmd_norm": "lmd divided per frame by the ground truth's inter-ocular distance (outer eye corners, mesh points "
                f"33 and 263), x100: percent of the eye distance, resolution independent; {_MODEL}",
    "blink_rate": f"blink events per second of the render: mean of eyeBlinkLeft/Right blendshapes, frames without "
                    f"a face interpolated, hysteresis events (start >= {BLINK_HIGH}, end < {BLINK_LOW}, "
                    f"lipspace.eval.motion.blink_events) over T / fps; {_MODEL}",
    "blink_rate_gt": "as blink_rate, on the ground-truth frames",
    "aue_upper": "action-unit error after SyncTalk, but from MediaPipe's 52 ARKit blendshape scores (0..1) instead "
                 "of OpenFace AU intensities (not comparable to published AUE numbers): mean |render - ground truth| "
                 f"over frames with a face in both and over the blendshapes starting with {', '.join(UPPER_PREFIXES)}"
                 f" (eyeLook* gaze and _neutral excluded); {_MODEL}",
    "aue_lower": "as aue_upper over the blendshapes starting with " + ", ".join(LOWER_PREFIXES) + f"; {_MODEL}",
    "face_found": f"fraction of rendered frames in which {_MODEL} found a face",
}


@functools.lru_cache(maxsize=1)
def lip_indices() -> tuple[int, ...]:
    """Sorted landmark indices of FACEMESH_LIPS, from mediapipe's Tasks API when importable, else LIP_INDICES."""
    try:
        from mediapipe.tasks.python.vision import FaceLandmarksConnections
    except ImportError:
        return LIP_INDICES
    return tuple(sorted({i for c in FaceLandmarksConnections.FACE_LANDMARKS_LIPS for i in (c.start, c.end)}))


def _model_path(model_path) -> Path:
    if model_path is None:
        from lipspace.utils.assets import resolve_known  # $LIPSPACE_ASSETS/models, the cache, else the official URL

        return resolve_known(MODEL_ASSET)
    p = Path(model_path).expanduser()
    if not p.is_file():
        raise LipspaceError(f"{p}: face landmarker model not found; pass the path of {MODEL_ASSET}, or leave "
                            f"model_path unset to use $LIPSPACE_ASSETS/models/{MODEL_ASSET} or the cache/download "
                            f"(lipspace.utils.assets.resolve_known('{MODEL_ASSET}'))")
    return p


def face_model_provenance(model_path=None) -> str:
    """"MediaPipe FaceLandmarker <version>, face_landmarker.task sha256 <first 12 hex>" of the model used."""
    from lipspace.utils.assets import KNOWN_ASSETS, file_sha256

    p = _model_path(model_path)
    sha = file_sha256(p)
    official = " (official float16/1)" if sha == KNOWN_ASSETS[MODEL_ASSET].sha256 else ""
    return f"MediaPipe FaceLandmarker {_mp_version()}, {p.name} sha256 {sha[:12]}{official}"


@dataclass
class FaceTracks:
    lmk: np.ndarray  # [T,478,2] float64: x, y in pixels of the frames passed in (NaN where no face)
    blend: np.ndarray  # [T,52] float64 ARKit blendshape scores (NaN where no face)
    found: np.ndarray  # [T] bool
    names: list[str]  # the 52 blendshape names in column order

    def __len__(self) -> int:
        return len(self.found)


def analyse_frames(frames: np.ndarray, model_path=None, min_side: int = 256, fps: float = FPS) -> FaceTracks:
    """Landmarks and blendshapes of uint8 RGB frames [T,H,W,3] (one face per frame; see the module doc)."""
    import cv2
    import mediapipe as mp  # deferred: ~1 s import, needed only here

    from lipspace.eval.quiet import native_logs_hidden
    from lipspace.prep.face import _open_landmarker

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise LipspaceError(f"analyse_frames needs uint8 RGB frames [T,H,W,3], got {frames.dtype} "
                            f"{tuple(frames.shape)}; convert renders with (x.clamp(0, 1) * 255).round().byte()")
    t, h, w = frames.shape[:3]
    names = list(MP_BLENDSHAPE_NAMES)
    lmk = np.full((t, 478, 2), np.nan)
    blend = np.full((t, len(names)), np.nan)
    found = np.zeros(t, bool)
    if t == 0:
        return FaceTracks(lmk, blend, found, names)
    path = _model_path(model_path)
    s = max(1.0, min_side / min(h, w))
    size = (int(round(w * s)), int(round(h * s)))  # cv2 order (width, height)
    with native_logs_hidden():  # MediaPipe's C++ log lines on fd 2 (its real errors still show)
        landmarker = _open_landmarker(path, num_faces=1)
        try:
            for i in range(t):
                img = frames[i] if s == 1.0 else cv2.resize(frames[i], size, interpolation=cv2.INTER_CUBIC)
                res = landmarker.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                           data=np.ascontiguousarray(img)), int(round(i * 1000 / fps)))
                if not res.face_landmarks:
                    continue
                # Normalised to the (upsampled) image: x * w, y * h are pixels of the input frame.
                lmk[i] = np.array([(p.x, p.y) for p in res.face_landmarks[0]]) * (w, h)
                if res.face_blendshapes:
                    score = {c.category_name: c.score for c in res.face_blendshapes[0]}
                    blend[i] = [score.get(n, np.nan) for n in names]
                found[i] = True
        finally:
            landmarker.close()
    return FaceTracks(lmk, blend, found, names)


def _both(pred: FaceTracks, gt: FaceTracks) -> np.ndarray:
    if len(pred) != len(gt):
        raise LipspaceError(f"render ({len(pred)} frames) and ground truth ({len(gt)} frames) must have the same "
                            f"number of frames; render the utterance's own frames")
    return np.asarray(pred.found, bool) & np.asarray(gt.found, bool)


def lmd(pred: FaceTracks, gt: FaceTracks) -> dict:
    """{"lmd": px, "lmd_norm": % of the ground-truth eye distance, "lmd_frames": n} over frames found in both."""
    both = _both(pred, gt)
    lips = list(lip_indices())
    p, g = np.asarray(pred.lmk, np.float64)[both], np.asarray(gt.lmk, np.float64)[both]
    if not len(p):
        return {"lmd": float("nan"), "lmd_norm": float("nan"), "lmd_frames": 0}
    per_frame = np.linalg.norm(p[:, lips] - g[:, lips], axis=-1).mean(1)  # [n] px
    a, b = OUTER_EYE_CORNERS
    iod = np.linalg.norm(g[:, a] - g[:, b], axis=-1)
    ok = iod > 0  # a degenerate ground-truth mesh has no scale
    norm = float((per_frame[ok] / iod[ok]).mean() * 100) if ok.any() else float("nan")
    return {"lmd": float(per_frame.mean()), "lmd_norm": norm, "lmd_frames": int(len(p))}


def _columns(tracks: FaceTracks, prefixes: tuple[str, ...]) -> list[int]:
    return [k for k, n in enumerate(tracks.names) if n.startswith(prefixes)]


def blink_rate(tracks: FaceTracks, fps: float) -> float:
    """Blinks per second from the mean of eyeBlinkLeft/Right (see PROVENANCE["blink_rate"]); NaN without faces."""
    found = np.asarray(tracks.found, bool)
    if not found.any():
        return float("nan")
    try:
        cols = [list(tracks.names).index(n) for n in ("eyeBlinkLeft", "eyeBlinkRight")]
    except ValueError:
        raise LipspaceError("face tracks have no eyeBlinkLeft/eyeBlinkRight blendshapes; they must use MediaPipe's "
                            "52 ARKit names (lipspace.data.schema.MP_BLENDSHAPE_NAMES)") from None
    blink = np.asarray(tracks.blend, np.float64)[:, cols].mean(1)
    found &= np.isfinite(blink)
    if not found.any():
        return float("nan")
    idx = np.arange(len(blink))
    # A frame without a face inside a blink must neither end it early nor start a second one.
    blink = np.interp(idx, idx[found], blink[found])
    return float(blinks_per_second(blink, fps, high=BLINK_HIGH, low=BLINK_LOW))


def aue(pred: FaceTracks, gt: FaceTracks) -> dict:
    """{"aue_upper", "aue_lower"}: mean |render - ground truth| blendshape score per group (see PROVENANCE)."""
    if list(pred.names) != list(gt.names):
        raise LipspaceError("render and ground-truth face tracks list different blendshape names; analyse both "
                            "with lipspace.eval.face_metrics.analyse_frames")
    both = _both(pred, gt)
    diff = np.abs(np.asarray(pred.blend, np.float64)[both] - np.asarray(gt.blend, np.float64)[both])
    out = {}
    for key, prefixes in (("aue_upper", UPPER_PREFIXES), ("aue_lower", LOWER_PREFIXES)):
        d = diff[:, _columns(gt, prefixes)]
        out[key] = float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")
    return out


def metrics_from_tracks(pred: FaceTracks, gt: FaceTracks | None = None, fps: float = FPS) -> dict:
    """face_metrics' dict from already analysed tracks (e.g. ground truth analysed once for several renders)."""
    n = len(pred)
    out: dict = {"face_found": float(np.mean(pred.found)) if n else float("nan"),
                 "blink_rate": blink_rate(pred, fps)}
    if gt is None:
        out["face_status"] = (f"face found in {int(np.sum(pred.found))}/{n} rendered frames (no ground truth: "
                              f"blink rate only)" if np.any(pred.found) else
                              f"no face found in any of the {n} rendered frames: blink_rate is NaN")
        return out
    out.update(lmd(pred, gt))
    out.update(aue(pred, gt))
    out["blink_rate_gt"] = blink_rate(gt, fps)
    out["face_found_gt"] = float(np.mean(gt.found)) if n else float("nan")
    counts = f"render {int(np.sum(pred.found))}/{n}, ground truth {int(np.sum(gt.found))}/{n} frames with a face"
    out["face_status"] = (f"ok: {counts}; metrics over the {out['lmd_frames']} frames with both" if out["lmd_frames"]
                          else f"no frame has a face in both render and ground truth ({counts}): lmd/aue are NaN")
    return out


def face_metrics(pred_frames, gt_frames=None, fps: float = FPS, model_path=None) -> dict:
    """LMD, AUE, blink rates and face-found fractions of rendered frames against ground-truth frames (same size and
    count), or only blink rate and face_found without ground truth (dubbed audio). Missing faces never raise: the
    metrics use the frames with a face in both, and are NaN with a "face_status" saying why when there are none."""
    pred_frames = np.asarray(pred_frames)
    if gt_frames is not None:
        gt_frames = np.asarray(gt_frames)
        if pred_frames.shape != gt_frames.shape:
            raise LipspaceError(f"rendered frames {tuple(pred_frames.shape)} and ground-truth frames "
                                f"{tuple(gt_frames.shape)} differ in shape; resize the ground truth to the render's "
                                f"size (cv2.INTER_AREA) and pass the same frames")
    path = _model_path(model_path)  # resolved once for both sequences
    pred = analyse_frames(pred_frames, path, fps=fps)
    gt = None if gt_frames is None else analyse_frames(gt_frames, path, fps=fps)
    return metrics_from_tracks(pred, gt, fps)
