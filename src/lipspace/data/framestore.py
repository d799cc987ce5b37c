"""A dataset's frames and parsing maps as raw uint8 .npy files on disk, memory-mapped, RSS bounded.

``open_frame_stores(root, n, h, w)`` returns two :class:`FrameStore` (frames [N,H,W,3] RGB, parsing [N,H,W]). The
files are built once from the PNGs, one frame at a time (memory bounded whatever the clip length), written to a
temporary file and renamed into place, and named by a key over n, h, w and every PNG's size and mtime: a changed
dataset gets new files and the old ones are removed. They live in ``<dataset>/cache/``, or under
``$LIPSPACE_CACHE/framestore/`` when the dataset directory is read-only. A cache file with a wrong header or size
(truncated, foreign, half-written) or whose first / last frame disagrees with its PNG is rebuilt, never used.

Reads go through a read-only memory map; the pages a process has touched are dropped from it past a budget (see
:class:`FrameStore`), so the RSS a store adds is bounded whatever the clip length, while a clip that fits the
budget stays mapped and reads as fast as an in-memory tensor.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from lipspace.data.schema import frame_name
from lipspace.utils.assets import cache_dir
from lipspace.utils.errors import LipspaceError

STORE_VERSION = 1
CACHE_SUBDIR = "cache"  # inside the dataset directory (the schema allows extra directories, as features/)
KINDS = ("frames", "parsing")
MAPPED_BUDGET_BYTES = 384 << 20  # per store: the most RSS its mapped pages add before they are dropped


class FrameStore:
    """uint8 frames [N, ...] of one .npy file, memory-mapped, indexed like the torch tensor it replaces (an int, a
    slice, a list / np.ndarray / torch.Tensor of indices, a tuple) and returning torch uint8 tensors.

    Pages of a mapped file count toward the process's RSS once touched, so an epoch of random frames would show
    the whole clip as resident. The store counts the bytes of the frames it hands out and, past
    ``mapped_budget`` bytes, drops its mapped pages (madvise DONTNEED: they stay in the kernel's page cache, a later
    read maps them again), so the RSS it adds stays below its budget whatever the clip length."""

    dtype = torch.uint8

    def __init__(self, path, frame_shape: tuple, n: int, offset: int, order: torch.Tensor | None = None,
                 mapped_budget: int | None = None):
        self.path, self.frame_shape, self.offset = Path(path), tuple(int(s) for s in frame_shape), int(offset)
        self._n_file = int(n)
        self._order = order  # a selection (``select``): view frame -> file frame
        self.frame_bytes = int(np.prod(self.frame_shape))
        self.mapped_budget = MAPPED_BUDGET_BYTES if mapped_budget is None else int(mapped_budget)
        self._mmap = self._data = self._flat = None
        self._handed_out = 0  # bytes of frames read since the last drop: an upper bound on the mapped pages

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.frame_shape))

    @property
    def ndim(self) -> int:
        return 1 + len(self.frame_shape)

    def __len__(self) -> int:
        return self._n_file if self._order is None else len(self._order)

    def __repr__(self) -> str:
        return f"FrameStore({self.path}, shape={tuple(self.shape)})"

    def __getstate__(self):  # picklable (DataLoader workers): the file is mapped again in the new process
        return {**self.__dict__, "_mmap": None, "_data": None, "_flat": None, "_handed_out": 0}

    def select(self, idx) -> FrameStore:
        """A store of frames ``idx`` of this one (1-D), reading the same file: no frame is copied."""
        idx = torch.as_tensor(np.asarray(idx) if isinstance(idx, list) else idx, dtype=torch.long).reshape(-1)
        order = idx if self._order is None else self._order[idx]
        return FrameStore(self.path, self.frame_shape, self._n_file, self.offset, order, self.mapped_budget)

    def __getitem__(self, key) -> torch.Tensor:
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if self._order is not None:
            first = self._order[first]
        data = self._frames(_count(first, len(self)))
        out = data[(first, *rest)]
        # an int or a slice gives a view of the read-only mapping: hand out a copy, as writable as a tensor's frames
        return out.clone() if out.untyped_storage().data_ptr() == data.untyped_storage().data_ptr() else out

    def pixels(self, fidx: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
        """``frames[fidx[:, None]]`` at flat pixel indices ``pix`` [F, n] -> [F, n, ...]: only the pages holding
        those pixels are read."""
        if self._order is not None:
            fidx = self._order[fidx]
        self._frames(len(fidx))
        return self._flat[fidx[:, None], pix]

    def drop_pages(self) -> None:
        """Unmap the pages read so far from this process (the page cache keeps them)."""
        if self._mmap is not None:
            self._mmap.madvise(mmap.MADV_DONTNEED)
        self._handed_out = 0

    def _frames(self, n_read: int) -> torch.Tensor:
        """The mapped file as a tensor [N_file, ...], after accounting for ``n_read`` frames about to be read."""
        nbytes = n_read * self.frame_bytes
        # a file within the budget stays mapped: its pages can never exceed it
        if self._handed_out + nbytes > self.mapped_budget < self._n_file * self.frame_bytes:
            self.drop_pages()
        self._handed_out += nbytes
        if self._data is None:
            size = self._n_file * self.frame_bytes
            with open(self.path, "rb") as f:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
            arr = (np.frombuffer(self._mmap, np.uint8, size, self.offset) if size else np.empty(0, np.uint8))
            with warnings.catch_warnings():  # read-only on purpose: a stray in-place write fails loudly
                warnings.simplefilter("ignore", UserWarning)
                self._data = torch.from_numpy(arr).reshape(self._n_file, *self.frame_shape)
            self._flat = self._data.reshape(self._n_file, -1, *self.frame_shape[2:])  # [N, H*W(, C)]
        return self._data


def _count(first, n: int) -> int:
    """How many frames an index reads."""
    if isinstance(first, int | np.integer):
        return 1
    if isinstance(first, slice):
        return len(range(*first.indices(n)))
    arr = first if isinstance(first, torch.Tensor) else torch.as_tensor(np.asarray(first))
    return int(arr.sum()) if arr.dtype == torch.bool else arr.numel()


def gather_pixels(images, fidx: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
    """``images`` [N,H,W(,C)] (a FrameStore or a tensor) at flat pixel indices ``pix`` [F, n] of frames ``fidx``
    [F] -> [F, n(, C)], reading only those pixels' pages of a store."""
    if isinstance(images, FrameStore):
        return images.pixels(fidx, pix)
    n, h, w = images.shape[:3]
    return images.reshape(n, h * w, *images.shape[3:])[fidx[:, None], pix]


def open_frame_stores(root, n: int, h: int, w: int) -> tuple[FrameStore, FrameStore]:
    """(frames [N,H,W,3], parsing [N,H,W]) stores of dataset ``root``, built from its PNGs if no valid one exists."""
    root = Path(root)
    shapes = {"frames": (h, w, 3), "parsing": (h, w)}
    key = store_key(root, n, h, w)
    places = [root / CACHE_SUBDIR, fallback_dir(root)]
    for d in places:
        stores = _open_valid(d, key, n, shapes, root)
        if stores:
            return stores
    for d in places:
        if not _writable(d):
            continue  # a read-only dataset directory: the next place
        with _locked(d):
            stores = _open_valid(d, key, n, shapes, root)  # another process may have built it meanwhile
            if stores:
                return stores
            _build(root, d, key, n, h, w)
            stores = _open_valid(d, key, n, shapes, root)
        if stores:
            return stores
        raise LipspaceError(f"{d}: the frame store just built there does not read back; check the disk "
                            "(free space, permissions) and load again.")
    raise LipspaceError(f"{root}: cannot write the frame store into {places[0]} (read-only) nor {places[1]}. "
                        "Make one of them writable, or set LIPSPACE_CACHE to a writable folder.")


def _writable(d: Path) -> bool:
    """Whether files can be created in ``d`` (made if missing); tried, since permission bits do not tell (root,
    read-only mounts)."""
    try:
        d.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=d, prefix=".probe-").close()
    except OSError:
        return False
    return True


def store_key(root: Path, n: int, h: int, w: int) -> str:
    """Digest of n, h, w and each frame / parsing PNG's size and mtime: any change to the dataset changes it."""
    stats = []
    for kind in KINDS:
        for i in range(n):
            p = root / kind / frame_name(i)
            try:
                st = p.stat()
            except OSError as e:
                raise LipspaceError(f"{p}: {e.strerror or 'cannot be read'}. The dataset is incomplete; "
                                    "regenerate it.") from None
            stats.append((st.st_size, st.st_mtime_ns))
    blob = json.dumps({"version": STORE_VERSION, "n": n, "h": h, "w": w, "png": stats}).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def fallback_dir(root: Path) -> Path:
    """Where a read-only dataset's store goes: $LIPSPACE_CACHE/framestore/<digest of the dataset's path>."""
    return cache_dir() / "framestore" / hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]


def store_path(d: Path, kind: str, key: str) -> Path:
    return d / f"{kind}.{key}.npy"


def _open_valid(d: Path, key: str, n: int, shapes: dict, root: Path):
    stores = []
    for kind in KINDS:
        path = store_path(d, kind, key)
        offset = _data_offset(path, (n, *shapes[kind]))
        if offset is None:
            return None
        stores.append(FrameStore(path, shapes[kind], n, offset))
    for i in sorted({0, n - 1}):  # spot check: a zero-filled or overwritten end of the file does not pass
        frame, parsing = _decode(root, i, *shapes["parsing"])
        if not (np.array_equal(stores[0][i].numpy(), frame) and np.array_equal(stores[1][i].numpy(), parsing)):
            return None
    return tuple(stores)


def _data_offset(path: Path, shape: tuple) -> int | None:
    """Byte offset of the data of the .npy file at ``path`` if it holds exactly a C-order uint8 ``shape``."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            got_shape, fortran, dtype = read_header(f)
            offset = f.tell()
        size = path.stat().st_size
    except (OSError, ValueError, SyntaxError, TypeError):  # missing, or not a .npy header numpy reads
        return None
    ok = tuple(got_shape) == shape and not fortran and dtype == np.uint8
    return offset if ok and size == offset + int(np.prod(shape)) else None


def _decode(root: Path, i: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame i as RGB uint8 [H,W,3] and its parsing map [H,W]; a clear error naming the bad file."""
    import cv2

    fpath, ppath = root / "frames" / frame_name(i), root / "parsing" / frame_name(i)
    f = cv2.imread(str(fpath), cv2.IMREAD_COLOR)
    p = cv2.imread(str(ppath), cv2.IMREAD_UNCHANGED)
    for path, img, want in ((fpath, f, (h, w, 3)), (ppath, p, (h, w))):
        if img is None or img.shape != want or img.dtype != np.uint8:
            got = "unreadable or missing" if img is None else f"of shape {img.shape} ({img.dtype})"
            raise LipspaceError(f"{path}: unreadable frame or parsing mask of the wrong size ({got}, expected "
                                f"{w}x{h} uint8, {'RGB' if len(want) == 3 else 'one channel'}). "
                                "Regenerate the dataset.")
    return np.ascontiguousarray(f[:, :, ::-1]), p


def _build(root: Path, d: Path, key: str, n: int, h: int, w: int) -> None:
    """Stream the PNGs into the two .npy files (one frame in memory at a time), then rename them into place."""
    files, tmps = {}, {}
    try:
        for kind, shape in (("frames", (n, h, w, 3)), ("parsing", (n, h, w))):
            fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{kind}.", suffix=".tmp")
            tmps[kind], files[kind] = Path(tmp), os.fdopen(fd, "wb")
            np.lib.format.write_array_header_1_0(files[kind], {"descr": "|u1", "fortran_order": False,
                                                               "shape": shape})
        for i in range(n):
            frame, parsing = _decode(root, i, h, w)
            files["frames"].write(frame.data)
            files["parsing"].write(parsing.data)
        for kind in KINDS:
            files[kind].flush()
            os.fsync(files[kind].fileno())
            files[kind].close()
            os.replace(tmps[kind], store_path(d, kind, key))
    finally:
        for kind, f in files.items():
            f.close()
            tmps[kind].unlink(missing_ok=True)
    for kind in KINDS:  # stores of an older state of this dataset
        for old in d.glob(f"{kind}.*.npy"):
            if old != store_path(d, kind, key):
                old.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(d: Path):
    """One builder per store directory at a time (DDP ranks load the same clip together)."""
    import fcntl

    with open(d / ".framestore.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
