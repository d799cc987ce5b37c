"""Load a validated dataset directory (frames and parsing read from its on-disk frame store) and split it into
train / held-out-tail frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lipspace.data.framestore import FrameStore, open_frame_stores
from lipspace.data.schema import FPS, HEAD_CLASSES, validate_dataset
from lipspace.utils.errors import LipspaceError


@dataclass
class Clip:
    """One dataset directory. Images are uint8: an on-disk FrameStore (load_clip; indexing it reads only the frames
    asked for) or an in-memory tensor, both indexed alike and returning tensors; geometry float32 in memory."""

    root: Path
    meta: dict
    frames: FrameStore | torch.Tensor  # [N,H,W,3] uint8 RGB
    parsing: FrameStore | torch.Tensor  # [N,H,W] uint8 class index
    background: torch.Tensor  # [H,W,3] float32 in [0,1]
    tracks: dict[str, np.ndarray]
    # parsing classes whose ground-truth pixels join the per-frame background (default: torso), as in the head
    # stage of AD-NeRF / ER-NeRF: the head NeRF is composited over them and does not model them
    gt_background_classes: tuple[int, ...] = ()
    bounds_key: str = "bounds"  # which meta sphere near/far come from: "bounds" or "head_bounds"
    # audio windows computed from audio.wav for conditioners that listen (name -> (AudioInput, declared dim));
    # siblings (held-out utterances, driving clips) get the same ones from their own audio
    audio_inputs: dict = field(default_factory=dict)
    pose: torch.Tensor = field(init=False)  # [N,4,4] head -> camera
    intrinsics: torch.Tensor = field(init=False)  # [4] fx, fy, cx, cy
    # [N,P,3] head-space face points (schema: optional track 'face_points'); None when the dataset has none
    face_points: torch.Tensor | None = field(init=False)

    def __post_init__(self):
        self.pose = torch.as_tensor(self.tracks["pose"], dtype=torch.float32)
        self.intrinsics = torch.as_tensor(self.tracks["intrinsics"], dtype=torch.float32)
        fp = self.tracks.get("face_points")
        self.face_points = None if fp is None else torch.as_tensor(fp, dtype=torch.float32)

    @property
    def n_frames(self) -> int:
        return int(self.meta["n_frames"])

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.meta["height"]), int(self.meta["width"])

    @property
    def bounds(self) -> tuple[torch.Tensor, float]:
        return self.sphere(self.bounds_key)

    def sphere(self, key: str) -> tuple[torch.Tensor, float]:
        """A bounds sphere of meta (centre [3], radius; head space): "bounds" (head, neck and the visible torso) or
        "head_bounds" (head and neck; optional, "bounds" when absent)."""
        b = self.meta.get(key) or self.meta["bounds"]
        return torch.tensor(b["center"], dtype=torch.float32), float(b["radius"])

    @property
    def head_pose_source(self) -> str:
        """Where ``pose`` comes from (the results column ``head_pose``): "exact" (generated clips: the synthetic head's
        own pose), "stabilized" (``lipspace-prep ... stabilize=sync``: SyncTalk's Head-Sync Stabilizer) or "fitted"
        (lipspace-prep's landmark fit, smoothed)."""
        if str(self.meta.get("kind", "")).startswith("synthetic"):
            return "exact"
        return "stabilized" if "stabilize" in (self.meta.get("stages") or {}) else "fitted"

    @property
    def audio_path(self) -> Path:
        return self.root / "audio.wav"

    def class_mask(self, idx, classes) -> torch.Tensor:
        """Pixels of frames ``idx`` whose parsing class is one of ``classes`` (bool [..., H, W])."""
        return torch.isin(self.parsing[idx], torch.as_tensor(classes, dtype=self.parsing.dtype))

    def head_mask(self, idx) -> torch.Tensor:
        return self.class_mask(idx, HEAD_CLASSES)

    def frame_background(self, idx) -> torch.Tensor:
        """Background of frames ``idx`` [..., H, W, 3] float: background.png, with ground-truth pixels of
        ``gt_background_classes`` pasted in."""
        bg = self.background.expand(*self.parsing[idx].shape, 3)
        if not self.gt_background_classes:
            return bg
        m = self.class_mask(idx, self.gt_background_classes)
        return torch.where(m[..., None], self.frames[idx].float() / 255.0, bg)

    def load_sibling(self, root) -> "Clip":
        """Load another dataset directory (a held-out utterance, a driving clip) with this clip's settings,
        including its audio inputs computed from the sibling's own audio."""
        sib = load_clip(root, gt_background_classes=self.gt_background_classes, bounds_key=self.bounds_key)
        for name, (spec, dim) in self.audio_inputs.items():
            sib.attach_audio(name, spec, dim)
        return sib

    def attach_audio(self, name: str, spec, declared_dim: int | None = None, who: str = "conditioner") -> None:
        """Add the audio windows ``name`` ([N, W, D] or [N, C, W, D]) computed from this clip's audio.wav."""
        from lipspace.audio.inputs import AudioInput, audio_track

        spec = AudioInput.of(spec)
        self.tracks[name] = audio_track(self.root, self.n_frames, spec, declared_dim, who)
        self.audio_inputs[name] = (spec, declared_dim)

    def track(self, name: str, idx=None) -> torch.Tensor:
        arr = torch.as_tensor(self.tracks[name], dtype=torch.float32)
        return arr if idx is None else arr[idx]


def load_clip(root, check_images: bool = True, gt_background_classes=(), bounds_key: str = "bounds") -> Clip:
    """Validate and load a dataset directory: frames and parsing as frame stores on disk (built from the PNGs on
    the first load, lipspace.data.framestore), background and tracks in memory."""
    import cv2

    root = Path(root).expanduser().resolve()
    meta = validate_dataset(root, check_images=check_images)
    frames, parsing = open_frame_stores(root, meta["n_frames"], meta["height"], meta["width"])
    bg = cv2.imread(str(root / "background.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    tracks = dict(np.load(root / "tracks.npz"))
    return Clip(root=root, meta=meta, frames=frames, parsing=parsing,
                background=torch.from_numpy(bg.astype(np.float32) / 255.0), tracks=tracks,
                gt_background_classes=tuple(int(c) for c in gt_background_classes), bounds_key=bounds_key)


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # frame indices used for training
    test: np.ndarray  # held-out tail, identical whatever clip_seconds is, so clip-length studies compare fairly


def split_frames(clip: Clip, test_fraction: float = 0.1, clip_seconds: float | None = None) -> Split:
    """Hold out the last ``test_fraction`` of the clip; train on the first ``clip_seconds`` of the rest."""
    n = clip.n_frames
    if not 0.0 <= test_fraction < 1.0:
        raise LipspaceError(f"data.test_fraction={test_fraction}: must be in [0, 1).")
    n_test = int(round(n * test_fraction))
    if test_fraction > 0:
        n_test = max(n_test, 1)
    valid = clip.tracks["valid"].astype(bool)
    n_pool = n - n_test
    n_train = n_pool if clip_seconds is None else min(n_pool, int(round(clip_seconds * FPS)))
    if clip_seconds is not None and clip_seconds * FPS > n_pool + 0.5:
        raise LipspaceError(f"{clip.root}: data.clip_seconds={clip_seconds} asks for {clip_seconds * FPS:.0f} "
                            f"training frames but only {n_pool} precede the held-out tail "
                            f"({n} frames, test_fraction={test_fraction}). Use a shorter clip_seconds or null.")
    train = np.arange(n_train)[valid[:n_train]]
    test = np.arange(n_pool, n)[valid[n_pool:]]
    if len(train) == 0:
        raise LipspaceError(f"{clip.root}: no valid training frames (clip_seconds={clip_seconds}). "
                            "Check tracks.npz 'valid' or use a longer clip.")
    return Split(train=train, test=test)
