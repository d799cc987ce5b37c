"""Shared fixtures: a tiny hand-built dataset directory of the lipspace schema, CPU-only, seconds to build."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# download=auto (the evaluation default) never touches the network in tests (lipspace.utils.assets.OFFLINE_ENV): no test
# waits on, or fetches, the official SyncNet / S3FD / LPIPS files; tests of the download paths unset it
os.environ.setdefault("LIPSPACE_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]



# Two long local runs of the suite died with "Profiling timer expired" (SIGPROF's default action) in tests that use
# MediaPipe / syncnet-python; no Python code arms ITIMER_PROF and short runs never reproduced it, so a native library
# is suspected. Ignoring SIGPROF (nothing here profiles by signal) makes a stray timer harmless.
if signal.getsignal(signal.SIGPROF) in (signal.SIG_DFL, None):
    signal.signal(signal.SIGPROF, signal.SIG_IGN)


def assets_dir() -> Path | None:
    """../shared/assets (or $LIPSPACE_ASSETS) when present; real-data tests skip without it."""
    p = Path(os.environ.get("LIPSPACE_ASSETS", ROOT.parent / "shared" / "assets"))
    return p if p.is_dir() else None


def _tiny_face_points(jaw: np.ndarray) -> np.ndarray:
    gx, gy = np.meshgrid(np.linspace(-0.3, 0.3, 4), np.linspace(-0.3, 0.3, 4))
    grid = np.stack([gx, gy, np.zeros_like(gx)], -1).reshape(16, 3)
    pts = np.repeat(grid[None], len(jaw), 0)
    pts[:, 12:, 1] += 0.1 * jaw[:, None]
    return pts.astype(np.float32)


def make_tiny_dataset(root: Path, n: int = 20, hw: int = 24, heldout: int = 1, seed: int = 0) -> Path:
    """A camera looking at a coloured disc in head space; 'expression' opens a dark mouth box. Schema-valid."""
    from lipspace.data.schema import ICT_EXPR_NAMES, write_dataset

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:hw, 0:hw]
    frames = np.zeros((n, hw, hw, 3), np.uint8)
    parsing = np.zeros((n, hw, hw), np.uint8)
    bg = np.stack([xx * 255 // hw, yy * 255 // hw, np.full_like(xx, 80)], -1).astype(np.uint8)
    expr = np.zeros((n, 53), np.float32)
    expr[:, ICT_EXPR_NAMES.index("jawOpen")] = rng.uniform(0, 1, n)
    lmk = np.zeros((n, 68, 2), np.float32)
    c = hw / 2
    for i in range(n):
        disc = (xx - c) ** 2 + (yy - c) ** 2 < (hw * 0.3) ** 2
        frames[i] = bg
        frames[i][disc] = (200, 150, 120)
        parsing[i][disc] = 2
        m = int(round(expr[i, 26] * 3))
        mouth = (np.abs(xx - c) < 3) & (yy > c + 1) & (yy <= c + 1 + m)
        frames[i][mouth] = (30, 10, 10)
        parsing[i][mouth] = 4
        lmk[i, :, 0] = c + rng.uniform(-3, 3, 68)
        lmk[i, :, 1] = c + 2 + rng.uniform(-1, 1, 68)
    f = 2.0 * hw
    pose = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    pose[:, 2, 3] = 4.0  # head 4 units in front of the camera
    tracks = {
        "pose": pose, "intrinsics": np.array([f, f, c, c], np.float32), "expr": expr,
        "expr_names": np.array(ICT_EXPR_NAMES), "blendshapes": np.zeros((n, 52), np.float32),
        "lmk68": lmk, "blink": np.zeros(n, np.float32), "valid": np.ones(n, bool),
        "identity": np.zeros(4, np.float32),
        # the "fitted face": a 4x4 grid on the disc's plane, its lower row following the jaw (head space)
        "face_points": _tiny_face_points(expr[:, ICT_EXPR_NAMES.index("jawOpen")]),
    }
    audio = (0.1 * np.sin(np.arange(int(n / 25 * 16000)) * 0.05)).astype(np.float32)
    meta = {"kind": "test", "bounds": {"center": [0.0, 0.0, 0.0], "radius": 1.2}, "source": {"generator": "tests"},
            "stages": {}, "heldout": [f"utt_{k:02d}" for k in range(heldout)]}
    write_dataset(root, frames, parsing, bg, audio, tracks, meta)
    for k in range(heldout):
        make_tiny_dataset(root / "heldout" / f"utt_{k:02d}", n=8, hw=hw, heldout=0, seed=seed + 100 + k)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "ds")


# ------------------------------------------------------------------------------------------ prepared real clips
# The shared real clips (../shared/assets/video), with the audio offsets measured on them (their audio is that many
# seconds late: lipspace.prep.avsync / tests/av/test_sync.py).
REAL_CLIPS = {
    "anchor": ("anchor_en_25fps_71s.mp4", 0.0),
    "obama": ("obama_en_25fps_20s.mp4", 0.21),
    "macron": ("macron_fr_30fps_50s.mp4", 0.08),
    "may": ("may_en_25fps_5s.mp4", 0.0),
}


def prepared_real_clip(name: str, seconds: float | None = None, size: int = 128) -> Path:
    """A shared real clip prepared by lipspace-prep (first ``seconds``, ``size``²), skipping the calling test when
    the assets are absent. Prepared once into .pytest_cache/real_clips/ and reused (prep's stage cache: a rerun
    of the suite costs nothing; `make clean` removes it)."""
    assets = assets_dir()
    file, offset = REAL_CLIPS[name]
    if assets is None or not (assets / "video" / file).is_file() or \
            not (assets / "models" / "face_landmarker.task").is_file():
        pytest.skip(f"shared assets not present (set LIPSPACE_ASSETS to the folder with video/{file} and models/)")
    from lipspace.prep.options import PrepOptions
    from lipspace.prep.pipeline import prepare

    out = ROOT / ".pytest_cache" / "real_clips" / f"{name}_{size}px_{seconds or 'all'}s"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIPSPACE_ASSETS", str(assets))
        prepare(assets / "video" / file, out, PrepOptions(size=size, max_seconds=seconds, audio_offset_s=offset,
                                                          overlays=0, progress=False))
    return out
