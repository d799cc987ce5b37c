"""Streaming preprocessing (long clips in bounded memory): the decoder's frame stream, chunked parsing and PNG writing
give exactly what the whole-clip array path gives, the memory estimate and its refusal, and a run's peak memory that
does not grow with the clip's length."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lipspace.prep.io import decode_video_25fps
from lipspace.prep.options import PrepOptions
from lipspace.prep.parsing_clip import parse_frames
from lipspace.prep.video_frames import VideoFrames
from lipspace.utils.errors import LipspaceError
from tests.conftest import assets_dir
from tests.prep.test_io import indices, write_mp4
from tests.prep.test_parsing import FakeSegmenters, _clip
from tests.prep.videos import write_video

ASSETS = assets_dir()
MAY = ASSETS / "video" / "may_en_25fps_5s.mp4" if ASSETS else None
needs_assets = pytest.mark.skipif(
    MAY is None or not MAY.is_file() or not (ASSETS / "models" / "face_landmarker.task").is_file(),
    reason="shared assets not present (set LIPSPACE_ASSETS to the folder with video/ and models/)")


# ------------------------------------------------------------------------------------------ decoding as a stream
@pytest.mark.parametrize("fps", [25, 30, 60])
def test_video_frames_stream_is_the_array_and_counts_without_pixels(tmp_path, fps):
    p = write_mp4(tmp_path / f"v{fps}.mp4", int(fps * 2.3), fps=fps, size=(96, 160))
    frames, info = decode_video_25fps(p, max_side=128)
    assert len(frames) == 57 and indices(frames) == [i * fps // 25 for i in range(57)]
    video = VideoFrames(p, max_side=128)
    assert video.n_frames is None  # known once the stream has ended
    for _ in range(2):  # every iteration decodes again and yields the same frames
        stream = list(video)
        assert len(stream) == len(frames) and all((a == b).all() for a, b in zip(stream, frames, strict=True))
        assert video.info == info and video.n_frames == 57 and video.frame_hw == frames.shape[1:3]
    count = VideoFrames(p, max_side=128, pixels=False)
    assert set(count) == {None} and count.n_frames == 57 and count.info == info and count.frame_hw == (77, 128)


def test_video_frames_stream_is_lazy(tmp_path):
    # the first frame comes out before the file is read to the end: a long clip is never decoded into memory
    p = write_mp4(tmp_path / "long.mp4", 250)
    it = iter(VideoFrames(p))
    first = next(it)
    assert indices(first[None]) == [0]
    it.close()  # stopping early closes the container


def test_prefetched_keeps_order_raises_the_producers_error_and_stops_early():
    from lipspace.prep.video_frames import prefetched

    assert list(prefetched(range(100), depth=3)) == list(range(100))

    def broken():
        yield 1
        raise LipspaceError("bad frame")

    with pytest.raises(LipspaceError, match="bad frame"):
        list(prefetched(broken()))
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    it = prefetched(endless(), depth=2)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()
    assert closed == [True]


# ------------------------------------------------------------------------------------------ chunked parsing / PNGs
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_parse_frames_in_chunks_equals_one_whole_clip_call(stride):
    frames, lms, shifts = _clip(13, step=2.0)
    valid = np.ones(13, bool)
    valid[[4, 5, 11]] = False  # nearest-valid landmarks cross chunk borders
    whole = parse_frames(frames, lms, valid, FakeSegmenters(shifts), hair_stride=stride, threads=False)
    step = 2 * stride
    parts = [parse_frames(frames[a:a + step], lms, valid, FakeSegmenters(shifts), hair_stride=stride, first=a)
             for a in range(0, 13, step)]
    assert (np.concatenate(parts) == whole).all()
    if stride > 1:
        with pytest.raises(LipspaceError, match="multiple of hair_stride"):
            parse_frames(frames[1:5], lms, valid, FakeSegmenters(shifts), hair_stride=stride, first=1)
    with pytest.raises(LipspaceError, match="do not match"):
        parse_frames(frames[:4], lms, valid, FakeSegmenters(shifts), hair_stride=stride)


def test_png_sink_writes_in_chunks_what_write_pngs_writes(tmp_path):
    from lipspace.prep.pngio import PngSink, read_pngs, write_pngs

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (11, 20, 24, 3), dtype=np.uint8)
    write_pngs(tmp_path / "a", imgs, rgb=True)
    (tmp_path / "b").mkdir()
    for i in range(15):  # a previous, longer run
        (tmp_path / "b" / f"{i:06d}.png").write_bytes(b"stale")
    ticks = []
    with PngSink(tmp_path / "b", rgb=True, chunk=4, progress=ticks.append) as sink:
        for img in imgs:
            sink.add(img)
    assert sink.n == 11 and sum(ticks) == 11
    names = sorted(p.name for p in (tmp_path / "b").glob("*.png"))
    assert names == sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    assert (read_pngs(tmp_path / "b", None, rgb=True, indices=[10, 3]) == imgs[[10, 3]]).all()


# ------------------------------------------------------------------------------------------ memory estimate
def test_memory_estimate_hardly_grows_with_length_and_refuses_clearly(monkeypatch, tmp_path):
    from lipspace.prep import memory

    o = PrepOptions()
    short, long = (memory.estimate_peak(1920, 1080, s, o) for s in (60, 284))
    # streamed, 4 more minutes of 1080p cost the per-frame tracks only (holding the frames: + 33 GB)
    assert short["total"] < 2.0 * 2**30 and long["total"] - short["total"] < 0.6 * 2**30 and long["total"] < 3 * 2**30
    assert memory.estimate_peak(1920, 1080, 3600, PrepOptions(max_seconds=60))["total"] == short["total"]
    assert memory.estimate_peak(1920, 1080, 60, PrepOptions(size=2048))["total"] > short["total"] + 2**30
    video = write_video(tmp_path / "v.mp4", np.full((30, 64, 64, 3), 128, np.uint8), audio_s=1.2)
    assert memory.check_memory(video, o)["n_frames"] == 31
    monkeypatch.setattr(memory, "available_bytes", lambda: 200 * 2**20)
    with pytest.raises(LipspaceError, match=r"v\.mp4: preprocessing needs about .* GB of memory .* only 0\.20 GB "
                                            r"is available; .*size=.*max_seconds="):
        memory.check_memory(video, o)


# ------------------------------------------------------------------------------------------ whole pipeline
@needs_assets
def test_streamed_prep_equals_the_in_memory_array_path(tmp_path, monkeypatch):
    """A 30 fps, 640x360 copy of a real clip through prepare (streamed, chunks of a few frames) gives the frames,
    parsing maps and background of the whole-clip array functions."""
    import cv2

    from lipspace.prep import pngio
    from lipspace.prep.background import estimate_background
    from lipspace.prep.crop import crop_frames, face_crop_box
    from lipspace.prep.face import track_faces
    from lipspace.prep.pipeline import BACKGROUND_FRAMES, prepare
    from lipspace.prep.runs import evenly_spaced
    from lipspace.prep.segment import Segmenters
    from lipspace.utils.assets import resolve_known

    monkeypatch.setenv("LIPSPACE_ASSETS", str(ASSETS))
    src = decode_video_25fps(MAY, max_seconds=1.6)[0]
    canvas = np.zeros((len(src), 360, 640, 3), np.uint8)
    canvas[:, :, 140:500] = [cv2.resize(f, (360, 360), interpolation=cv2.INTER_AREA) for f in src]
    video = write_video(tmp_path / "v30.mp4", canvas[np.arange(48) * 25 // 30], fps=30, audio_s=1.6)
    o = PrepOptions(size=96, max_side=400, hair_stride=2, overlays=1, progress=False)
    monkeypatch.setattr(pngio, "CHUNK_BYTES", 7 * 96 * 96 * 3)  # chunks of 7 (crop) / 6 (parsing) frames
    prepare(video, tmp_path / "out", o)

    frames, _ = decode_video_25fps(video, max_side=o.max_side)
    tr = track_faces(frames, resolve_known("face_landmarker.task"))
    box = face_crop_box(tr.landmarks, tr.valid, frames.shape[1:3], face_scale=o.face_scale)
    crops = crop_frames(frames, box, o.size)
    lmk = box.apply_to_landmarks(tr.landmarks, o.size)
    with Segmenters(resolve_known("selfie_segmenter.tflite"), resolve_known("hair_segmenter_derived.tflite")) as s:
        parsing = parse_frames(crops, lmk, tr.valid, s, hair_stride=o.hair_stride)
    idx = evenly_spaced(np.arange(len(crops)), BACKGROUND_FRAMES)
    bg, _ = estimate_background(crops[idx], parsing[idx] == 0)

    out = tmp_path / "out"
    assert len(crops) == 40 and len(list((out / "frames").glob("*.png"))) == 40
    assert (pngio.read_pngs(out / "frames", 40, rgb=True) == crops).all()
    assert (pngio.read_pngs(out / "parsing", 40, rgb=False) == parsing).all()
    assert (cv2.imread(str(out / "background.png"))[:, :, ::-1] == bg).all()
    assert np.allclose(np.load(out / "tracks.npz")["mp_landmarks"], lmk)


def _peak_rss_mb(video: Path, out: Path) -> float:
    """Peak RSS (MB) of a fresh process that prepares ``video`` (its own ru_maxrss at the end; Linux: kB). Not the
    RUSAGE_CHILDREN of this process: that is the largest child so far, whichever test started it."""
    code = textwrap.dedent(f"""
        import resource
        from lipspace.prep.pipeline import prepare
        prepare({str(video)!r}, {str(out)!r}, size=256, overlays=0, progress=False)
        print("maxrss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """)
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return int(run.stdout.split("maxrss_kb")[-1]) / 1024


@pytest.mark.slow
@needs_assets
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary to loop a real clip")
def test_peak_memory_does_not_grow_with_clip_length(tmp_path, monkeypatch):
    """A real clip looped to 20 s and 80 s at 1280x720: holding the decoded frames would add ~4 GB for the 60 s
    more; streamed, the peak grows by the per-frame tracks only."""
    monkeypatch.setenv("LIPSPACE_ASSETS", str(ASSETS))
    peaks = {}
    for loops in (4, 16):
        video = tmp_path / f"x{loops}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(MAY), "-vf",
                        "scale=720:720,pad=1280:720:280:0", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "20",
                        "-c:a", "aac", str(video)], check=True)
        peaks[loops] = _peak_rss_mb(video, tmp_path / f"out{loops}")
        shutil.rmtree(tmp_path / f"out{loops}")
    growth = peaks[16] - peaks[4]
    print(f"peak RSS 20 s: {peaks[4]:.0f} MB, 80 s: {peaks[16]:.0f} MB, growth {growth:.0f} MB")
    assert growth < 300, peaks  # holding the frames: + 4 GB
    assert peaks[16] < 3 * 1024, peaks
