"""Background estimation: masked per-pixel median over a moving occluder, inpainting of never-seen pixels."""

from __future__ import annotations

import numpy as np
import pytest

from lipspace.utils.errors import LipspaceError
from lipspace.prep import background as bgmod
from lipspace.prep.background import estimate_background

H, W, N, SQ = 48, 64, 20, 16


def _true_background() -> np.ndarray:
    # Smooth gradients plus fine noise: textured, yet locally smooth enough to judge inpainting.
    y, x = np.mgrid[0:H, 0:W]
    rng = np.random.default_rng(0)
    base = np.stack([40 + 2 * x, 60 + 3 * y, 100 + x + y], -1).astype(np.float32)
    return np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)


def _occluded(positions) -> tuple[np.ndarray, np.ndarray]:
    bg = _true_background()
    frames = np.repeat(bg[None], len(positions), 0)
    mask = np.ones(frames.shape[:3], bool)
    for i, (r, c) in enumerate(positions):
        frames[i, r:r + SQ, c:c + SQ] = (255, 0, 255)  # opaque square, far from any background colour
        mask[i, r:r + SQ, c:c + SQ] = False
    return frames, mask


def test_moving_square_recovers_background_exactly():
    positions = [(16, int(c)) for c in np.linspace(0, W - SQ, N)]
    frames, mask = _occluded(positions)
    img, filled = estimate_background(frames, mask)
    bg = _true_background()
    seen = mask.sum(0) >= 3
    assert img.dtype == np.uint8 and img.shape == (H, W, 3)
    assert not filled[seen].any()
    assert np.abs(img.astype(int) - bg.astype(int))[seen].max() <= 1


def test_always_covered_region_is_inpainted():
    # The square jitters by 4 px, so its central 12x12 block is never background.
    positions = [(16 + (i % 2) * 4, 24 + (i // 2 % 2) * 4) for i in range(N)]
    frames, mask = _occluded(positions)
    img, filled = estimate_background(frames, mask)
    never = ~mask.any(0)
    assert never.sum() > 100 and filled[never].all()
    bg = _true_background().astype(int)
    # Filled values come from neighbours, not the magenta occluder: close to the smooth true background.
    err = np.abs(img.astype(int) - bg)[filled]
    assert err.mean() < 12 and err.max() < 40
    # Outside the holes the median is still exact.
    assert np.abs(img.astype(int) - bg)[~filled].max() <= 1


def test_all_covered_raises():
    frames = np.zeros((5, H, W, 3), np.uint8)
    with pytest.raises(LipspaceError, match="clip.mp4.*never moves"):
        estimate_background(frames, np.zeros((5, H, W), bool), source="clip.mp4")


def test_shape_mismatch_raises():
    frames = np.zeros((5, H, W, 3), np.uint8)
    with pytest.raises(LipspaceError, match="does not match"):
        estimate_background(frames, np.ones((5, H, W + 1), bool))
    with pytest.raises(LipspaceError, match="uint8"):
        estimate_background(frames.astype(np.float32), np.ones((5, H, W), bool))


def test_chunking_gives_same_result(monkeypatch):
    positions = [(16, int(c)) for c in np.linspace(0, W - SQ, N)]
    frames, mask = _occluded(positions)
    ref, _ = estimate_background(frames, mask)
    monkeypatch.setattr(bgmod, "_CHUNK_BYTES", 1)  # one row per chunk
    img, _ = estimate_background(frames, mask)
    assert np.array_equal(img, ref)
