"""The on-disk frame store behind Clip.frames / Clip.parsing: exact PNG pixels, reused until the dataset changes,
rebuilt when damaged, placed in $LIPSPACE_CACHE for a read-only dataset, indexed like a tensor, same batches as
in-memory frames, and RSS that does not grow with the clip's length."""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import make_tiny_dataset
from lipspace.data import framestore as fs
from lipspace.data.clip import load_clip, split_frames
from lipspace.data.sampling import ImageBatches, RayBatches, frame_cameras, frame_rays
from lipspace.data.schema import frame_name
from lipspace.utils.errors import LipspaceError


def _pngs(root: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    frames = [cv2.imread(str(root / "frames" / frame_name(i)), cv2.IMREAD_COLOR)[:, :, ::-1] for i in range(n)]
    parsing = [cv2.imread(str(root / "parsing" / frame_name(i)), cv2.IMREAD_UNCHANGED) for i in range(n)]
    return torch.from_numpy(np.stack(frames).copy()), torch.from_numpy(np.stack(parsing))


def _in_memory(clip):
    """The same clip with its frames decoded into tensors, as load_clip held them before the frame store."""
    mem = copy.copy(clip)
    mem.frames, mem.parsing = _pngs(clip.root, clip.n_frames)
    return mem


@pytest.fixture
def counted_builds(monkeypatch):
    calls = []
    real = fs._build

    def build(*args):
        calls.append(args[0])
        return real(*args)

    monkeypatch.setattr(fs, "_build", build)
    return calls


def _store_files(root: Path) -> list[Path]:
    return sorted((root / fs.CACHE_SUBDIR).glob("*.npy"))


def test_store_holds_the_png_pixels_and_indexes_like_a_tensor(tmp_path):
    root = make_tiny_dataset(tmp_path / "ds", n=7, hw=24, heldout=0)
    clip = load_clip(root)
    frames, parsing = _pngs(root, 7)
    assert isinstance(clip.frames, fs.FrameStore) and clip.frames.dtype == torch.uint8
    assert clip.frames.shape == (7, 24, 24, 3) and clip.parsing.shape == (7, 24, 24) and len(clip.frames) == 7
    assert [p.name.split(".")[0] for p in _store_files(root)] == ["frames", "parsing"]
    keys = [3, -1, np.int64(2), [4, 0, 4], np.array([[1, 2], [6, 5]]), torch.tensor([5, 1]), torch.tensor(6),
            slice(1, 5), slice(None, None, 3), slice(-3, None), torch.arange(7) % 2 == 0, (2, slice(3, 9), 0),
            (torch.tensor([1, 3]), torch.tensor([4, 5]), torch.tensor([7, 8]))]
    for store, ref in ((clip.frames, frames), (clip.parsing, parsing)):
        for key in keys:
            got, want = store[key], ref[key]
            assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8 and torch.equal(got, want), key
        got = store[1]
        got += 1  # a frame handed out is the caller's (the mapping itself is read-only)
        assert torch.equal(store[1], ref[1])
        with pytest.raises(IndexError):
            store[7]
    assert torch.equal(pickle.loads(pickle.dumps(clip.frames))[2:4], frames[2:4])  # DataLoader workers remap it
    sel = clip.frames.select(torch.tensor([6, 0, 3, 3]))  # playback's view: no copy, same indexing
    assert sel.shape == (4, 24, 24, 3) and torch.equal(sel[1:], frames[[0, 3, 3]])
    assert torch.equal(sel.select([3, 0])[:], frames[[3, 6]])


def test_second_load_reuses_and_a_changed_png_rebuilds(tmp_path, counted_builds):
    root = make_tiny_dataset(tmp_path / "ds", n=5, hw=24, heldout=0)
    load_clip(root)
    assert len(counted_builds) == 1
    files = _store_files(root)
    stamp = [p.stat().st_mtime_ns for p in files]
    clip = load_clip(root)
    assert len(counted_builds) == 1 and [p.stat().st_mtime_ns for p in files] == stamp
    # frame 2 repainted: a new store under a new key, the old files gone
    img = cv2.imread(str(root / "frames" / frame_name(2)))
    img[:4, :4] = (0, 255, 0)
    cv2.imwrite(str(root / "frames" / frame_name(2)), img)
    st = (root / "frames" / frame_name(2)).stat()
    os.utime(root / "frames" / frame_name(2), ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    fresh = load_clip(root)
    assert len(counted_builds) == 2 and not set(files) & set(_store_files(root))
    assert torch.equal(fresh.frames[:], _pngs(root, 5)[0]) and not torch.equal(fresh.frames[2], clip.frames[2])


@pytest.mark.parametrize("damage", ["truncate", "header", "zeroed_tail", "missing_parsing"])
def test_damaged_store_is_rebuilt_never_used(tmp_path, counted_builds, damage):
    root = make_tiny_dataset(tmp_path / "ds", n=5, hw=24, heldout=0)
    load_clip(root)
    frames_file, parsing_file = _store_files(root)
    size = frames_file.stat().st_size
    if damage == "truncate":
        os.truncate(frames_file, size - 100)
    elif damage == "header":
        with open(frames_file, "r+b") as f:
            f.write(b"\x00garbage\x00")
    elif damage == "zeroed_tail":  # right size and header, wrong pixels (a crash after the size was set)
        with open(frames_file, "r+b") as f:
            f.seek(size - 24 * 24 * 3)
            f.write(bytes(24 * 24 * 3))
    else:
        parsing_file.unlink()
    clip = load_clip(root)
    assert len(counted_builds) == 2
    frames, parsing = _pngs(root, 5)
    assert torch.equal(clip.frames[:], frames) and torch.equal(clip.parsing[:], parsing)


def test_read_only_dataset_uses_the_cache_dir(tmp_path, monkeypatch):
    root = make_tiny_dataset(tmp_path / "ds", n=4, hw=24, heldout=0)
    monkeypatch.setenv("LIPSPACE_CACHE", str(tmp_path / "cache"))
    real = fs._writable
    # permission bits do not stop root (the test may run as root): refuse the dataset directory as a read-only
    # mount would
    monkeypatch.setattr(fs, "_writable", lambda d: root not in Path(d).parents and real(d))
    clip = load_clip(root)
    assert not (root / fs.CACHE_SUBDIR).exists()
    assert clip.frames.path.parent == fs.fallback_dir(root) and fs.fallback_dir(root).is_relative_to(tmp_path)
    assert torch.equal(clip.frames[:], _pngs(root, 4)[0])
    monkeypatch.setattr(fs, "_writable", lambda d: False)
    assert load_clip(root).frames.path == clip.frames.path  # found there again without writing
    other = make_tiny_dataset(tmp_path / "other", n=4, hw=24, heldout=0)
    with pytest.raises(LipspaceError, match="LIPSPACE_CACHE"):
        load_clip(other)


@pytest.mark.parametrize("fault", ["garbage", "wrong_size", "missing"])
def test_bad_png_is_a_clear_error_naming_it(tmp_path, fault):
    root = make_tiny_dataset(tmp_path / "ds", n=5, hw=24, heldout=0)
    bad = root / "parsing" / frame_name(2)  # a middle frame: validate_dataset probes only the first and last
    if fault == "garbage":
        bad.write_bytes(b"not a png")
    elif fault == "wrong_size":
        cv2.imwrite(str(bad), np.zeros((20, 24), np.uint8))
    else:
        bad.unlink()
    with pytest.raises(LipspaceError, match=rf"{bad}.*[Rr]egenerate"):
        load_clip(root, check_images=False)
    assert not list((root / fs.CACHE_SUBDIR).glob("*.npy")) and not list((root / fs.CACHE_SUBDIR).glob("*.tmp"))


def _same(a, b) -> bool:
    """Equal batches: same keys, bit-identical tensors (nested dicts compared the same way)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return torch.equal(a, b) if torch.is_tensor(a) else a == b


def test_batches_from_the_store_equal_in_memory_ones(tmp_path):
    from lipspace.model.playback import posed_playback
    from lipspace.model.sequence_scoring import mean_frame

    root = make_tiny_dataset(tmp_path / "ds", n=12, hw=32, heldout=0)
    clip = load_clip(root, gt_background_classes=(2,))
    mem = _in_memory(clip)
    train = split_frames(clip).train
    kw = dict(train_idx=train, inputs={"expr": 53}, rays_per_batch=96, frames_per_batch=3, head_fraction=0.5,
              steps_per_epoch=4, seed=7, patch_size=8)
    tight = copy.copy(clip)  # a budget that drops the mapped pages before every read: same values
    tight.frames, tight.parsing = (s.select(torch.arange(12)) for s in (clip.frames, clip.parsing))
    tight.frames.mapped_budget = tight.parsing.mapped_budget = 1
    streams = [list(RayBatches(c, **kw)) + list(ImageBatches(c, train, {"expr": 53}, 2, 3, seed=7, downscale=2))
               for c in (mem, clip, tight)]
    for want, *got in zip(*streams):
        for b in got:
            assert _same(want, b)
    for c in (clip, tight):
        for i in (0, 11):
            assert _same(frame_rays(mem, i, downscale=2), frame_rays(c, i, downscale=2))
        assert _same(frame_cameras(mem, [3, 1]), frame_cameras(c, [3, 1]))
        assert torch.equal(mean_frame(c, train), mem.frames[torch.as_tensor(train)].float().mean(0) / 255.0)
    poses = clip.pose[[4, 2, 2]] * 1.0
    v_mem, v = posed_playback(mem, np.array([4, 2, 2]), poses), posed_playback(clip, np.array([4, 2, 2]), poses)
    assert isinstance(v.frames, fs.FrameStore) and torch.equal(v.frames[:], v_mem.frames)
    assert torch.equal(v.frame_background(1), v_mem.frame_background(1))


_RSS_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from lipspace.data import framestore
    from lipspace.data.clip import load_clip
    from lipspace.data.sampling import RayBatches

    def status(key):  # kB; VmHWM is this process's own peak (ru_maxrss carries the forking parent's over exec)
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key + ":"))

    framestore.MAPPED_BUDGET_BYTES = int(sys.argv[2])  # per store
    before = status("VmRSS")
    clip = load_clip(sys.argv[1])  # builds the store (streaming) on this first load
    rb = RayBatches(clip, torch.arange(clip.n_frames), {}, 1024, 8, 0.5, 60, seed=0)
    for batch in rb:  # 60 batches x 8 random frames: most frames of either clip read at least once
        pass
    print(json.dumps({"growth_kb": status("VmHWM") - before}))
""")


def _peak_growth(root: Path, budget: int) -> int:
    """Peak RSS growth (bytes) of a fresh process that loads ``root`` and draws 60 ray batches."""
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(root), str(budget)], capture_output=True,
                         text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])["growth_kb"] * 1024


def test_peak_rss_does_not_grow_with_clip_length(tmp_path):
    roots = {n: make_tiny_dataset(tmp_path / f"ds{n}", n=n, hw=256, heldout=0) for n in (100, 400)}
    small = 4 << 20  # a mapping budget small next to the clips, so any growth with the length would show
    growth = {n: _peak_growth(root, small) for n, root in roots.items()}
    unbounded = _peak_growth(roots[400], 1 << 40)  # control: every page read stays mapped
    in_memory = 300 * 256 * 256 * 4  # 300 more frames held as RGB + parsing: 75 MiB
    print(f"peak RSS growth (MiB): 100 frames {growth[100] / 2**20:.1f}, 400 frames {growth[400] / 2**20:.1f}, "
          f"400 frames with nothing unmapped {unbounded / 2**20:.1f}; in memory the 300 extra frames would add "
          f"{in_memory / 2**20:.1f}")
    assert growth[400] - growth[100] < 0.25 * in_memory, growth
    assert unbounded - growth[100] > 0.5 * in_memory, "the measurement does not see mapped pages"
