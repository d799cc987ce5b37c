"""Peak memory of a preprocessing run, estimated from the probed video before any work, and the refusal of a run that
cannot fit (one LipspaceError naming the option to change). The stages stream the clip (lipspace.prep.frame_stages),
so the estimate is a fixed part (libraries, models, the chunks in flight, the background stage's sampled frames) plus
a small per-frame part (tracks, head fit); the constants were measured with ru_maxrss on the shared clips.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lipspace.data.schema import FPS
from lipspace.prep.options import PrepOptions
from lipspace.utils.errors import LipspaceError

log = logging.getLogger("lipspace.prep.pipeline")

GB = 2**30
MB = 2**20
BASE_BYTES = 900 * MB  # interpreter, numpy/torch/cv2/mediapipe, the landmarker + segmenter models (measured ~0.75)
# tracks, crop landmarks, head fit, finalize's arrays (a few float32 [478,3] per frame) and heap growth: measured
# +135 MB from 504 to 2014 frames (a 720p clip looped to 20 s and 80 s, size 512), rounded up
PER_FRAME_BYTES = 100_000
PREFETCH = 8  # decoded frames queued ahead of the landmarker / the cropper (video_frames.prefetched)
DECODER_FRAMES = 24  # reference frames + threads of an H.264/HEVC decoder, at the source resolution (YUV 4:2:0)


def available_bytes() -> int | None:
    """Memory the system can give this process now (psutil, else /proc/meminfo MemAvailable); None if unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimate_peak(width: int, height: int, duration_s: float, opt: PrepOptions) -> dict[str, int]:
    """Bytes by part for a source of width x height and duration_s seconds; the peak is their sum ("total")."""
    from lipspace.prep.pipeline import BACKGROUND_FRAMES
    from lipspace.prep.pngio import CHUNK_BYTES

    seconds = duration_s if opt.max_seconds is None else min(duration_s, opt.max_seconds)
    n = int(seconds * FPS) + 1
    s = min(1.0, opt.max_side / max(width, height, 1))
    decoded = int(width * s) * int(height * s) * 3  # one RGB frame after the max_side downscale
    source = {
        "decoder": DECODER_FRAMES * width * height * 3 // 2 + width * height * 3 + (PREFETCH + 4) * decoded,
    }
    out_px = opt.size * opt.size
    # Stages run one at a time: the largest of them counts. crop/parsing: two chunks of frames in flight (+ maps);
    # background: BACKGROUND_FRAMES frames + parsing maps + masks, and the masked median's work chunks.
    stages = {
        "crop": 3 * CHUNK_BYTES + 2 * out_px * 3,
        "parsing": 2 * CHUNK_BYTES + CHUNK_BYTES // 3 + 40 * out_px * 4,
        "background": BACKGROUND_FRAMES * out_px * 5 + 2 * 64 * MB,
    }
    worst = max(stages, key=stages.get)
    parts = {"base": BASE_BYTES, **source, worst: stages[worst], "per_frame": n * PER_FRAME_BYTES}
    parts["total"] = sum(parts.values())
    parts["n_frames"] = n
    return parts


def _fmt(b: float) -> str:
    return f"{b / GB:.2f} GB"


def check_memory(video: str | Path, opt: PrepOptions) -> dict[str, int]:
    """Probe ``video`` (its clear errors for a missing or unreadable file), log the estimated peak at info level and
    raise LipspaceError when it exceeds the memory available now; returns the estimate."""
    from lipspace.prep.io import probe_video

    info = probe_video(video)
    est = estimate_peak(info.width, info.height, info.duration_s, opt)
    avail = available_bytes()
    parts = ", ".join(f"{k} {_fmt(v)}" for k, v in est.items() if k not in ("total", "n_frames"))
    log.info("%s: estimated peak memory %s (%s; %d frames at %dx%d -> size %d) of %s available", video,
             _fmt(est["total"]), parts, est["n_frames"], info.width, info.height, opt.size,
             _fmt(avail) if avail is not None else "unknown")
    if avail is not None and est["total"] > avail:
        hints = {
            "per_frame": "max_seconds= (use a shorter part of the clip)",
            "background": f"size= (output frames; {opt.size} now)",
            "parsing": f"size= (output frames; {opt.size} now)",
            "crop": f"size= (output frames; {opt.size} now)",
            "decoder": "a lower-resolution copy of the video (decoding needs the source resolution; "
                       f"max_side={opt.max_side} bounds only the decoded frames)",
        }
        order = sorted((k for k in hints if k in est), key=est.get, reverse=True)
        todo = "; ".join(dict.fromkeys(hints[k] for k in order))
        raise LipspaceError(f"{video}: preprocessing needs about {_fmt(est['total'])} of memory ({parts}) but only "
                            f"{_fmt(avail)} is available; free memory or lower, largest part first: {todo}")
    return est
