"""LightningDataModule over one dataset directory: training batches of the kind the renderer declares (random-pixel
rays, or whole frames with their cameras), validation frames from the held-out tail."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lipspace.data.clip import Clip, Split, load_clip, split_frames
from lipspace.data.dynamic_sampling import SAMPLING_MODES, check_class_loss
from lipspace.data.sampling import ImageBatches, RayBatches, check_mouth_fraction, frame_inputs, whole_frame
from lipspace.utils.errors import LipspaceError

BATCH_KINDS = ("rays", "images")  # lipspace.renderers.base.Renderer.batch_kind


class _ValFrames(Dataset):
    def __init__(self, clip: Clip, idx: np.ndarray, inputs: dict[str, int], downscale: int, batch_kind: str = "rays"):
        self.clip, self.idx, self.inputs, self.downscale = clip, idx, inputs, downscale
        self.batch_kind = batch_kind

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, k):
        i = int(self.idx[k])
        out = whole_frame(self.clip, i, self.downscale, self.batch_kind)
        out["frame_idx"] = torch.tensor([i])
        out["inputs"] = frame_inputs(self.clip, [i], self.inputs)
        return out


class TalkingHeadDataModule(L.LightningDataModule):
    def __init__(self, root: str, clip_seconds: float | None = None, test_fraction: float = 0.1,
                 rays_per_batch: int = 1024, frames_per_batch: int = 4, head_fraction: float = 0.5,
                 steps_per_epoch: int = 100, val_frames: int = 2, val_downscale: int = 2, seed: int = 0,
                 synthetic: dict | None = None, gt_background_classes: tuple[int, ...] = (9,),
                 bounds: str = "head_bounds", patch_size: int = 0, batch_kind: str = "rays",
                 sampling: str = "head_fraction", class_floor: float = 0.02, draw_bounds: str | None = None,
                 mouth_fraction: float = 0.0, class_loss: str = "total"):
        """``batch_kind``: the training batches to make, as the renderer declares (``set_batch_kind``; the train
        task sets it from the renderer): "rays" (``rays_per_batch`` random pixels of ``frames_per_batch`` frames)
        or "images" (``frames_per_batch`` whole frames with their cameras).

        ``sampling``: how ray batches spread their rays over the frame: "head_fraction" (``head_fraction`` from head
        pixels, the rest uniform) or "semantic" (SSP-NeRF: per parsing class in proportion to its photometric loss
        of the last epoch, which the system hands over through :meth:`set_class_weights`; at least ``class_floor``
        of the rays per class present; the first epoch draws as "head_fraction"); ``class_loss`` ("mean" / "total"):
        whether a class's share follows its mean loss per pixel or its total over the frame's pixels.
        ``mouth_fraction``: under "head_fraction", the share of each frame's rays drawn from its mouth pixels (lips
        and inner mouth, MOUTH_CLASSES) on top of the head's share, as lip-focused NeRFs weight the mouth (0: none).

        ``draw_bounds``: the sphere whose pixels ray batches draw from: null (the ``bounds`` sphere near / far come
        from) or "bounds" (head, neck and torso: a modelled torso, torso=nerf, needs the torso's pixels)."""
        super().__init__()
        # `synthetic`: generator parameters; the dataset at `root` is generated (and cached) on first use
        self.synthetic = dict(synthetic) if synthetic else None
        self.gt_background_classes = tuple(gt_background_classes or ())
        if bounds not in ("bounds", "head_bounds"):
            raise LipspaceError(f"data.bounds={bounds!r}: must be 'head_bounds' (head + neck; the torso comes from "
                                "gt_background_classes) or 'bounds' (head, neck and torso).")
        self.bounds_key = bounds
        if draw_bounds not in (None, "bounds", "head_bounds"):
            raise LipspaceError(f"data.draw_bounds={draw_bounds!r}: null (data.bounds' sphere), 'bounds' or "
                                "'head_bounds'")
        self.draw_bounds = draw_bounds
        self.root, self.clip_seconds, self.test_fraction = root, clip_seconds, test_fraction
        self.rays_per_batch, self.frames_per_batch, self.head_fraction = rays_per_batch, frames_per_batch, head_fraction
        self.steps_per_epoch, self.seed = steps_per_epoch, seed
        self.val_frames, self.val_downscale = val_frames, val_downscale
        self.patch_size = patch_size  # > 0: each batch also carries one patch_size^2 patch (LPIPS refinement stage)
        if sampling not in SAMPLING_MODES:
            raise LipspaceError(f"data.sampling={sampling!r}: one of {', '.join(SAMPLING_MODES)}")
        check_class_loss(class_loss)
        self.sampling, self.class_floor, self.class_loss = sampling, class_floor, class_loss
        check_mouth_fraction(head_fraction, mouth_fraction)
        self.mouth_fraction = mouth_fraction
        self._class_weights = None  # the last set_class_weights (kept for a RayBatches built later)
        self.clip: Clip | None = None
        self.split: Split | None = None
        self.inputs: dict[str, int] = {}
        self._train: RayBatches | ImageBatches | None = None
        self.batch_kind = "rays"
        self.set_batch_kind(batch_kind)

    def set_batch_kind(self, kind: str) -> None:
        """Make training batches of ``kind`` (a renderer's ``batch_kind``) from now on."""
        if kind not in BATCH_KINDS:
            raise LipspaceError(f"batch kind {kind!r}: the data module makes {' or '.join(BATCH_KINDS)} batches")
        if kind == "images" and self.patch_size:
            raise LipspaceError(f"data.patch_size={self.patch_size}: patches are rays of a ray batch; a renderer "
                                "drawing whole images (batch_kind='images') trains on whole frames: set 0")
        if kind == "images" and self.class_weighted:
            raise LipspaceError("data.sampling=semantic spreads the rays of ray batches over parsing classes; a "
                                "renderer drawing whole images (batch_kind='images') has none: set head_fraction")
        if kind != self.batch_kind:
            self.batch_kind, self._train = kind, None

    @property
    def class_weighted(self) -> bool:
        """Whether ray batches take per-class weights (``data.sampling=semantic``): the system then measures each
        parsing class's photometric loss over every epoch and hands it over through :meth:`set_class_weights`."""
        return self.sampling == "semantic"

    def set_class_weights(self, weights) -> None:
        """Per-class weights [len(PARSING_CLASSES)] of semantic sampling (RayBatches.set_class_weights)."""
        if not self.class_weighted:
            raise LipspaceError(f"set_class_weights: data.sampling={self.sampling!r} takes no class weights")
        self._class_weights = weights
        if isinstance(self._train, RayBatches):
            self._train.set_class_weights(weights)

    def load(self) -> "TalkingHeadDataModule":
        """Load the clip once (idempotent): the train task needs n_frames before building the conditioner."""
        if self.clip is None:
            if self.synthetic is not None:
                from lipspace.data.synthetic import generate_synthetic

                generate_synthetic(self.root, **self.synthetic)
            self.clip = load_clip(self.root, gt_background_classes=self.gt_background_classes,
                                  bounds_key=self.bounds_key)
            self.split = split_frames(self.clip, self.test_fraction, self.clip_seconds)
        return self

    @property
    def n_frames(self) -> int:
        return self.load().clip.n_frames

    def check_inputs(self, inputs: dict[str, int], who: str) -> None:
        """Fail at start-up, in one line, when a conditioner's declared inputs are absent or of another width."""
        clip = self.load().clip
        for name, dim in inputs.items():
            if name not in clip.tracks:
                raise LipspaceError(f"{clip.root / 'tracks.npz'}: conditioner '{who}' needs input '{name}' "
                                    f"(dim {dim}) but the dataset has only {sorted(clip.tracks)}. "
                                    "Use a conditioner whose inputs this dataset provides, or re-run preprocessing.")
            have = clip.tracks[name].shape[-1] if clip.tracks[name].ndim > 1 else 1
            if have != dim:
                raise LipspaceError(f"{clip.root / 'tracks.npz'}: conditioner '{who}' declares input '{name}' of "
                                    f"dim {dim} but the dataset's '{name}' has dim {have}. "
                                    f"Set conditioner.inputs.{name}={have} (or use a matching dataset).")
        self.inputs = dict(inputs)

    def attach_audio(self, audio_inputs: dict, inputs: dict[str, int], who: str) -> None:
        """Compute the audio windows a conditioner listens to (``audio_inputs``: name -> AudioInput spec) from
        the dataset's audio, checking each backend's width against the declared ``inputs[name]``."""
        clip = self.load().clip
        for name, spec in (audio_inputs or {}).items():
            clip.attach_audio(name, spec, inputs.get(name), who=f"conditioner '{who}'")

    def setup(self, stage: str | None = None):
        self.load()

    def train_dataloader(self):
        if self._train is None and self.batch_kind == "images":
            self._train = ImageBatches(self.clip, self.split.train, self.inputs, self.frames_per_batch,
                                       self.steps_per_epoch, self.seed)
        elif self._train is None:
            self._train = RayBatches(self.clip, self.split.train, self.inputs, self.rays_per_batch,
                                     self.frames_per_batch, self.head_fraction, self.steps_per_epoch, self.seed,
                                     self.patch_size, self.sampling, self.class_floor, self.draw_bounds,
                                     self.mouth_fraction, self.class_loss)
            if self._class_weights is not None:
                self._train.set_class_weights(self._class_weights)
        return DataLoader(self._train, batch_size=None, num_workers=0)

    def val_indices(self) -> np.ndarray:
        pool = self.split.test if len(self.split.test) else self.split.train
        pick = np.linspace(0, len(pool) - 1, min(self.val_frames, len(pool))).round().astype(int)
        return pool[pick]

    def val_dataloader(self):
        ds = _ValFrames(self.clip, self.val_indices(), self.inputs, self.val_downscale, self.batch_kind)
        return DataLoader(ds, batch_size=None, num_workers=0)
