"""Audio/mouth windows from lipspace datasets for the locally trained audio-visual sync encoder.

Windows (SyncNet / Wav2Lip convention, 0.2 s): a *video window* centred on frame t is the 5 grayscale mouth crops
of frames t-2 ... t+2; the matching *audio window* is the 20 log-mel frames (100 frames/s) centred on frame t,
taken with :func:`lipspace.audio.features.audio_windows` (so it follows the one alignment convention of
``lipspace.audio.align``). A window is usable when all 5 frames lie inside the clip and are ``valid``.

Mouth crops: a box of fixed size per clip (``box_w`` x the clip's median mouth width, aspect ``crop_hw``) centred
on the mean of landmarks 48-67 of each frame, edge-padded where it leaves the image, grayscale, resized (area) to
the crop size plus a margin (``MARGIN`` px each side) so training can jitter the crop; :func:`centre_crop` removes
the margin. Crops are cached under ``$LIPSPACE_CACHE/av`` (default ``~/.cache/lipspace/av``; never inside the
dataset directory), keyed by the landmarks file and the frame files' sizes and times.

Normalisation: log-mel features are standardised per clip and band (mean/std over the clip), mouth windows are
standardised per window (zero mean, unit std over its 5 crops) by the encoder itself.

Pairs: a positive pairs video window t with audio window t; a negative pairs it with audio window t + s,
``min_shift <= |s| <= max_shift``, both windows inside the clip (never crossing its ends).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipspace.data.schema import FPS, frame_name, validate_dataset
from lipspace.utils.errors import LipspaceError

MOUTH = slice(48, 68)
VIDEO_FRAMES = 5  # video frames per window (0.2 s at 25 fps)
AUDIO_FRAMES = 20  # log-mel frames per window (0.2 s at 100 frames/s)
CROP_HW = (48, 96)  # mouth crop height, width fed to the encoder
MARGIN = (4, 8)  # extra rows, columns on each side cached for jitter
BOX_W = 1.8  # crop width / median mouth width (landmarks 48-54 span)


def cache_dir() -> Path:
    """Where mouth crops are cached: $LIPSPACE_CACHE/av, default ~/.cache/lipspace/av."""
    from lipspace.utils.assets import cache_dir as project_cache

    return project_cache() / "av"


def mouth_boxes(lmk68: np.ndarray, crop_hw=CROP_HW, box_w: float = BOX_W, margin=MARGIN) -> np.ndarray:
    """float [N, 4] (cx, cy, w, h) of each frame's crop box in pixels, margin included; one size for the clip."""
    pts = np.asarray(lmk68, np.float64)[:, MOUTH]
    if pts.ndim != 3 or pts.shape[1:] != (20, 2):
        raise LipspaceError(f"lmk68 must be [N, 68, 2], got {np.asarray(lmk68).shape}")
    span = pts[..., 0].max(1) - pts[..., 0].min(1)
    mw = float(np.median(span[np.isfinite(span)])) if np.isfinite(span).any() else 0.0
    if not mw > 0:
        raise LipspaceError("mouth landmarks 48-67 have no extent: cannot place mouth crops (check tracks.npz lmk68)")
    h, w = crop_hw
    bw = box_w * mw
    bh = bw * h / w
    sx, sy = bw / w, bh / h  # source pixels per crop pixel
    c = pts.mean(1)
    return np.stack([c[:, 0], c[:, 1], np.full(len(c), bw + 2 * margin[1] * sx),
                     np.full(len(c), bh + 2 * margin[0] * sy)], 1)


def crop_frame(gray: np.ndarray, box, out_hw) -> np.ndarray:
    """uint8 [out_h, out_w]: the box (cx, cy, w, h) of a grayscale image, edge-padded, area-resized."""
    import cv2

    cx, cy, bw, bh = box
    x0, y0 = int(np.floor(cx - bw / 2)), int(np.floor(cy - bh / 2))
    x1, y1 = x0 + max(int(round(bw)), 1), y0 + max(int(round(bh)), 1)
    H, W = gray.shape
    pad = max(0, -x0, -y0, x1 - W, y1 - H)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    patch = gray[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    interp = cv2.INTER_AREA if patch.shape[1] > out_hw[1] else cv2.INTER_LINEAR
    return cv2.resize(patch, (out_hw[1], out_hw[0]), interpolation=interp)


def frames_signature(root, start: int, stop: int) -> str:
    """sha256 (16 hex) of the names, sizes and modification times of frames [start, stop) of a dataset: changes
    when any of those frame files is rewritten (cheap: no pixel is read)."""
    h = hashlib.sha256()
    for i in range(start, stop):
        p = Path(root) / "frames" / frame_name(i)
        try:
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError:
            h.update(f"{p.name}:missing;".encode())
    return h.hexdigest()[:16]


def mouth_crops(root, crop_hw=CROP_HW, box_w: float = BOX_W, margin=MARGIN, use_cache: bool = True) -> np.ndarray:
    """uint8 [N, H + 2*margin_h, W + 2*margin_w] grayscale mouth crops of every frame of a dataset."""
    import cv2

    root = Path(root).expanduser().resolve()
    meta = validate_dataset(root, check_images=False)
    n = int(meta["n_frames"])
    tracks_path = root / "tracks.npz"
    st = tracks_path.stat()
    key = hashlib.sha256(f"{root}-{n}-{st.st_size}-{st.st_mtime_ns}-{frames_signature(root, 0, n)}-"
                         f"{tuple(crop_hw)}-{box_w}-{tuple(margin)}-v2".encode()).hexdigest()[:16]
    path = cache_dir() / f"crops-{root.name}-{key}.npy"
    if use_cache and path.is_file():
        return np.load(path)
    with np.load(tracks_path) as t:
        if "lmk68" not in t:
            raise LipspaceError(f"{tracks_path}: no lmk68 track; mouth crops need 68-point landmarks")
        lmk = t["lmk68"]
    boxes = mouth_boxes(lmk, crop_hw, box_w, margin)
    out_hw = (crop_hw[0] + 2 * margin[0], crop_hw[1] + 2 * margin[1])
    crops = np.empty((n, *out_hw), np.uint8)
    for i in range(n):
        f = cv2.imread(str(root / "frames" / frame_name(i)), cv2.IMREAD_GRAYSCALE)
        if f is None:
            raise LipspaceError(f"{root / 'frames' / frame_name(i)}: unreadable frame; regenerate the dataset")
        crops[i] = crop_frame(f, boxes[i], out_hw)
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npy")
            np.save(tmp, crops)
            os.replace(tmp, path)
        except OSError:
            pass
    return crops


def normalise_mel(features: np.ndarray, lifter: int = 0, stats_rows: slice | None = None) -> np.ndarray:
    """Per-clip, per-band standardisation of log-mel features [T, D] (mean / std over ``stats_rows``, default all
    rows). With ``lifter`` > 0 the log-mel spectrum of each frame is first cepstrally smoothed: DCT over the bands,
    coefficients >= ``lifter`` zeroed, inverse DCT. This keeps the spectral envelope (formants: what the mouth
    does) and drops the pitch harmonics (who speaks)."""
    f = np.asarray(features, np.float32)
    if lifter and lifter < f.shape[1]:
        from scipy.fft import dct, idct

        c = dct(f.astype(np.float64), type=2, norm="ortho", axis=1)
        c[:, lifter:] = 0.0
        f = idct(c, type=2, norm="ortho", axis=1).astype(np.float32)
    ref = f if stats_rows is None or len(f[stats_rows]) < 2 else f[stats_rows]
    return ((f - ref.mean(0, keepdims=True)) / (ref.std(0, keepdims=True) + 1e-5)).astype(np.float32)


def mel_windows(features: np.ndarray, n_frames: int, window: int = AUDIO_FRAMES, audio_delay_s: float = 0.0,
                lifter: int = 0, frames: tuple[int, int] | None = None) -> np.ndarray:
    """float32 [n_frames, window, D]: normalised log-mel windows centred on each video frame. ``audio_delay_s``
    > 0 says the recording's audio is that late relative to its video: the window of frame t is then taken
    ``audio_delay_s`` later in audio.wav (a source / preparation sync error corrected at read time). ``frames``
    = (start, stop): standardise with the statistics of those video frames' audio only (a frame range treated as
    its own clip, e.g. training frames that must not see the held-out tail)."""
    from dataclasses import replace

    from lipspace.audio.features import audio_windows, get_backend

    spec = replace(get_backend("mel").spec, first_time_s=-float(audio_delay_s))
    if features.shape[1] != spec.dim:
        raise LipspaceError(f"expected log-mel features of width {spec.dim}, got {features.shape[1]}")
    rows = None
    if frames is not None:
        t0, t1 = (np.asarray(frames, np.float64) / FPS + audio_delay_s) * spec.rate
        rows = slice(max(int(np.floor(t0)), 0), max(int(np.ceil(t1)), 0))
    return audio_windows(normalise_mel(features, lifter, rows), spec, n_frames, window, fps=FPS)


@dataclass
class SyncClip:
    """One dataset's windows in memory: crops uint8 [N, Hc, Wc] (with margin), audio float32 [N, A, 80]."""

    name: str
    crops: np.ndarray
    audio: np.ndarray
    valid: np.ndarray  # bool [N]: frame usable (landmarks valid)
    centres: np.ndarray  # int [M]: frames t whose video window t-2..t+2 lies inside the clip and is all valid
    audio_delay_s: float = 0.0  # sync correction applied to the audio windows

    @property
    def n_frames(self) -> int:
        return len(self.crops)

    def video(self, t: np.ndarray) -> np.ndarray:
        """uint8 [B, 5, Hc, Wc]: the video windows centred on frames t."""
        t = np.asarray(t)
        return self.crops[t[:, None] + np.arange(VIDEO_FRAMES)[None] - VIDEO_FRAMES // 2]


def parse_root(spec) -> tuple[Path, float]:
    """'path' or 'path@delay_seconds' -> (path, audio delay in seconds)."""
    s = str(spec)
    if "@" in s:
        path, d = s.rsplit("@", 1)
        try:
            return Path(path), float(d)
        except ValueError:
            raise LipspaceError(f"{s}: write a dataset as PATH or PATH@AUDIO_DELAY_SECONDS (e.g. data@0.08)") from None
    return Path(s), 0.0


def load_sync_clip(root, crop_hw=CROP_HW, use_cache: bool = True, audio_delay_s: float | None = None,
                   lifter: int = 0, frames: tuple[int, int] | None = None) -> SyncClip:
    """Mouth crops and normalised mel windows of a dataset directory (``root`` may be 'path@delay_s', see
    :func:`parse_root` and :func:`mel_windows`). ``frames`` = (start, stop) keeps only those frames, as a clip of
    its own (windows never cross its ends; its log-mel standardised with its own audio statistics)."""
    from lipspace.audio.features import dataset_features, get_backend

    root, delay = parse_root(root)
    delay = delay if audio_delay_s is None else audio_delay_s
    root = root.expanduser().resolve()
    crops = mouth_crops(root, crop_hw, use_cache=use_cache)
    n_all = len(crops)
    lo, hi = (0, n_all) if frames is None else (max(int(frames[0]), 0), min(int(frames[1]), n_all))
    if hi <= lo:
        raise LipspaceError(f"{root}: frame range {tuple(frames)} is empty (the clip has {n_all} frames)")
    audio = mel_windows(dataset_features(root, get_backend("mel")), n_all, audio_delay_s=delay, lifter=lifter,
                        frames=None if frames is None else (lo, hi))[lo:hi]
    with np.load(root / "tracks.npz") as t:
        valid = t["valid"].astype(bool) if "valid" in t else np.ones(n_all, bool)
    crops, valid = crops[lo:hi], valid[lo:hi]
    n = hi - lo
    h = VIDEO_FRAMES // 2
    ok = np.convolve(valid.astype(int), np.ones(VIDEO_FRAMES, int), "same") == VIDEO_FRAMES
    ok[:h] = False
    ok[n - h:] = False
    centres = np.flatnonzero(ok)
    what = f"{root}" + ("" if frames is None else f" frames [{lo}, {hi})")
    if len(centres) == 0:
        raise LipspaceError(f"{what}: no 0.2 s window of {VIDEO_FRAMES} valid frames; the clip is too short")
    name = root.name + ("" if frames is None else f"[{lo}:{hi}]") + (f"@{delay:g}s" if delay else "")
    return SyncClip(name, crops, audio, valid, centres, delay)


def sample_pairs(centres: np.ndarray, n_pos: int, n_neg: int, rng: np.random.Generator, min_shift: int = 5,
                 max_shift: int = 25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(video_t, audio_t, label) int/int/float arrays: ``n_pos`` aligned pairs and ``n_neg`` pairs whose audio
    window is shifted by ``min_shift <= |s| <= max_shift`` frames. Both windows' centres are drawn from
    ``centres`` (frames whose window lies inside the clip), so no window crosses the clip ends."""
    centres = np.asarray(centres, np.int64)
    if min_shift < 1 or max_shift < min_shift:
        raise LipspaceError(f"shift range [{min_shift}, {max_shift}] is empty; need 1 <= min_shift <= max_shift")
    pos = rng.choice(centres, n_pos) if n_pos else np.zeros(0, np.int64)
    # candidate negatives: a (t, t+s) where both are centres; draw t among centres that have at least one partner
    cset = np.zeros(centres.max() + max_shift + 2, bool)
    cset[centres] = True
    shifts = np.concatenate([np.arange(-max_shift, -min_shift + 1), np.arange(min_shift, max_shift + 1)])
    tgt = centres[:, None] + shifts[None]
    ok = (tgt >= 0) & (tgt < len(cset))
    ok[ok] = cset[tgt[ok]]
    has = ok.any(1)
    if n_neg and not has.any():
        raise LipspaceError(f"clip too short for negatives shifted by >= {min_shift} frames "
                            f"({len(centres)} usable windows)")
    vt, at = np.zeros(n_neg, np.int64), np.zeros(n_neg, np.int64)
    rows = np.flatnonzero(has)
    for k, r in enumerate(rng.choice(rows, n_neg) if n_neg else []):
        s = rng.choice(shifts[ok[r]])
        vt[k], at[k] = centres[r], centres[r] + s
    video_t = np.concatenate([pos, vt])
    audio_t = np.concatenate([pos, at])
    label = np.concatenate([np.ones(n_pos, np.float32), np.zeros(n_neg, np.float32)])
    return video_t, audio_t, label


def centre_crop(video: np.ndarray, margin=MARGIN) -> np.ndarray:
    """Remove the cached margin: [..., Hc, Wc] -> [..., H, W]."""
    mh, mw = margin
    return video[..., mh:video.shape[-2] - mh, mw:video.shape[-1] - mw]


def jitter_crop(video: np.ndarray, rng: np.random.Generator, margin=MARGIN) -> np.ndarray:
    """Random crop of each window (same offset for its 5 frames) inside the margin: augmentation."""
    mh, mw = margin
    B = video.shape[0]
    H, W = video.shape[-2] - 2 * mh, video.shape[-1] - 2 * mw
    out = np.empty((*video.shape[:-2], H, W), video.dtype)
    dy = rng.integers(0, 2 * mh + 1, B)
    dx = rng.integers(0, 2 * mw + 1, B)
    for b in range(B):
        out[b] = video[b, ..., dy[b]:dy[b] + H, dx[b]:dx[b] + W]
    return out
