"""Write rendered sequences as 25 fps mp4 with the driving audio muxed in, and ground-truth-vs-render PNG strips."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from lipspace.utils.errors import LipspaceError


def ffmpeg_exe() -> str:
    import shutil

    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # fall back to a system ffmpeg
        exe = shutil.which("ffmpeg")
        if exe is None:
            raise LipspaceError("no ffmpeg binary: `pip install imageio-ffmpeg` or `apt-get install ffmpeg`.") from None
        return exe


def write_video(frames: np.ndarray, out_path, fps: int = 25, audio_path=None, audio_offset_s: float = 0.0) -> Path:
    """Encode uint8 [T,H,W,3] RGB frames as H.264 (yuv420p; odd sizes padded) and mux ``audio_path`` (AAC) from
    ``audio_offset_s``, cut to the video's length."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{frames.shape[2]}x{frames.shape[1]}", "-r", str(fps), "-i", "-"]
    if audio_path is not None:
        cmd += ["-ss", f"{audio_offset_s:.4f}", "-i", str(audio_path), "-map", "0:v", "-map", "1:a",
                "-c:a", "aac", "-b:a", "128k"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-t", f"{t / fps:.4f}", str(out)]
    proc = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise LipspaceError(f"{out}: ffmpeg failed to write the video: {proc.stderr.decode(errors='replace')[-300:]}")
    return out


def read_video(path) -> np.ndarray:
    """Decode a video's frames as uint8 [T,H,W,3] RGB (the inverse of ``write_video``, up to H.264 loss)."""
    path = Path(path)
    probe = subprocess.run([ffmpeg_exe(), "-i", str(path)], capture_output=True, text=True).stderr
    import re

    size = re.search(r"Video: .*?, (\d{2,5})x(\d{2,5})", probe)
    if not path.is_file() or size is None:
        raise LipspaceError(f"{path}: not a readable video ({'missing' if not path.is_file() else 'no video stream'}).")
    w, h = int(size.group(1)), int(size.group(2))
    proc = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24",
                           "-"], capture_output=True)
    if proc.returncode != 0:
        raise LipspaceError(f"{path}: ffmpeg failed to decode it: {proc.stderr.decode(errors='replace')[-300:]}")
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, h, w, 3)


def write_strip(gt: list[np.ndarray], pred: list[np.ndarray], out_path) -> Path:
    """PNG with ground truth (top row) over render (bottom row) for a few frames, uint8 RGB inputs."""
    import cv2

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    strip = np.concatenate([np.concatenate(gt, axis=1), np.concatenate(pred, axis=1)], axis=0)
    cv2.imwrite(str(out), strip[:, :, ::-1])
    return out


def to_uint8(img) -> np.ndarray:
    arr = img.numpy() if hasattr(img, "numpy") else np.asarray(img)
    return (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
