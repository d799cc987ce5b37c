"""AD-NeRF's torso NeRF under a renderer that draws whole images (``renderer=gaussian`` with ``torso=nerf``).

The same torso NeRF as :class:`lipspace.renderers.torso.TorsoComposite` (one field in camera space, conditioned on
the head pose and the conditioner's code, AD-NeRF's head and torso stages), marched along the ray of every pixel of
each frame of an image batch: the head-space ray of pixel (u, v) of a frame with head -> camera ``pose`` and
``intrinsics`` at the batch's resolution is ``lipspace.data.rays.camera_rays``, the rays the ray renderers see for
that frame. The torso image over the background, ``C_torso + (1 - A_torso) bg``, becomes the head rasteriser's
per-pixel background, so a pixel is the head over the torso over the background, as with the ray renderers.

Cost: a torso sample pass for every pixel of every training frame (the ray renderers march only the batch's rays).
Measured on this project's 2-core CPU (one thread, 128² synthetic head, 6500 Gaussians, 32 torso samples, 4x64 MLP,
nothing else running, 2026-12-05): one training image (forward + backward) 0.23 s for the Gaussians alone, 2.20 s
with the torso at full resolution, 0.65 s at ``image_downscale`` 2 and 0.30-0.32 s at 4. ``image_downscale`` d
marches the torso through one ray per d x d block and upsamples its colour and opacity (bilinear) before compositing
over the full-resolution background (the torso is smooth); conf/torso/nerf.yaml sets 2 for renderers drawing images
(1 on a GPU).

The published Gaussian talking heads (TalkingGaussian, GaussianTalker) paste the ground-truth torso (``torso=gt``,
the default); this compositor lets the Gaussian renderer be compared with a modelled torso on the same terms as the
NeRFs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from lipspace.data.rays import camera_rays
from lipspace.renderers.base import Outputs, Rasteriser, Renderer
from lipspace.renderers.torso import TorsoNeRF
from lipspace.utils.errors import LipspaceError


def pixel_rays(pose: torch.Tensor, intrinsics: torch.Tensor, hw: tuple[int, int]):
    """Head-space rays [F, h*w, 3] (origins, unit directions) through the pixel centres of ``hw`` images of frames
    with head -> camera ``pose`` [F,4,4] and ``intrinsics`` [F,4] at that resolution, row-major as the images."""
    h, w = hw
    vv, uu = torch.meshgrid(torch.arange(h, device=pose.device), torch.arange(w, device=pose.device), indexing="ij")
    f = pose.shape[0]
    return camera_rays(pose, intrinsics[:, None, :], uu.reshape(1, -1).expand(f, -1), vv.reshape(1, -1).expand(f, -1))


class TorsoImageComposite(TorsoNeRF, Rasteriser):
    """A head :class:`Rasteriser` (built from its partial at the conditioner's width) over AD-NeRF's torso NeRF over
    the background. Arguments as :class:`lipspace.renderers.torso.TorsoComposite`, plus ``image_downscale`` (the torso
    marched at 1/d of the image's resolution and upsampled, see :meth:`torso_image`) and ``eval_chunk_rays`` (torso
    rays per chunk when drawing a frame without gradients).

    Declarations: region attention is the head's (the regions go to the head; its ``region_att`` is passed
    through). ``param_groups``, ``on_train_step``, ``bind_optimizer`` and ``setup_scene`` forward to the head; during
    the torso stage under a fixed head the head's step hook is not called (a fixed head is not densified, pruned or
    reset)."""

    supports_regions: ClassVar[bool] = True
    supports_ddp: ClassVar[bool] = False  # the rasterisers it wraps (Gaussians) resize their parameters
    head_kind: ClassVar[type[Renderer]] = Rasteriser

    def __init__(self, head: Callable[..., Rasteriser] | Rasteriser, torso_field: Callable[..., nn.Module],
                 cond_dim: int, n_samples: int = 32, perturb: bool = True, pose_freqs: int = 2,
                 torso_code: bool = True, detach_code: bool = True, head_stage: float = 0.0,
                 total_steps: int | None = None, head_stage_classes=(9,), freeze_head: bool = True,
                 lr: float | None = None, regions=None, image_downscale: int = 1, eval_chunk_rays: int = 8192):
        super().__init__(cond_dim)
        self._init_torso(head, torso_field, cond_dim, n_samples, perturb, pose_freqs, torso_code, detach_code,
                         head_stage, total_steps, head_stage_classes, freeze_head, lr, regions)
        if int(image_downscale) < 1:
            raise LipspaceError(f"TorsoImageComposite: image_downscale={image_downscale} must be >= 1")
        self.image_downscale, self.eval_chunk_rays = int(image_downscale), int(eval_chunk_rays)

    def bind_optimizer(self, optimizer) -> None:
        self.head.bind_optimizer(optimizer)

    def on_train_step(self, step: int) -> None:
        """The head's step hook, except under a fixed head; the step also selects AD-NeRF's stage."""
        self._step = int(step)
        if not self.in_frozen_torso_stage():
            self.head.on_train_step(step)

    # -- the torso image ------------------------------------------------------------------------------------------
    def torso_image(self, pose, intrinsics, hw, bg, cond) -> Outputs:
        """The torso over ``bg`` [F,h,w,3] for frames with head -> camera ``pose`` [F,4,4], ``intrinsics`` [F,4] and
        condition ``cond`` [F,C] (or None) -> rgb [F,h,w,3], acc [F,h,w]. With ``image_downscale`` d > 1 the torso
        is marched through the centres of d x d pixel blocks and its colour (over black) and opacity are upsampled
        bilinearly before the composite over the full-resolution ``bg``. Without gradients, in chunks of
        ``eval_chunk_rays`` rays."""
        f, (h, w), d = pose.shape[0], hw, self.image_downscale
        lo = (max(h // d, 1), max(w // d, 1))
        k = intrinsics if d == 1 else intrinsics * torch.tensor([lo[1] / w, lo[0] / h, lo[1] / w, lo[0] / h],
                                                                  device=intrinsics.device)
        o, dirs = pixel_rays(pose, k, lo)
        n = lo[0] * lo[1]
        flat = (o.reshape(-1, 3), dirs.reshape(-1, 3), pose[:, None].expand(f, n, 4, 4).reshape(-1, 4, 4),
                None if cond is None else cond[:, None].expand(f, n, cond.shape[-1]).reshape(f * n, -1))
        black = flat[0].new_zeros(flat[0].shape[0], 3)
        step = flat[0].shape[0] if torch.is_grad_enabled() else self.eval_chunk_rays
        parts = []
        for s in range(0, flat[0].shape[0], step):
            o_, d_, p_, c_ = (None if t is None else t[s:s + step] for t in flat)
            parts.append(self.render_torso(o_, d_, c_, black[s:s + step], p_))
        rgb = torch.cat([p["rgb"] for p in parts]).reshape(f, *lo, 3)  # the torso's colour over black
        acc = torch.cat([p["acc"] for p in parts]).reshape(f, *lo, 1)
        if lo != (h, w):
            up = torch.nn.functional.interpolate(torch.cat([rgb, acc], -1).permute(0, 3, 1, 2), size=(h, w),
                                                 mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
            rgb, acc = up[..., :3], up[..., 3:]
        return {"rgb": rgb + (1 - acc) * bg, "acc": acc[..., 0]}

    # -- rendering ------------------------------------------------------------------------------------------------
    def render(self, batch: dict, cond: torch.Tensor) -> Outputs:
        """A training (or whole-batch) render in AD-NeRF's stage of the current step: the head over the ground-truth
        torso pixels (head stage), the torso under the fixed head (torso stage, ``freeze_head``), else the head over
        the torso over the background; adds ``torso_acc`` [F,h,w] wherever the torso is drawn."""
        dev = cond.device
        if self.in_head_stage():
            gt = torch.isin(batch["ray_class"].to(dev).long(), self.head_stage_classes)[..., None]
            return self.head.render({**batch, "bg": torch.where(gt, batch["target"].to(dev), batch["bg"].to(dev))},
                                    cond)
        pose, k = batch["pose"].to(dev), batch["intrinsics"].to(dev)
        torso = self.torso_image(pose, k, tuple(batch["hw"]), batch["bg"].to(dev), cond)
        if not self.in_frozen_torso_stage():
            out = self.head.render({**batch, "bg": torso["rgb"]}, cond)
            out["torso_acc"] = torso["acc"]
            return out
        with torch.no_grad():  # the torso under the fixed head: the head over black, then what it lets through
            head = self.head.render({**batch, "bg": torch.zeros_like(torso["rgb"])}, cond)
        out = dict(head)
        out["rgb"] = head["rgb"] + (1 - head["acc"])[..., None] * torso["rgb"]
        out["torso_acc"] = torso["acc"]
        return out

    @torch.no_grad()
    def render_frame(self, frame: dict, cond: torch.Tensor) -> torch.Tensor:
        """One whole frame (``frame_cameras`` of one frame) under ``cond`` [C]: the head over the torso image."""
        dev = cond.device
        pose, k = frame["pose"].to(dev).reshape(-1, 4, 4)[:1], frame["intrinsics"].to(dev).reshape(-1, 4)[:1]
        hw = tuple(frame["hw"])
        bg = frame["bg"].to(dev).reshape(1, *hw, 3)
        torso = self.torso_image(pose, k, hw, bg, cond[None])
        return self.head.render_frame({**frame, "bg": torso["rgb"]}, cond)
