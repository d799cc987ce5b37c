"""Decoding a video's frames at constant 25 fps as a stream (``VideoFrames``: one source frame in memory at a time);
lipspace.prep.io.decode_video_25fps stacks them into one array."""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from lipspace.data.schema import FPS
from lipspace.prep.io import (_DECODE_ERRORS, _REENCODE_HINT, MIN_SECONDS, _open, _video_stream, _why,
                              probe_video)
from lipspace.utils.errors import LipspaceError

log = logging.getLogger("lipspace.prep.io")  # the decoder's logger: its warnings keep their logger name


def _out_size(w: int, h: int, max_side: int | None) -> tuple[tuple[int, int] | None, float]:
    """(cv2 size (w, h) after the max_side downscale or None when untouched, output side / source side)."""
    if max_side is not None and max(h, w) > max_side:
        s = max_side / max(h, w)
        size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
        return size, size[0] / w
    return None, 1.0


def _to_rgb(frame: av.VideoFrame, max_side: int | None) -> np.ndarray:
    # rgb24 conversion also expands gray/yuvj/10-bit sources to 3 channels.
    img = frame.to_ndarray(format="rgb24")
    size, _ = _out_size(img.shape[1], img.shape[0], max_side)
    if size is not None:
        # Downscale right away so a 4K clip never holds full-resolution frames in memory.
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return img


class _Held:
    """A decoded source frame, converted to RGB once, when an output frame first needs its pixels."""

    __slots__ = ("frame", "rgb")

    def __init__(self, frame: av.VideoFrame):
        self.frame, self.rgb = frame, None

    def pixels(self, max_side: int | None) -> np.ndarray:
        if self.rgb is None:
            self.rgb = _to_rgb(self.frame, max_side)
            self.frame = None
        return self.rgb


class VideoFrames:
    """The frames of a video at constant ``fps``, decoded while they are iterated (one source frame in memory).

    Iterating yields uint8 [H,W,3] RGB frames, frame i being the source frame shown at t = i / fps (a frame shown
    for several output instants is yielded as the same array: do not modify it). Selection uses each decoded
    frame's pts (exact rationals), so 30 fps and variable-frame-rate sources resample without drift;
    N = floor(duration * fps), duration = end of the last source frame's interval. ``max_seconds`` stops decoding
    early (previews, tests); ``max_side`` bounds the longer output side. ``pixels=False`` yields None for every
    frame and skips the RGB conversion (counting the frames costs the decoding only). After a complete iteration
    ``info`` holds the measured VideoInfo, ``n_frames`` the output frame count and ``frame_hw`` the output size.
    Every iteration decodes the file again (a second pass yields the same frames)."""

    def __init__(self, path: str | Path, fps: int = FPS, max_side: int | None = None,
                 max_seconds: float | None = None, pixels: bool = True, warn: bool = True):
        self.info = probe_video(path)
        self.fps, self.max_side, self.max_seconds, self.pixels, self.warn = fps, max_side, max_seconds, pixels, warn
        self.n_frames: int | None = None
        self.frame_hw: tuple[int, int] | None = None

    def __iter__(self):
        info, fps, max_side, max_seconds = self.info, self.fps, self.max_side, self.max_seconds
        p = Path(info.path)
        container = _open(p)
        vs = _video_stream(p, container)
        tb = vs.time_base or Fraction(1, 90000)
        step = Fraction(1, fps)
        limit = Fraction(max_seconds).limit_denominator(10**6) if max_seconds is not None else None

        pending: deque[_Held] = deque()  # output frames emitted but not yet known to be inside the clip
        emitted = 0  # output frames emitted (yielded + pending)
        times: list[Fraction] = []  # source frame start times relative to the first frame
        held: _Held | None = None  # the source frame whose interval we are inside
        t0: Fraction | None = None
        scale = 1.0
        hw: tuple[int, int] | None = None
        error: str | None = None

        def emit_until(t_end: Fraction) -> None:
            # Every output instant i/fps before t_end falls in the held frame's interval.
            nonlocal emitted
            while Fraction(emitted) * step < t_end:
                pending.append(held)
                emitted += 1

        def out(h: _Held):
            return h.pixels(max_side) if self.pixels else None

        try:
            for frame in container.decode(vs):
                if frame.pts is None:  # no timestamps at all: fall back to the nominal rate
                    t_abs = Fraction(len(times)) / Fraction(info.fps or fps).limit_denominator(10**6)
                else:
                    t_abs = frame.pts * tb
                if t0 is None:
                    t0 = t_abs  # output t = 0 is the first shown frame (skips edit-list / start offsets)
                t = t_abs - t0
                size, scale = _out_size(frame.width, frame.height, max_side)
                hw = (size[1], size[0]) if size is not None else (frame.height, frame.width)
                if times and t <= times[-1]:
                    # Non-increasing pts (duplicated timestamp): the later frame replaces the held one.
                    held = _Held(frame)
                    continue
                if held is not None:
                    emit_until(t)
                held = _Held(frame)
                times.append(t)
                # Output frame i is inside the clip once (i + 1) / fps <= the latest start time (the clip ends
                # after it) and <= max_seconds: those are final, yield them.
                safe = t if limit is None else min(t, limit)
                while pending and (emitted - len(pending) + 1) * step <= safe:
                    yield out(pending.popleft())
                if limit is not None and t >= limit:
                    break
        except _DECODE_ERRORS as e:
            error = _why(e)
        finally:
            container.close()

        if held is None:
            raise LipspaceError(f"{p}: no video frame could be decoded ({error or 'empty video stream'}); "
                                f"{_REENCODE_HINT}")

        # The last frame lasts one median source interval (its own duration field is unreliable across muxers).
        gaps = np.diff([float(x) for x in times])
        last = Fraction(float(np.median(gaps))).limit_denominator(10**6) if len(gaps) else step
        end = times[-1] + last
        if limit is not None:
            end = min(end, limit)
        n_out = math.floor(end * fps)
        emit_until(Fraction(n_out) * step)
        n_yielded = emitted - len(pending)

        duration = float(times[-1] + last)
        vfr = bool(len(gaps) > 1 and (gaps.max() - gaps.min()) > 0.1 * np.median(gaps))
        decoded_s = float(end)
        if error is not None or (limit is None and info.duration_s - decoded_s > 0.5):
            # A truncated file ends early; keep what decoded when it is long enough to be useful.
            if decoded_s < MIN_SECONDS:
                raise LipspaceError(f"{p}: only {decoded_s:.2f} s could be decoded before the stream broke off "
                                    f"({error or 'truncated'}); {_REENCODE_HINT}")
            if self.warn:
                log.warning("%s: video is truncated or corrupted (%s); using the %.2f s that decoded of %.2f s in "
                            "the header", p, error or "ends early", decoded_s, info.duration_s)
        if n_out / fps < MIN_SECONDS and limit is None:
            raise LipspaceError(f"{p}: the clip is {duration:.2f} s long; lipspace needs at least "
                                f"{MIN_SECONDS:.0f} s of talking video (use a longer clip)")
        if n_out == 0:
            raise LipspaceError(f"{p}: max_seconds={max_seconds} leaves no frame at {fps} fps; raise it")
        for _ in range(n_out - n_yielded):
            yield out(pending.popleft())

        self.n_frames, self.frame_hw = n_out, hw
        self.info = replace(info, n_frames=len(times), duration_s=duration, variable_frame_rate=vfr, scale=scale,
                            start_s=float(t0) if t0 is not None else 0.0,
                            fps=(len(times) - 1) / float(times[-1]) if len(times) > 1 and times[-1] > 0
                            else info.fps)


def prefetched(items, depth: int = 8):
    """Yield ``items`` (an iterable) while a background thread produces the next ``depth`` ones: decoding overlaps the
    consumer's work (PyAV, OpenCV and MediaPipe release the GIL). An error in the producer is raised here; stopping
    early stops the producer."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for x in it:
                if not put((None, x)):
                    return
            put((None, done))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put((e, None))
        finally:
            getattr(it, "close", lambda: None)()  # a generator (VideoFrames) closes its container now

    worker = threading.Thread(target=produce, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            err, x = q.get()
            if err is not None:
                raise err
            if x is done:
                return
            yield x
    finally:
        stop.set()
        worker.join()
