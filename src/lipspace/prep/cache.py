"""Stage cache of the preprocessing pipeline: a stage is redone only when its key changes.

A stage's key hashes its version, its parameters and the keys of the stages it reads (which in turn hash the input
video's sha256), so changing the clip, a parameter, a model file or a stage's code version redoes exactly the
stages downstream of the change. Each stage writes its outputs first and its marker
``<out>/.prep/<stage>.json`` last (atomically), so a run killed mid-stage redoes that stage and keeps the ones
before it. Arrays a stage needs to hand on live in ``<out>/.prep/<stage>.npz``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

CACHE_DIR = ".prep"


def stage_key(name: str, version: int, params: dict, upstream: list[str] = ()) -> str:
    """Hex digest of (name, version, params, upstream keys); params must be JSON-serialisable."""
    blob = json.dumps({"stage": name, "version": version, "params": params, "upstream": list(upstream)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class StageCache:
    """Markers and hand-over arrays of the stages of one output directory."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir) / CACHE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)

    def marker(self, name: str) -> dict | None:
        try:
            return json.loads((self.dir / f"{name}.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None  # absent, or torn by a kill: the stage is simply redone

    def is_done(self, name: str, key: str) -> bool:
        m = self.marker(name)
        return m is not None and m.get("key") == key

    def invalidate(self, name: str) -> None:
        (self.dir / f"{name}.json").unlink(missing_ok=True)

    def mark_done(self, name: str, key: str, info: dict | None = None, seconds: float | None = None) -> None:
        rec = {"key": key, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": seconds, "info": info or {}}
        _atomic_write(self.dir / f"{name}.json", json.dumps(rec, indent=2, default=float).encode())

    def array_path(self, name: str) -> Path:
        return self.dir / f"{name}.npz"

    def save_arrays(self, name: str, **arrays) -> None:
        tmp = self.dir / f".{name}.tmp-{os.getpid()}.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, self.array_path(name))

    def load_arrays(self, name: str) -> dict:
        with np.load(self.array_path(name), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
