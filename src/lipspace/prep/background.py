"""Estimate a clip's static background: per-pixel median over frames where the pixel is background, holes inpainted."""

from __future__ import annotations

import numpy as np

from lipspace.errors import LipspaceError

# Budget for one float32 chunk of the masked median; bounds peak memory on long clips.
_CHUNK_BYTES = 64 * 2**20
_MAX_HOLE_FRACTION = 0.9


def _check_inputs(frames: np.ndarray, mask: np.ndarray, source: str) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise LipspaceError(f"{source}: estimate_background needs uint8 RGB frames [N,H,W,3] with N >= 1, got "
                            f"{frames.dtype} {tuple(frames.shape)}; decode with lipspace.prep.io.decode_video_25fps")
    if mask.shape != frames.shape[:3]:
        raise LipspaceError(f"{source}: background mask shape {tuple(mask.shape)} does not match the frames "
                            f"{tuple(frames.shape[:3])}; pass one bool mask [N,H,W] per frame")


def _rows_per_chunk(n: int, w: int) -> int:
    return max(1, _CHUNK_BYTES // max(1, n * w * 3 * 4))


def _masked_median(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """float32 [H,W,3] median over background frames per pixel; NaN where a pixel is never background."""
    n, h, w, _ = frames.shape
    out = np.full((h, w, 3), np.nan, np.float32)
    step = _rows_per_chunk(n, w)
    for r0 in range(0, h, step):
        chunk = frames[:, r0:r0 + step].astype(np.float32)
        # NaN marks "not background" so nanmedian ignores those samples without a Python loop per pixel.
        chunk[~mask[:, r0:r0 + step]] = np.nan
        seen = mask[:, r0:r0 + step].any(axis=0)
        med = np.full(chunk.shape[1:], np.nan, np.float32)
        if seen.any():
            # Only pixels seen at least once: avoids nanmedian's all-NaN warning and wasted work.
            med[seen] = np.nanmedian(chunk[:, seen], axis=0)
        out[r0:r0 + step] = med
    return out


def _inpaint(image: np.ndarray, holes: np.ndarray, radius: float) -> np.ndarray:
    import cv2

    # TELEA works per channel, so the RGB/BGR order does not matter here.
    return cv2.inpaint(np.ascontiguousarray(image), holes.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)


def estimate_background(frames: np.ndarray, background_mask: np.ndarray, min_frames: int = 3,
                        source: str = "<frames>", inpaint_radius: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [H,W,3] background and bool [H,W] `filled` (pixels seen as background in < `min_frames` frames,
    inpainted with OpenCV TELEA). Raises LipspaceError when more than 90% of the image would be inpainted."""
    frames = np.asarray(frames)
    mask = np.asarray(background_mask, bool)
    _check_inputs(frames, mask, source)

    holes = mask.sum(axis=0) < max(1, int(min_frames))
    frac = float(holes.mean())
    if frac > _MAX_HOLE_FRACTION:
        raise LipspaceError(f"{source}: {frac:.1%} of the image is never seen as background in >= {min_frames} "
                            f"frames; the person never moves or the background mask is wrong (check the "
                            f"segmentation, or use a clip where the speaker moves)")
    med = _masked_median(frames, mask)
    image = np.clip(np.rint(np.nan_to_num(med, nan=0.0)), 0, 255).astype(np.uint8)
    if holes.any():
        image = _inpaint(image, holes, inpaint_radius)
    return image, holes
