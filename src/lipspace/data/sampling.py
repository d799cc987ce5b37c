"""Training batches of the two kinds a renderer may declare (random-pixel ray batches; whole frames with their
cameras) and one whole frame of either kind for validation/eval/render."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset

from lipspace.data import dynamic_sampling as dyn
from lipspace.data.clip import Clip
from lipspace.data.framestore import gather_pixels
from lipspace.data.pixel_draw import draw_rejection as _draw_rejection, sphere_boxes as _sphere_boxes
from lipspace.data.rays import camera_rays, full_frame_pixels, sphere_near_far
from lipspace.data.schema import HEAD_CLASSES, MOUTH_CLASSES, PARSING_CLASSES
from lipspace.utils.errors import LipspaceError


def check_mouth_fraction(head_fraction: float, mouth_fraction: float) -> None:
    """``data.mouth_fraction`` in [0, 1] and, with ``data.head_fraction``, at most all of the rays."""
    if not 0 <= mouth_fraction <= 1 or head_fraction + mouth_fraction > 1:
        raise LipspaceError(f"data.mouth_fraction={mouth_fraction}: in [0, 1], and head_fraction + mouth_fraction "
                            f"(= {head_fraction + mouth_fraction}) at most 1")


def frame_inputs(clip: Clip, idx, inputs: dict[str, int]) -> dict[str, torch.Tensor]:
    """The per-frame conditioner inputs named in ``inputs`` (track name -> dim) for frames ``idx`` -> [F, dim]."""
    return {name: clip.track(name, idx) for name in inputs}


class RayBatches(IterableDataset):
    """Endless-per-epoch stream of ray batches: ``frames_per_batch`` random training frames, rays drawn from pixels
    whose rays hit the bounds sphere (``draw_bounds``: another sphere of the clip's meta, e.g. "bounds" when a torso
    model needs the torso's pixels too), ``head_fraction`` of them from head-class pixels (face, hair, mouth...).

    ``sampling="semantic"`` (SSP-NeRF's dynamic sampling): once :meth:`set_class_weights` has given per-class weights
    (the system: each class's mean photometric loss of the last epoch), each frame's rays are split among the
    parsing classes present there in proportion to them, with each present class at least ``class_floor`` of the
    rays (dynamic_sampling.class_allocation); until then (the first epoch) rays are drawn as "head_fraction" does.
    ``class_loss``: the loss a class's share follows, "mean" (per pixel) or "total" (the mean times the class's pixels
    in the frame; dynamic_sampling.CLASS_LOSSES)."""

    def __init__(self, clip: Clip, train_idx: np.ndarray, inputs: dict[str, int], rays_per_batch: int,
                 frames_per_batch: int, head_fraction: float, steps_per_epoch: int, seed: int, patch_size: int = 0,
                 sampling: str = "head_fraction", class_floor: float = 0.02, draw_bounds: str | None = None,
                 mouth_fraction: float = 0.0, class_loss: str = "total"):
        self.clip, self.train_idx, self.inputs = clip, torch.as_tensor(train_idx), inputs
        self.rays_per_batch, self.frames_per_batch = rays_per_batch, min(frames_per_batch, len(train_idx))
        self.head_fraction, self.steps_per_epoch, self.seed = head_fraction, steps_per_epoch, seed
        self.epoch = 0
        h, w = clip.hw
        if patch_size and not 0 < patch_size <= min(h, w):
            raise LipspaceError(f"data.patch_size={patch_size}: must be 0 (no patch) or at most the frame size {h}x{w}")
        self.patch_size = int(patch_size or 0)
        self.center, self.radius = clip.bounds
        # the sphere whose pixels are drawn (default: the one near / far come from)
        self.draw_center, self.draw_radius = clip.sphere(draw_bounds) if draw_bounds else clip.bounds
        self._head_lut = _class_lut(HEAD_CLASSES)
        self._gt_lut = _class_lut(clip.gt_background_classes)
        self._head_boxes = _mask_boxes(clip.parsing, self._head_lut)
        check_mouth_fraction(head_fraction, mouth_fraction)
        self.mouth_fraction = float(mouth_fraction)
        if self.mouth_fraction > 0:
            self._mouth_lut = _class_lut(MOUTH_CLASSES)
            self._mouth_boxes = _mask_boxes(clip.parsing, self._mouth_lut)
        if sampling not in dyn.SAMPLING_MODES or not 0 <= class_floor <= 1:
            raise LipspaceError(f"data.sampling={sampling!r}, data.class_floor={class_floor}: sampling is one of "
                                f"{dyn.SAMPLING_MODES}, class_floor in [0, 1]")
        dyn.check_class_loss(class_loss)
        self.sampling, self.class_floor, self.class_loss = sampling, float(class_floor), class_loss
        self.class_weights: torch.Tensor | None = None
        if sampling == "semantic":
            self._class_boxes, self._class_present = dyn.class_boxes(clip.parsing, len(PARSING_CLASSES))
            if class_loss == "total":
                self._class_pixels = dyn.class_pixel_counts(clip.parsing, len(PARSING_CLASSES))

    def set_class_weights(self, weights) -> None:
        """Per-class weights [len(PARSING_CLASSES)] of semantic sampling from now on (non-finite: unknown)."""
        weights = torch.as_tensor(weights, dtype=torch.float64).detach().cpu().reshape(-1)
        if self.sampling != "semantic" or len(weights) != len(PARSING_CLASSES):
            raise LipspaceError(f"set_class_weights: {len(weights)} weights for sampling={self.sampling!r}; semantic "
                                f"sampling takes one weight per parsing class ({len(PARSING_CLASSES)})")
        self.class_weights = weights
    def __len__(self):
        return self.steps_per_epoch

    def __iter__(self):
        dist = torch.distributed
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
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
        h, w = clip.hw
        # Stratified version of the mixture (1 - f) * uniform(pixels hitting the bounds) + f * uniform(head pixels):
        # round(f * per) rays from head pixels, the rest from hitting pixels, both by rejection sampling inside a
        # box. Only drawn pixels are touched, so a step costs the same at 512^2 as at 128^2.
        n_head = int(round(self.head_fraction * per)) if self.head_fraction > 0 else 0
        pix = self._draw_hitting(fidx, per, g)  # [F, per]
        if self.class_weights is not None:
            pix = self._draw_classes(fidx, pix, g)
        elif n_head:
            boxes = self._head_boxes[fidx].unbind(1)
            head, ok = _draw_rejection(boxes, lambda c: self._head_lut[gather_pixels(clip.parsing, fidx, c).long()],
                                       n_head, g, w)
            pix[:, :n_head] = torch.where(ok[:, None], head, pix[:, :n_head])
        n_mouth = int(round(self.mouth_fraction * per)) if self.class_weights is None else 0
        if n_mouth:  # the next slots from the mouth (lips, inner mouth): its motion is what lip sync is about
            boxes = self._mouth_boxes[fidx].unbind(1)
            mouth, ok = _draw_rejection(boxes, lambda c: self._mouth_lut[gather_pixels(clip.parsing, fidx, c).long()],
                                        n_mouth, g, w)
            sl = slice(n_head, n_head + n_mouth)
            pix[:, sl] = torch.where(ok[:, None], mouth, pix[:, sl])
        batch = {"frame_idx": fidx, "pose": clip.pose[fidx], "inputs": frame_inputs(clip, fidx, self.inputs),
                 "ray_frame": torch.arange(nf)[:, None].expand(nf, per).reshape(-1), **self._rays(fidx, pix)}
        if self.patch_size:
            # one square patch of the batch's first frame, centred on a random head pixel (SyncTalk's LPIPS patch);
            # its rays follow the random ones: batch["patch"] = (first ray, side)
            p = self.patch_size
            x0, y0, x1, y1 = (int(b) for b in self._head_boxes[fidx[0]])
            cx = int(torch.randint(x0, max(x1, x0 + 1), (1,), generator=g))
            cy = int(torch.randint(y0, max(y1, y0 + 1), (1,), generator=g))
            left, top = min(max(cx - p // 2, 0), w - p), min(max(cy - p // 2, 0), h - p)
            yy, xx = torch.meshgrid(torch.arange(top, top + p), torch.arange(left, left + p), indexing="ij")
            patch = self._rays(fidx[:1], (yy * w + xx).reshape(1, -1))
            start = batch["rays_o"].shape[0]
            for k, v in patch.items():
                batch[k] = torch.cat([batch[k], v])
            batch["ray_frame"] = torch.cat([batch["ray_frame"], torch.zeros(p * p, dtype=batch["ray_frame"].dtype)])
            batch["patch"] = torch.tensor([start, p])
        return batch

    def _rays(self, fidx: torch.Tensor, pix: torch.Tensor) -> dict:
        """Flat per-ray tensors for pixels ``pix`` [F, n] (flat indices) of frames ``fidx`` [F]."""
        clip = self.clip
        w = clip.hw[1]
        u, v = (pix % w).float(), torch.div(pix, w, rounding_mode="floor").float()
        rays_o, rays_d = camera_rays(clip.pose[fidx], clip.intrinsics, u, v)
        near, far, _ = sphere_near_far(rays_o, rays_d, self.center, self.radius)
        # only the drawn pixels are read (from the frame store on disk: the pages holding them)
        target = gather_pixels(clip.frames, fidx, pix).float() / 255.0  # [F, n, 3]
        ray_class = gather_pixels(clip.parsing, fidx, pix).long()  # [F, n]: region attention masking loss
        bg = clip.background.reshape(-1, 3)[pix]
        if clip.gt_background_classes:
            gt = self._gt_lut[ray_class]
            bg = torch.where(gt[..., None], target, bg)
        return {
            "rays_o": rays_o.reshape(-1, 3),
            "rays_d": rays_d.reshape(-1, 3),
            "near": near.reshape(-1),
            "far": far.reshape(-1),
            "target": target.reshape(-1, 3),
            "bg": bg.reshape(-1, 3),
            "ray_class": ray_class.reshape(-1),  # parsing class of each ray's pixel (PARSING_CLASSES)
        }

    def _hits(self, fidx: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """bool [F, M]: whether the rays of pixels ``cand`` [F, M] (flat indices) of frames ``fidx`` hit the bounds."""
        clip, w = self.clip, self.clip.hw[1]
        o, d = camera_rays(clip.pose[fidx], clip.intrinsics, (cand % w).float(),
                           torch.div(cand, w, rounding_mode="floor").float())
        return sphere_near_far(o, d, self.draw_center, self.draw_radius)[2]

    def _draw_hitting(self, fidx: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
        """[F, n] flat pixel indices drawn uniformly among the pixels whose rays hit the bounds sphere, inside the
        sphere's image-space bounding box (a frame where nothing hits draws from the whole frame)."""
        h, w = self.clip.hw
        boxes = _sphere_boxes(self.clip.pose[fidx], self.clip.intrinsics, self.draw_center, self.draw_radius, h, w)
        return _draw_rejection(boxes, lambda c: self._hits(fidx, c), n, g, w)[0]

    def _draw_classes(self, fidx: torch.Tensor, pix: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Semantic sampling: ``pix`` [F, n] (uniform hitting pixels) split into per-class slots by the class weights;
        each class's slots drawn uniformly among its pixels whose rays hit the bounds (a class with none there
        counts as absent from the frame; one whose draw fails keeps the uniform pixels)."""
        clip = self.clip
        h, w = clip.hw
        sphere = _sphere_boxes(clip.pose[fidx], clip.intrinsics, self.draw_center, self.draw_radius, h, w)
        boxes, present = dyn.clip_to_box(self._class_boxes[fidx], self._class_present[fidx], sphere)
        weights = self.class_weights  # "mean": each class's mean loss; "total": times its pixels in the frame
        if self.class_loss == "total":
            weights = weights[None] * self._class_pixels[fidx]
        counts = dyn.class_allocation(weights, present, pix.shape[1], self.class_floor)

        def accept(k):
            return lambda c: (gather_pixels(clip.parsing, fidx, c) == k) & self._hits(fidx, c)

        return dyn.draw_by_class(pix, counts, boxes, accept, _draw_rejection, g, w)


def _class_lut(classes) -> torch.Tensor:
    lut = torch.zeros(256, dtype=torch.bool)
    lut[list(classes)] = True
    return lut


def _mask_boxes(parsing, lut: torch.Tensor, chunk_bytes: int = 1 << 21) -> torch.Tensor:
    """Per-frame bounding boxes (x0, y0, x1, y1) [N,4] of the pixels whose class is in lut (whole frame if none);
    ``parsing`` [N,H,W] (a frame store or a tensor) is read about ``chunk_bytes`` at a time."""
    n, h, w = parsing.shape
    chunk = max(1, chunk_bytes // (h * w))
    out = torch.tensor([0, 0, w, h]).repeat(n, 1)
    classes = lut.nonzero()[:, 0].to(torch.uint8)
    for s in range(0, n, chunk):
        m = torch.isin(parsing[s:s + chunk], classes)  # == lut[...], without widening the chunk to int64
        cols, rows = m.any(1), m.any(2)  # [c, W], [c, H]
        has = cols.any(1)
        xr = torch.arange(w)
        yr = torch.arange(h)
        x0 = torch.where(cols, xr, w).min(1).values
        x1 = torch.where(cols, xr, -1).max(1).values + 1
        y0 = torch.where(rows, yr, h).min(1).values
        y1 = torch.where(rows, yr, -1).max(1).values + 1
        box = torch.stack([x0, y0, x1, y1], 1)
        out[s:s + chunk] = torch.where(has[:, None], box, out[s:s + chunk])
    return out


def frame_rays(clip: Clip, idx: int, downscale: int = 1) -> dict:
    """All rays of frame ``idx`` at 1/downscale resolution (head space), its pose [4,4] (head -> camera), its index
    ``frame`` and the area-downscaled target and background."""
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
    return {"rays_o": rays_o[0], "rays_d": rays_d[0], "near": near, "far": far, "pose": clip.pose[idx], "frame": idx,
            "bg": bg[0].permute(1, 2, 0).reshape(-1, 3), "target": target[0].permute(1, 2, 0), "hw": (hh, ww)}


def frame_cameras(clip: Clip, idx, downscale: int = 1) -> dict:
    """Whole frames ``idx`` (a list / 1-D tensor of F indices) with their cameras, for renderers that draw images:
    pose [F,4,4] (head -> camera), intrinsics [F,4] (fx, fy, cx, cy at 1/downscale resolution), target and bg
    [F,h,w,3] (area-downscaled), ``ray_class`` [F,h,w] (int64: each pixel's parsing class, for the region attention
    masking loss; at downscale > 1 the majority class of the pixel's downscale x downscale block, ties to the lowest
    class) and hw."""
    idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
    target = clip.frames[idx].permute(0, 3, 1, 2).float() / 255.0
    bg = clip.frame_background(idx).permute(0, 3, 1, 2)
    parsing = torch.as_tensor(clip.parsing[idx])  # [F,H,W] uint8
    if downscale > 1:
        h, w = clip.hw
        hh, ww = h // downscale, w // downscale  # as full_frame_pixels: whole blocks only
        target = F.avg_pool2d(target[..., :hh * downscale, :ww * downscale], downscale)
        bg = F.avg_pool2d(bg[..., :hh * downscale, :ww * downscale], downscale)
        # majority class of each block (ties: the lowest class): ascending classes, a later one wins only with
        # strictly more of the block's pixels
        blocks = parsing[:, :hh * downscale, :ww * downscale].reshape(len(idx), hh, downscale, ww, downscale)
        best = torch.zeros(len(idx), hh, ww, dtype=parsing.dtype)
        best_n = torch.zeros(len(idx), hh, ww, dtype=torch.int32)
        for k in torch.unique(parsing).tolist():
            n = (blocks == k).sum(dim=(2, 4), dtype=torch.int32)
            best = torch.where(n > best_n, torch.full_like(best, k), best)
            best_n = torch.maximum(n, best_n)
        parsing = best
    hh, ww = target.shape[-2:]
    intrinsics = (clip.intrinsics / downscale).expand(len(idx), 4).clone()  # pixel (i + 0.5) here: (i + 0.5) * ds
    return {"pose": clip.pose[idx], "intrinsics": intrinsics,
            "target": target.permute(0, 2, 3, 1), "bg": bg.permute(0, 2, 3, 1).float(),
            "ray_class": parsing.long(), "hw": (hh, ww)}


def whole_frame(clip: Clip, i: int, downscale: int = 1, batch_kind: str = "rays") -> dict:
    """Frame ``i`` as a renderer of ``batch_kind`` draws it (``Renderer.render_frame``): its rays (``frame_rays``)
    for "rays", its camera (``frame_cameras`` of one frame) for "images"."""
    return frame_rays(clip, i, downscale) if batch_kind == "rays" else frame_cameras(clip, [i], downscale)


class ImageBatches(IterableDataset):
    """Endless-per-epoch stream of whole-frame batches (batch_kind "images"): ``frames_per_batch`` random training
    frames, their cameras (``frame_cameras``), frame indices and conditioner inputs (one condition per frame)."""

    def __init__(self, clip: Clip, train_idx: np.ndarray, inputs: dict[str, int], frames_per_batch: int,
                 steps_per_epoch: int, seed: int, downscale: int = 1):
        self.clip, self.train_idx, self.inputs = clip, torch.as_tensor(train_idx), inputs
        self.frames_per_batch, self.steps_per_epoch = min(frames_per_batch, len(train_idx)), steps_per_epoch
        self.seed, self.downscale, self.epoch = seed, downscale, 0

    def __len__(self):
        return self.steps_per_epoch

    def __iter__(self):
        dist = torch.distributed
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 7919 + rank)  # as RayBatches
        self.epoch += 1
        for _ in range(self.steps_per_epoch):
            yield self.sample(g)

    def sample(self, g: torch.Generator) -> dict:
        fidx = self.train_idx[torch.randperm(len(self.train_idx), generator=g)[:self.frames_per_batch]]
        return {"frame_idx": fidx, "inputs": frame_inputs(self.clip, fidx, self.inputs),
                **frame_cameras(self.clip, fidx, self.downscale)}
