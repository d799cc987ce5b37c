"""One square crop per clip around the face track, and cropping + resizing frames to the dataset size.

The crop is fixed for the whole clip on purpose: the NeRF's camera is static and the head moves in front of it;
a crop that followed the face would turn head motion into camera motion and break that assumption.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lipspace.utils.errors import LipspaceError


@dataclass(frozen=True)
class CropBox:
    x0: int
    y0: int
    side: int  # pixels of the source frame

    def apply_to_intrinsics(self, fx: float, fy: float, cx: float, cy: float, out_size: int):
        """Intrinsics of the cropped + resized frames, from those of the source frames."""
        s = out_size / self.side
        return fx * s, fy * s, (cx - self.x0) * s, (cy - self.y0) * s

    def apply_to_landmarks(self, landmarks: np.ndarray, out_size: int) -> np.ndarray:
        """Landmarks [..., 2 or 3] in source pixels -> pixels of the cropped + resized frames (a z column, in
        pixels like MediaPipe's, is scaled too)."""
        s = out_size / self.side
        out = np.array(landmarks, np.float32, copy=True)
        out[..., 0] = (out[..., 0] - self.x0) * s
        out[..., 1] = (out[..., 1] - self.y0) * s
        out[..., 2:] *= s
        return out


def face_crop_box(landmarks: np.ndarray, valid: np.ndarray, frame_hw: tuple[int, int], face_scale: float = 2.2,
                  centre_shift_y: float = 0.15, source: str = "<frames>") -> CropBox:
    """Square box centred on the median face centre (shifted down by ``centre_shift_y`` face heights to keep
    chin, neck and shoulders), side ``face_scale`` x the 95th-percentile face size, clamped into the frame."""
    h, w = frame_hw
    valid = np.asarray(valid, bool)
    if not valid.any():
        raise LipspaceError(f"{source}: no frame has a tracked face, so there is nothing to crop around. "
                            "Check that the clip shows a frontal face.")
    pts = np.asarray(landmarks)[valid, :, :2]
    lo, hi = pts.min(1), pts.max(1)  # per-frame face box [M,2]
    size = np.percentile((hi - lo).max(1), 95)
    centre = np.median((lo + hi) / 2, axis=0)
    centre[1] += centre_shift_y * np.median(hi[:, 1] - lo[:, 1])
    side = int(round(min(face_scale * size, h, w)))
    x0 = int(round(np.clip(centre[0] - side / 2, 0, w - side)))
    y0 = int(round(np.clip(centre[1] - side / 2, 0, h - side)))
    return CropBox(x0, y0, side)


def crop_frames(frames: np.ndarray, box: CropBox, out_size: int) -> np.ndarray:
    """uint8 [N,H,W,3] -> [N,out_size,out_size,3]; INTER_AREA when shrinking, INTER_CUBIC when enlarging."""
    interp = cv2.INTER_AREA if box.side >= out_size else cv2.INTER_CUBIC
    out = np.empty((len(frames), out_size, out_size, 3), np.uint8)
    for i, f in enumerate(frames):
        out[i] = cv2.resize(f[box.y0 : box.y0 + box.side, box.x0 : box.x0 + box.side], (out_size, out_size),
                            interpolation=interp)
    return out
