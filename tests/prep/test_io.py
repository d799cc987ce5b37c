"""Decode stage of real-video preprocessing: 25 fps resampling, audio at 16 kHz, and one-line errors on bad input."""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from lipspace.utils.errors import LipspaceError
from lipspace.prep.io import VideoInfo, decode_video_25fps, extract_audio_16k, probe_video
from tests.prep.videos import write_video

BITS = 8  # frame index coded as 8 vertical bars, black/white: survives h264 compression
ASSETS = Path(os.environ.get("LIPSPACE_ASSETS", Path(__file__).resolve().parents[3] / "shared" / "assets"))


def pattern(i: int, h: int = 64, w: int = 64) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    bw = w // BITS
    for b in range(BITS):
        if (i >> b) & 1:
            img[:, b * bw:(b + 1) * bw] = 255
    return img


def read_index(img: np.ndarray) -> int:
    h, w = img.shape[:2]
    bw = w // BITS
    core = img[h // 4: 3 * h // 4]
    return sum(1 << b for b in range(BITS) if core[:, b * bw + bw // 4: (b + 1) * bw - bw // 4].mean() > 127)


def write_mp4(path: Path, n: int, fps: int = 25, pts: list[int] | None = None, tb: Fraction | None = None,
              audio_s: float | None = None, size: tuple[int, int] = (64, 64), pix_fmt: str = "yuv420p",
              gray: bool = False, codec: str = "libx264") -> Path:
    """n pattern frames (h264) at `fps`, or at explicit `pts` in `tb`; optional `audio_s` seconds of AAC sine."""
    frames = np.stack([pattern(i, *size) for i in range(n)])
    return write_video(path, frames, fps, audio_s=audio_s, gray=gray, pts=pts, tb=tb or Fraction(1, 1000),
                       pix_fmt=pix_fmt if not gray else None, codec=codec,
                       codec_options={"preset": "ultrafast", "qp": "10"}, tone_amplitude=0.5)


def indices(frames: np.ndarray) -> list[int]:
    return [read_index(f) for f in frames]


def test_25fps_identity_and_audio(tmp_path):
    p = write_mp4(tmp_path / "a.mp4", 50, audio_s=2.0)
    info = probe_video(p)
    assert isinstance(info, VideoInfo) and info.has_audio and info.audio_rate == 16000 and info.audio_channels == 1
    assert (info.width, info.height, info.fps, info.pix_fmt) == (64, 64, 25.0, "yuv420p")
    frames, dinfo = decode_video_25fps(p)
    assert frames.dtype == np.uint8 and frames.shape == (50, 64, 64, 3)
    assert indices(frames) == list(range(50))
    assert dinfo.n_frames == 50 and not dinfo.variable_frame_rate and dinfo.scale == 1.0
    audio = extract_audio_16k(p, n_frames=len(frames))
    assert audio.dtype == np.float32 and audio.shape == (32000,)
    assert np.abs(audio).max() <= 1.0 and 0.2 < np.abs(audio[4000:28000]).max() < 0.8  # the 0.5 sine survives


def test_30fps_resamples_without_drift(tmp_path):
    p = write_mp4(tmp_path / "b.mp4", 90, fps=30)  # 3 s
    frames, info = decode_video_25fps(p)
    assert len(frames) == 75
    assert indices(frames) == [i * 30 // 25 for i in range(75)]
    assert info.fps == pytest.approx(30.0)


def test_variable_frame_rate_uses_timestamps(tmp_path):
    tb = Fraction(1, 1000)
    rng = np.random.default_rng(0)
    gaps = rng.choice([20, 33, 50, 71], size=60)  # ms between frames, irregular
    pts = np.concatenate([[0], np.cumsum(gaps)[:-1]]).astype(int).tolist()
    p = write_mp4(tmp_path / "vfr.mp4", 60, pts=pts, tb=tb)
    frames, info = decode_video_25fps(p)
    assert info.variable_frame_rate
    # The last frame lasts one median gap; output i shows the last source frame starting at or before i/25.
    end = pts[-1] + float(np.median(gaps))
    assert len(frames) == int(end * 25 // 1000)
    expected = [int(np.searchsorted(pts, i * 40, side="right") - 1) for i in range(len(frames))]
    assert indices(frames) == expected


def test_no_audio_track_is_a_clear_error(tmp_path):
    p = write_mp4(tmp_path / "mute.mp4", 30)
    assert not probe_video(p).has_audio
    with pytest.raises(LipspaceError, match=r"mute\.mp4.*has no audio track.*ffmpeg -i video -i audio\.wav"):
        extract_audio_16k(p)


def test_corrupted_file_names_the_file(tmp_path):
    p = tmp_path / "junk.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    for fn in (probe_video, decode_video_25fps, extract_audio_16k):
        with pytest.raises(LipspaceError, match=r"junk\.mp4: not a readable video") as e:
            fn(p)
        assert "\n" not in str(e.value)


def test_truncated_file_partial_or_clear_error(tmp_path, caplog):
    # PyAV writes the moov index at the end: cutting the file in half loses it, so a clear error is the answer.
    full = write_mp4(tmp_path / "full.mp4", 100, audio_s=4.0)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    try:
        with caplog.at_level(logging.WARNING, logger="lipspace.prep.io"):
            frames, _ = decode_video_25fps(cut)
    except LipspaceError as e:  # a one-line error naming the file, never a raw av exception
        assert "cut.mp4" in str(e) and "\n" not in str(e)
    else:
        assert len(frames) >= 25 and "cut.mp4" in caplog.text and "truncated" in caplog.text
    with pytest.raises(LipspaceError, match=r"cut\.mp4"):
        extract_audio_16k(cut)


def test_truncated_with_index_first_decodes_partially(tmp_path, caplog):
    # Move the moov atom to the front by remuxing with +faststart so that a truncated file still opens.
    src = write_mp4(tmp_path / "src.mp4", 100)
    fast = tmp_path / "fast.mp4"
    with av.open(str(src)) as i, av.open(str(fast), "w", options={"movflags": "+faststart"}) as o:
        s = o.add_stream_from_template(i.streams.video[0])
        for pkt in i.demux(i.streams.video[0]):
            if pkt.dts is None:
                continue
            pkt.stream = s
            o.mux(pkt)
    data = fast.read_bytes()
    cut = tmp_path / "fastcut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with caplog.at_level(logging.WARNING, logger="lipspace.prep.io"):
        try:
            frames, _ = decode_video_25fps(cut)
        except LipspaceError as e:
            assert "fastcut.mp4" in str(e)
        else:
            assert 25 <= len(frames) < 100
            assert "fastcut.mp4" in caplog.text and "truncated" in caplog.text
            assert indices(frames) == list(range(len(frames)))


def test_clip_under_one_second(tmp_path):
    p = write_mp4(tmp_path / "short.mp4", 10)
    with pytest.raises(LipspaceError, match=r"short\.mp4.*at least 1 s"):
        decode_video_25fps(p)


def test_max_side_downscales_large_frames(tmp_path):
    p = write_mp4(tmp_path / "big.mp4", 26, size=(360, 640))
    frames, info = decode_video_25fps(p, max_side=128)
    assert frames.shape == (26, 72, 128, 3) and max(frames.shape[1:3]) <= 128
    assert info.scale == pytest.approx(0.2) and (info.width, info.height) == (640, 360)
    assert indices(frames) == list(range(26))


def test_4k_frames(tmp_path):
    p = write_mp4(tmp_path / "uhd.mp4", 26, size=(2160, 3840))
    frames, info = decode_video_25fps(p, max_side=512)
    assert frames.shape == (26, 288, 512, 3)
    assert (info.width, info.height) == (3840, 2160) and info.scale == pytest.approx(512 / 3840)
    assert indices(frames)[:3] == [0, 1, 2]


def test_grayscale_source_gives_rgb(tmp_path):
    # h264 decoders hand monochrome streams back as yuv420p, so store true gray losslessly (PNG in QuickTime).
    p = write_mp4(tmp_path / "gray.mov", 30, pix_fmt="gray", gray=True, codec="png")
    assert probe_video(p).pix_fmt == "gray"
    frames, _ = decode_video_25fps(p)
    assert frames.shape == (30, 64, 64, 3)
    assert np.array_equal(frames[..., 0], frames[..., 1]) and np.array_equal(frames[..., 1], frames[..., 2])
    assert indices(frames) == list(range(30))


@pytest.mark.parametrize("audio_s,word", [(3.0, "longer"), (1.0, "shorter")])
def test_audio_trimmed_or_padded_to_video(tmp_path, caplog, audio_s, word):
    p = write_mp4(tmp_path / f"av_{word}.mp4", 50, audio_s=audio_s)  # 2 s of video
    with caplog.at_level(logging.WARNING, logger="lipspace.prep.io"):
        audio = extract_audio_16k(p, n_frames=50)
    assert audio.shape == (32000,)
    assert f"av_{word}.mp4" in caplog.text and word in caplog.text
    if word == "shorter":
        assert not audio[17000:].any()  # zero-padded tail


def test_audio_within_one_frame_no_warning(tmp_path, caplog):
    # 31 whole AAC frames (1.984 s): the muxer stores no end trim, so this length decodes back exactly.
    p = write_mp4(tmp_path / "ok.mp4", 50, audio_s=31 * 1024 / 16000)
    raw = extract_audio_16k(p)
    assert raw.size == 31 * 1024
    # The encoder's priming samples are dropped: the sine starts at sample 0 (audio stays in sync with video).
    ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(64) / 16000)
    assert np.abs(raw[:64] - ref).max() < 0.05
    with caplog.at_level(logging.WARNING, logger="lipspace.prep.io"):
        audio = extract_audio_16k(p, n_frames=50)
    assert audio.shape == (32000,) and "ok.mp4" not in caplog.text


def test_missing_file(tmp_path):
    for fn in (probe_video, decode_video_25fps, extract_audio_16k):
        with pytest.raises(LipspaceError, match=r"nope\.mp4: no such file"):
            fn(tmp_path / "nope.mp4")


def test_audio_only_file_has_no_video_stream(tmp_path):
    p = tmp_path / "speech.m4a"
    with av.open(str(p), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=16000, layout="mono")
        af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        af.sample_rate, af.pts = 16000, 0
        for pkt in list(s.encode(af)) + list(s.encode()):
            out.mux(pkt)
    with pytest.raises(LipspaceError, match=r"speech\.m4a: has no video stream"):
        probe_video(p)


@pytest.mark.skipif(not (ASSETS / "video" / "macron_fr_30fps_50s.mp4").is_file(),
                    reason="real clips not present (../shared/assets/video or $LIPSPACE_ASSETS/video)")
def test_real_clips_probe_and_decode():
    clips = sorted((ASSETS / "video").glob("*.mp4"))
    assert len(clips) >= 4
    for c in clips:
        info = probe_video(c)
        assert info.has_audio and info.width > 0 and info.duration_s > 1 and info.fps > 0
    frames, info = decode_video_25fps(ASSETS / "video" / "macron_fr_30fps_50s.mp4", max_seconds=2.0, max_side=256)
    assert info.fps == pytest.approx(30.0, abs=0.1)
    assert frames.shape[0] == 50 and frames.shape[-1] == 3 and frames.dtype == np.uint8
    macron = ASSETS / "video" / "macron_fr_30fps_50s.mp4"
    audio = extract_audio_16k(macron, n_frames=50)
    assert audio.shape == (32000,) and audio.dtype == np.float32


def test_audio_is_aligned_to_a_late_starting_video_stream(tmp_path):
    """A video stream starting at 0.2 s (as macron's starts at 0.08 s): decode reports it and the audio is
    moved so that sample 0 is the instant of video frame 0."""
    pts = [200 + 40 * i for i in range(40)]  # ms
    p = write_mp4(tmp_path / "late.mp4", 40, pts=pts, tb=Fraction(1, 1000), audio_s=2.0)
    frames, info = decode_video_25fps(p)
    assert abs(info.start_s - 0.2) < 1e-6 and len(frames) == 40
    raw = extract_audio_16k(p)
    aligned = extract_audio_16k(p, video_start_s=info.start_s)
    np.testing.assert_array_equal(aligned, raw[3200:])
    early = extract_audio_16k(p, video_start_s=-0.1)  # audio starting after the video: silence first
    assert np.all(early[:1600] == 0) and np.array_equal(early[1600:], raw)
