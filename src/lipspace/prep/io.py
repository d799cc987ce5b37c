"""Decode a real talking-head video into constant-25-fps RGB frames and 16 kHz mono audio (PyAV, no ffmpeg binary)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from lipspace.data.schema import FPS, SAMPLE_RATE
from lipspace.utils.errors import LipspaceError

log = logging.getLogger(__name__)

MIN_SECONDS = 1.0  # shorter clips cannot give a usable audio window nor a stable background
# Errors PyAV / FFmpeg raise while demuxing or decoding broken input (FFmpegError covers av.error.*).
_DECODE_ERRORS = (av.error.FFmpegError, av.error.EOFError, ValueError, OSError)
_REENCODE_HINT = ("re-encode it with `ffmpeg -i in.mp4 -c:v libx264 -pix_fmt yuv420p -c:a aac out.mp4` "
                  "or use another copy")


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds. After decode_video_25fps, n_frames/duration_s/variable_frame_rate are measured."""

    path: str
    width: int  # of the source stream (before any max_side downscale)
    height: int
    fps: float  # average source frame rate
    n_frames: int  # decoded source-frame count, or the container's count / an estimate after probe_video
    duration_s: float
    has_audio: bool
    audio_rate: int | None
    audio_channels: int | None
    variable_frame_rate: bool
    pix_fmt: str | None
    scale: float = 1.0  # output side / source side applied by max_side (1.0 = untouched)
    start_s: float = 0.0  # presentation time of the first video frame (output frame 0); audio is aligned to it


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise LipspaceError(f"{p}: no such file; check the path (relative paths are taken from {Path.cwd()})")
    if not p.is_file():
        raise LipspaceError(f"{p}: is not a regular file; pass the path of a video file such as clip.mp4")
    return p


def _open(p: Path) -> av.container.InputContainer:
    # Any failure to open means the bytes are not a container FFmpeg understands: report it as one line.
    try:
        return av.open(str(p), mode="r")
    except _DECODE_ERRORS as e:
        raise LipspaceError(f"{p}: not a readable video (corrupted, truncated or not a video file: {_why(e)}); "
                            f"{_REENCODE_HINT}") from None


def _why(e: Exception) -> str:
    # FFmpeg messages can repeat the file name and span lines; keep one short line.
    return " ".join(str(getattr(e, "strerror", None) or e).split())[:200]


def _video_stream(p: Path, container) -> av.video.stream.VideoStream:
    if not container.streams.video:
        container.close()
        raise LipspaceError(f"{p}: has no video stream (audio-only or data file); lipspace needs a video of the "
                            f"speaker's face, pass the video file instead")
    return container.streams.video[0]


def probe_video(path: str | Path) -> VideoInfo:
    """Read the container header (no decoding): size, rate, duration, audio presence."""
    p = _check_file(path)
    container = _open(p)
    try:
        vs = _video_stream(p, container)
        avg = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(avg) if avg else 0.0
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        n_frames = vs.frames if vs.frames else int(round(duration * fps))
        # The header cannot prove VFR; a real-frame-rate differing from the average is its usual mark.
        base = vs.base_rate or vs.guessed_rate
        vfr = bool(avg and base and abs(float(base) - float(avg)) > 0.01 * float(avg))
        a = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            path=str(p), width=vs.codec_context.width, height=vs.codec_context.height, fps=fps,
            n_frames=int(n_frames), duration_s=duration, has_audio=a is not None,
            audio_rate=a.codec_context.sample_rate if a else None,
            audio_channels=a.codec_context.channels if a else None,
            variable_frame_rate=vfr, pix_fmt=vs.codec_context.pix_fmt,
        )
    finally:
        container.close()


def decode_video_25fps(
    path: str | Path, fps: int = FPS, max_side: int | None = None, max_seconds: float | None = None
) -> tuple[np.ndarray, VideoInfo]:
    """uint8 [N,H,W,3] RGB at constant `fps` and the measured VideoInfo: all the frames of ``VideoFrames`` (see it)
    in one array. Long clips: iterate VideoFrames instead, this holds the whole clip in memory."""
    from lipspace.prep.video_frames import VideoFrames

    video = VideoFrames(path, fps, max_side=max_side, max_seconds=max_seconds)
    frames = list(video)
    out = np.empty((len(frames),) + frames[0].shape, np.uint8)
    for i, f in enumerate(frames):
        out[i] = f
    return out, video.info


def extract_audio_16k(path: str | Path, n_frames: int | None = None, fps: int = FPS,
                      video_start_s: float | None = None) -> np.ndarray:
    """float32 mono [-1, 1] at 16 kHz; with n_frames, trimmed or zero-padded to exactly n_frames / fps seconds.

    ``video_start_s`` (VideoInfo.start_s from decode_video_25fps): the presentation time of video frame 0. Audio
    sample 0 is moved to that instant (samples before it dropped, silence added when the audio starts later), so
    a container whose streams start at different times (an edit list, a video stream starting at 0.08 s) stays in
    sync."""
    p = _check_file(path)
    container = _open(p)
    error: str | None = None
    chunks: list[np.ndarray] = []
    try:
        if not container.streams.audio:
            raise LipspaceError(
                f"{p}: has no audio track; lipspace needs the speech that drives the lips, so mux one with "
                f"`ffmpeg -i video -i audio.wav -c:v copy -map 0:v -map 1:a out.mp4`")
        stream = container.streams.audio[0]
        # Resample in FFmpeg (swresample): any rate / layout / sample format -> packed float mono 16 kHz.
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        audio_start: float | None = None
        try:
            for frame in container.decode(stream):
                if audio_start is None:
                    audio_start = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base \
                        else 0.0
                frame.pts = None  # resampler must not fail on gaps/jumps in timestamps of broken files
                for r in resampler.resample(frame):
                    chunks.append(r.to_ndarray().reshape(-1))
        except _DECODE_ERRORS as e:
            error = _why(e)
        for r in resampler.resample(None):  # flush the resampler's delay line
            chunks.append(r.to_ndarray().reshape(-1))
    finally:
        container.close()

    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if audio.size == 0:
        raise LipspaceError(f"{p}: the audio track could not be decoded ({error or 'no samples'}); {_REENCODE_HINT}")
    if error is not None:
        log.warning("%s: audio is truncated or corrupted (%s); using the %.2f s that decoded",
                    p, error, audio.size / SAMPLE_RATE)
    np.clip(audio, -1.0, 1.0, out=audio)

    if video_start_s is not None and audio_start is not None:
        shift = int(round((video_start_s - audio_start) * SAMPLE_RATE))
        if abs(shift) >= SAMPLE_RATE // 1000:  # under a millisecond: nothing to do
            log.info("%s: audio starts %.3f s %s the video; aligning it to video frame 0", p,
                     abs(shift) / SAMPLE_RATE, "before" if shift > 0 else "after")
            audio = audio[shift:] if shift > 0 else np.concatenate([np.zeros(-shift, np.float32), audio])

    if n_frames is not None:
        target = round(n_frames * SAMPLE_RATE / fps)
        diff = audio.size - target
        if abs(diff) > SAMPLE_RATE / fps:  # more than one video frame off: the user should know
            log.warning("%s: audio is %.3f s %s than the video (%d frames at %d fps); %s it to %.3f s",
                        p, abs(diff) / SAMPLE_RATE, "longer" if diff > 0 else "shorter", n_frames, fps,
                        "trimming" if diff > 0 else "zero-padding", target / SAMPLE_RATE)
        audio = audio[:target] if diff > 0 else np.pad(audio, (0, -diff))
    return audio
