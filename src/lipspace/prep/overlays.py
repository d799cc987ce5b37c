"""Debug overlays a person checks by eye: parsing colours, MediaPipe landmarks, the 68 points, head-pose axes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lipspace.data.schema import PARSING_CLASSES, frame_name

# One colour per parsing class (RGB), legend drawn on every overlay.
CLASS_COLOURS = np.array([
    (0, 0, 0),  # background
    (140, 70, 20),  # hair
    (250, 200, 150),  # face_skin
    (230, 30, 60),  # lips
    (90, 0, 120),  # mouth_interior
    (40, 200, 250),  # eyes
    (60, 160, 40),  # brows
    (250, 140, 0),  # nose
    (200, 120, 200),  # neck
    (60, 90, 220),  # torso
], np.uint8)
assert len(CLASS_COLOURS) == len(PARSING_CLASSES)


def colourise(parsing: np.ndarray) -> np.ndarray:
    return CLASS_COLOURS[np.asarray(parsing, np.intp)]


def _project(pts: np.ndarray, pose: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    fx, fy, cx, cy = intrinsics
    pc = pts @ pose[:3, :3].T + pose[:3, 3]
    return np.stack([fx * pc[:, 0] / pc[:, 2] + cx, fy * pc[:, 1] / pc[:, 2] + cy], -1)


def draw_overlay(frame: np.ndarray, parsing: np.ndarray, landmarks: np.ndarray | None, lmk68: np.ndarray | None,
                 pose: np.ndarray | None, intrinsics: np.ndarray | None, text: str = "", alpha: float = 0.45,
                 axis_length: float = 0.8) -> np.ndarray:
    """RGB uint8 [H, 2W, 3]: left the frame with landmarks (MediaPipe grey, 68 points green, mouth 48-67 red)
    and pose axes (x red, y green, z blue from the head-space origin); right the parsing blended over the frame."""
    left = frame.copy()
    s = max(1, frame.shape[0] // 256)
    if landmarks is not None:
        for x, y in np.asarray(landmarks)[:, :2]:
            cv2.circle(left, (int(x), int(y)), s, (200, 200, 200), -1, cv2.LINE_AA)
    if lmk68 is not None:
        for k, (x, y) in enumerate(np.asarray(lmk68)):
            cv2.circle(left, (int(x), int(y)), s + 1, (255, 40, 40) if k >= 48 else (40, 255, 40), -1, cv2.LINE_AA)
    if pose is not None and intrinsics is not None:
        axes = np.array([[0, 0, 0], [axis_length, 0, 0], [0, axis_length, 0], [0, 0, axis_length]], np.float64)
        p = _project(axes, np.asarray(pose, np.float64), np.asarray(intrinsics, np.float64))
        if np.isfinite(p).all():
            o = tuple(int(v) for v in p[0])
            for k, col in zip(range(1, 4), ((255, 0, 0), (0, 255, 0), (0, 0, 255)), strict=True):
                cv2.arrowedLine(left, o, tuple(int(v) for v in p[k]), col, s + 1, cv2.LINE_AA, tipLength=0.15)
    right = (frame * (1 - alpha) + colourise(parsing) * alpha).astype(np.uint8)
    out = np.concatenate([left, right], axis=1)
    y = 14 * s
    for line in text.splitlines():
        cv2.putText(out, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * s, (255, 255, 0), s, cv2.LINE_AA)
        y += 14 * s
    # Legend on the right half.
    for c, name in PARSING_CLASSES.items():
        yy = 12 * s * (c + 1)
        x0 = frame.shape[1] + frame.shape[1] - 110 * s
        cv2.rectangle(out, (x0, yy - 8 * s), (x0 + 8 * s, yy), tuple(int(v) for v in CLASS_COLOURS[c]), -1)
        cv2.putText(out, name, (x0 + 11 * s, yy), cv2.FONT_HERSHEY_SIMPLEX, 0.3 * s, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_overlays(out_dir: Path, indices, frames, parsing, landmarks, lmk68, pose, intrinsics, texts) -> list[Path]:
    """Write ``<out_dir>/overlay_<frame>.png`` for each frame index in ``indices``; the arrays hold those frames
    only, in the same order (``landmarks`` / ``lmk68`` / ``pose`` may be None)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (i, text) in enumerate(zip(indices, texts, strict=True)):
        img = draw_overlay(frames[k], parsing[k], None if landmarks is None else landmarks[k],
                           None if lmk68 is None else lmk68[k], None if pose is None else pose[k], intrinsics, text)
        p = out_dir / f"overlay_{frame_name(int(i))}"
        cv2.imwrite(str(p), np.ascontiguousarray(img[:, :, ::-1]))
        paths.append(p)
    return paths
