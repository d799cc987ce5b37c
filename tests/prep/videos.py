"""Generated test videos (PyAV): frames + optional AAC tone, any frame rate, explicit timestamps, gray."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, frames: np.ndarray, fps: int = 25, audio_s: float | None = None, gray: bool = False,
                pts: list[int] | None = None, tb: Fraction = Fraction(1, 1000), pix_fmt: str | None = None,
                codec: str = "libx264", codec_options: dict | None = None,
                tone_amplitude: float = 0.3) -> Path:
    """RGB frames [N,H,W,3] -> video file; `pts` in units of `tb` for irregular timing; `audio_s` seconds of a
    16 kHz mono AAC tone (None: no audio track)."""
    h, w = frames.shape[1:3]
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height = w, h
        vs.pix_fmt = pix_fmt or ("gray" if gray else "yuv420p")
        if codec == "libx264":
            vs.options = codec_options or {"preset": "ultrafast", "crf": "18"}
        if pts is not None:
            vs.codec_context.time_base = vs.time_base = tb
        a = out.add_stream("aac", rate=16000, layout="mono") if audio_s is not None else None
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img[..., 0] if gray else img, format="gray" if gray else "rgb24")
            if pts is not None:
                f.pts, f.time_base = pts[i], tb
            for pkt in vs.encode(f):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if a is not None:
            n = int(audio_s * 16000)
            wave = (tone_amplitude * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)
            for s in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[s:s + 1024][None]), format="fltp",
                                                layout="mono")
                af.sample_rate, af.pts = 16000, s
                for pkt in a.encode(af):
                    out.mux(pkt)
            for pkt in a.encode():
                out.mux(pkt)
    return path
