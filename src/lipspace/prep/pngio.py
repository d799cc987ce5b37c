"""Parallel PNG writing/reading of frame sequences (OpenCV releases the GIL, so threads overlap the encoding)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from lipspace.data.schema import frame_name
from lipspace.utils.errors import LipspaceError

# zlib level 1 with the "up" row filter: measured on 512^2 frames of the anchor clip, 6.7 ms and 203 KB per frame
# against 15.1 ms and 202 KB for OpenCV's default (level 3, adaptive filters).
_PNG_FLAGS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def write_pngs(out_dir: Path, images: np.ndarray, rgb: bool, progress=None) -> None:
    """images [N,H,W,3] RGB (rgb=True) or [N,H,W] labels -> out_dir/000000.png ...; stale extra files removed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        img = images[i][:, :, ::-1] if rgb else images[i]
        path = out_dir / frame_name(i)
        tmp = out_dir / f".{frame_name(i)}.tmp.png"
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(img), _PNG_FLAGS):
            raise LipspaceError(f"{path}: could not be written (disk full or no permission?)")
        os.replace(tmp, path)

    with ThreadPoolExecutor(_workers()) as pool:
        for _ in pool.map(one, range(len(images))):
            if progress is not None:
                progress(1)
    for p in out_dir.glob("*.png"):  # a previous, longer run of the same directory
        if p.stem.isdigit() and int(p.stem) >= len(images):
            p.unlink()


def read_pngs(in_dir: Path, n: int | None, rgb: bool, indices=None) -> np.ndarray:
    """Frames 0..n-1 of in_dir (or only ``indices``) stacked: [k,H,W,3] RGB or [k,H,W] labels."""
    in_dir = Path(in_dir)

    def one(i: int) -> np.ndarray:
        path = in_dir / frame_name(i)
        img = cv2.imread(str(path), cv2.IMREAD_COLOR if rgb else cv2.IMREAD_UNCHANGED)
        if img is None:
            raise LipspaceError(f"{path}: missing or unreadable; delete {in_dir.parent / '.prep'} to redo the stages")
        return img[:, :, ::-1] if rgb else img

    with ThreadPoolExecutor(_workers()) as pool:
        return np.stack(list(pool.map(one, range(n) if indices is None else [int(i) for i in indices])))
