"""Parsing of a clip (``parse_frames``): the segmenters (lipspace.prep.segment) run over the frames, the hair model on
one frame of each block of ``hair_stride`` with its map carried to the block's other frames by the landmark similarity
(hair moves with the head), the segmentation of the next block overlapping the parsing of this one (``threads``), and
each frame is parsed by lipspace.prep.parsing.parse_frame. Frames with invalid landmarks: the nearest valid frame's
landmarks are used when it is at most ``max_gap`` frames away (the head moves little in a fraction of a second);
otherwise the frame gets a landmark-free parse: background / hair (hair and person) / torso (rest of the person), no
head classes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from lipspace.prep.parsing import parse_frame
from lipspace.utils.errors import LipspaceError

# Stable points for the similarity that carries a strided hair map to neighbouring frames.
_STABLE = (33, 133, 362, 263, 1, 168, 152, 10, 234, 454, 61, 291)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (Umeyama) mapping src points onto dst points."""
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    rot = u @ e @ vt
    scale = float((sig * np.diag(e)).sum() / max((s ** 2).sum() / len(src), 1e-12))
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = md - m[:, :2] @ ms
    return m


def _nearest_valid(valid: np.ndarray, max_gap: int) -> np.ndarray:
    """Index of the nearest valid frame for every frame (itself when valid), -1 when none within max_gap."""
    n = len(valid)
    idx = np.flatnonzero(valid)
    if len(idx) == 0:
        return np.full(n, -1)
    pos = np.clip(np.searchsorted(idx, np.arange(n)), 0, len(idx) - 1)
    cand = np.stack([idx[np.maximum(pos - 1, 0)], idx[pos]])
    best = cand[np.argmin(np.abs(cand - np.arange(n)), axis=0), np.arange(n)]
    return np.where(np.abs(best - np.arange(n)) <= max_gap, best, -1)


def parse_frames(frames: np.ndarray, landmarks: np.ndarray, valid: np.ndarray, segmenters, progress=None,
                 hair_stride: int = 3, max_gap: int = 12, threads: bool = True, first: int | None = None,
                 **kwargs) -> np.ndarray:
    """Parse uint8 RGB frames [N,H,W,3] -> uint8 [N,H,W] with an open lipspace.prep.segment.Segmenters.

    landmarks [N,478,2|3] in pixels of the frames, valid [N] bool. ``hair_stride`` k > 1 runs the hair model on
    one frame of each block of k (its centre) and carries that map to the other frames of the block by the
    landmark similarity between the two frames (hair moves with the head), so each frame's hair comes from at most
    k // 2 frames away. The person model runs on every frame. ``threads`` overlaps the segmentation of the next
    block with the parsing of this one (TFLite releases the GIL). ``progress(1)`` is called after each frame.
    A long clip is parsed in chunks: with ``first`` given, ``frames`` are the clip's frames ``first`` ...
    ``first + len(frames) - 1`` while landmarks and valid cover the whole clip; a chunk that starts at a multiple of
    hair_stride and ends at one (or at the clip's end) gives exactly the maps of one call on the whole clip (the
    hair blocks and the nearest valid frames are the same). Other keyword arguments go to parse_frame."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise LipspaceError(f"parse_frames needs uint8 RGB frames [N,H,W,3], got {frames.dtype} {frames.shape}")
    landmarks = np.asarray(landmarks)
    valid = np.asarray(valid, bool)
    n = len(valid) if first is not None else len(frames)  # frames of the clip; this call parses first ... end - 1
    first = first or 0
    end = first + len(frames)
    if landmarks.shape[:2] != (n, 478) or valid.shape != (n,):
        raise LipspaceError(f"parse_frames: landmarks {landmarks.shape} / valid {valid.shape} do not match {n} "
                            f"frames (expected [N,478,2|3] and [N])")
    if hair_stride < 1:
        raise LipspaceError(f"hair_stride={hair_stride}: must be >= 1")
    if first % hair_stride or end > n or (end < n and end % hair_stride):
        raise LipspaceError(f"parse_frames: frames {first}..{end - 1} of {n}: a chunk must start and end at a "
                            f"multiple of hair_stride={hair_stride} (or end at the clip's end)")
    src = _nearest_valid(valid, max_gap)
    multi = segmenters.has_multiclass
    blocks = [(b, min(b + hair_stride, n)) for b in range(first, end, hair_stride)]

    def frame(i: int) -> np.ndarray:  # clip index -> this chunk's frame
        return frames[i - first]

    def segment_block(b0: int, b1: int):
        if multi:
            return [segmenters.multiclass(frame(i)) for i in range(b0, b1)], None
        key = (b0 + b1 - 1) // 2
        hk = segmenters.hair(frame(key)) if hair_stride > 1 else None
        people = [segmenters.person(frame(i)) for i in range(b0, b1)]
        if hair_stride == 1:
            return people, [segmenters.hair(frame(b0))]
        return people, (key, hk)

    out = np.zeros(frames.shape[:3], np.uint8)
    ex = ThreadPoolExecutor(1) if threads and len(blocks) > 1 else None
    try:
        nxt = ex.submit(segment_block, *blocks[0]) if ex else None
        for j, (b0, b1) in enumerate(blocks):
            seg = nxt.result() if ex else segment_block(b0, b1)
            if ex and j + 1 < len(blocks):
                nxt = ex.submit(segment_block, *blocks[j + 1])
            maps, hair = seg
            for i in range(b0, b1):
                lm = landmarks[src[i]] if src[i] >= 0 else None
                extra = {}
                if multi:
                    mc = maps[i - b0]
                    person, hmap = 255 - mc[0], mc[1]
                    extra = {"body_skin": mc[2], "clothes": mc[4]}
                else:
                    person = maps[i - b0]
                    if hair_stride == 1:
                        hmap = hair[0]
                    else:
                        key, hk = hair
                        hmap = hk
                        if i != key and lm is not None and src[key] >= 0:
                            k_lm = landmarks[src[key]][list(_STABLE), :2].astype(np.float64)
                            m = _similarity(k_lm, lm[list(_STABLE), :2].astype(np.float64))
                            hmap = cv2.warpAffine(hk, m, hk.shape[::-1], flags=cv2.INTER_LINEAR,
                                                  borderMode=cv2.BORDER_REPLICATE)
                out[i - first] = parse_frame(person, hmap, lm, frame=frame(i), **extra, **kwargs)
                if progress is not None:
                    progress(1)
    finally:
        if ex:
            ex.shutdown(wait=True, cancel_futures=True)
    return out
