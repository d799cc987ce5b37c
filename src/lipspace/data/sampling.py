"""Ray batches for training (random pixels of a few frames) and whole-frame ray sets for validation/eval/render."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset

from lipspace.data.clip import Clip
from lipspace.data.rays import camera_rays, full_frame_pixels, sphere_near_far


def frame_inputs(clip: Clip, idx, inputs: dict[str, int]) -> dict[str, torch.Tensor]:
    """The per-frame conditioner inputs named in ``inputs`` (track name -> dim) for frames ``idx`` -> [F, dim]."""
    return {name: clip.track(name, idx) for name in inputs}


class RayBatches(IterableDataset):
    """Endless-per-epoch stream of ray batches: ``frames_per_batch`` random training frames, rays drawn from pixels
    whose rays hit the bounds sphere, ``head_fraction`` of them from head-class pixels (face, hair, mouth...)."""

    def __init__(self, clip: Clip, train_idx: np.ndarray, inputs: dict[str, int], rays_per_batch: int,
                 frames_per_batch: int, head_fraction: float, steps_per_epoch: int, seed: int):
        self.clip, self.train_idx, self.inputs = clip, torch.as_tensor(train_idx), inputs
        self.rays_per_batch, self.frames_per_batch = rays_per_batch, min(frames_per_batch, len(train_idx))
        self.head_fraction, self.steps_per_epoch, self.seed = head_fraction, steps_per_epoch, seed
        self.epoch = 0
        h, w = clip.hw
        self._u, self._v, _ = full_frame_pixels(h, w)
        self.center, self.radius = clip.bounds

    def __len__(self):
        return self.steps_per_epoch

    def __iter__(self):
        rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
        # distinct, reproducible streams per epoch and per DDP rank
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 7919 + rank)
        self.epoch += 1
        for _ in range(self.steps_per_epoch):
            yield self.sample(g)

    def sample(self, g: torch.Generator) -> dict:
        clip, nf = self.clip, self.frames_per_batch
        pick = torch.randperm(len(self.train_idx), generator=g)[:nf]
        fidx = self.train_idx[pick]
        per = -(-self.rays_per_batch // nf)
        rays_o, rays_d = camera_rays(clip.pose[fidx], clip.intrinsics, self._u.expand(nf, -1), self._v.expand(nf, -1))
        near, far, hit = sphere_near_far(rays_o, rays_d, self.center, self.radius)  # [F, H*W]
        head = clip.head_mask(fidx).reshape(nf, -1) & hit
        w = hit.float() / hit.sum(1, keepdim=True).clamp_min(1)
        if self.head_fraction > 0:
            w = (1 - self.head_fraction) * w + self.head_fraction * head.float() / head.sum(1, keepdim=True).clamp_min(1)
        w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))  # a frame with no hit: sample anywhere
        pix = torch.multinomial(w, per, replacement=True, generator=g)  # [F, per]
        gather = lambda t: torch.gather(t, 1, pix)  # noqa: E731
        rows = torch.arange(nf)[:, None]
        target = clip.frames[fidx].reshape(nf, -1, 3)[rows, pix].float() / 255.0
        bg = clip.frame_background(fidx).reshape(nf, -1, 3)[rows, pix]
        return {
            "frame_idx": fidx,
            "inputs": frame_inputs(clip, fidx, self.inputs),
            "ray_frame": rows.expand(nf, per).reshape(-1),
            "rays_o": rays_o[rows, pix].reshape(-1, 3),
            "rays_d": rays_d[rows, pix].reshape(-1, 3),
            "near": gather(near).reshape(-1),
            "far": gather(far).reshape(-1),
            "target": target.reshape(-1, 3),
            "bg": bg.reshape(-1, 3),
        }


def frame_rays(clip: Clip, idx: int, downscale: int = 1) -> dict:
    """All rays of frame ``idx`` at 1/downscale resolution plus the area-downscaled target and background."""
    h, w = clip.hw
    u, v, (hh, ww) = full_frame_pixels(h, w, downscale)
    rays_o, rays_d = camera_rays(clip.pose[idx : idx + 1], clip.intrinsics, u[None], v[None])
    center, radius = clip.bounds
    near, far, _ = sphere_near_far(rays_o[0], rays_d[0], center, radius)
    target = clip.frames[idx].permute(2, 0, 1)[None].float() / 255.0
    bg = clip.frame_background(idx).permute(2, 0, 1)[None]
    if downscale > 1:
        target = F.avg_pool2d(target, downscale)
        bg = F.avg_pool2d(bg, downscale)
    return {"rays_o": rays_o[0], "rays_d": rays_d[0], "near": near, "far": far,
            "bg": bg[0].permute(1, 2, 0).reshape(-1, 3), "target": target[0].permute(1, 2, 0), "hw": (hh, ww)}
