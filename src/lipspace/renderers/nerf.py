"""Coarse + fine hierarchical NeRF renderer: rays, bounds, per-ray condition and background -> pixels."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import ClassVar

import torch
from torch import nn

from lipspace.renderers.base import ChunkLoss, Outputs, VolumeRenderer
from lipspace.renderers.semantic import composite_logits, field_extras, semantic_background
from lipspace.renderers.volume import composite_real, sample_pdf, stratified_samples

# forward_backward's default chunk holds about this many activation values per layer (~6 MB float32):
# measured best on the 2-core CPU machines for 4x64 (512 rays), 8x128 (64-128) and 8x256 (32) fields.
TRAIN_CHUNK_ACTIVATIONS = 1_500_000


class NeRFRenderer(VolumeRenderer):
    """Coarse + fine hierarchical sampling, two fields built from one factory (NeRF / AD-NeRF).

    Knows rays, near/far, a per-ray condition and a per-ray background colour; nothing about where they
    come from. The fine pass evaluates coarse + importance samples together, sorted, as NeRF does.
    Provides the fused ``forward_backward``, region attention and the implicit parsing branch.
    """

    supports_fused_backward: ClassVar[bool] = True
    supports_regions: ClassVar[bool] = True
    supports_semantic: ClassVar[bool] = True

    def __init__(
        self,
        field: Callable[..., nn.Module],
        cond_dim: int,
        n_coarse: int = 64,
        n_fine: int = 128,
        perturb: bool = True,
        raw_noise_std: float = 0.0,
        eval_chunk_rays: int = 4096,
        compile: bool = False,
        train_chunk_rays: int | None = None,
        regions=None,
    ):
        """``field``: builds a field ``field(cond_dim=...)`` -> module ``(points, dirs, cond) -> (rgb, sigma,
        *region_att, *semantic_logits)`` that declares its layer width ``hidden`` and its ``semantic_classes``
        (MLPField, TriPlaneField).

        ``regions``: column ranges of the condition with region attention (``[(name, start, stop)]``, from a
        conditioner that declares them); the fields gate them per point and the outputs gain ``region_att``
        (and ``region_att_coarse``) [R, n_regions]: each region's gate magnitude composited along the ray.

        A field with ``semantic_classes`` K > 0 (SSP-NeRF's implicit parsing) adds ``semantic`` (and
        ``semantic_coarse``) [R, K]: its per-point logits composited with the colour's weights, the background sample
        carrying one learnt logit vector (``semantic_bg``)."""
        super().__init__(cond_dim)
        if n_coarse < 3 and n_fine > 0:
            raise ValueError(f"NeRFRenderer needs n_coarse >= 3 to place fine samples, got {n_coarse}")
        self.n_coarse = n_coarse
        self.n_fine = n_fine
        self.perturb = perturb
        self.raw_noise_std = raw_noise_std
        self.eval_chunk_rays = eval_chunk_rays
        if self.declare_regions(regions):
            field = functools.partial(field, regions=self.regions)
        self.coarse = field(cond_dim=cond_dim)
        self.fine = field(cond_dim=cond_dim) if n_fine > 0 else None
        self.semantic_classes = int(self.coarse.semantic_classes)
        self.semantic_bg = semantic_background(self.semantic_classes)
        if train_chunk_rays is None:
            # Sized from the widest pass and the field's layer width (every field declares ``hidden``).
            width = int(self.coarse.hidden)
            train_chunk_rays = max(1, round(TRAIN_CHUNK_ACTIVATIONS / (width * (n_coarse + n_fine))))
        self.train_chunk_rays = train_chunk_rays
        # Compiled wrappers live in a tuple, not as submodules, so state_dict keeps one copy of each weight
        # (and no `self.compile` attribute: it would shadow nn.Module.compile).
        fields = (self.coarse, self.fine)
        self._compiled = tuple(f if f is None else torch.compile(f) for f in fields) if compile else ()

    def _render_pass(self, field_fn, rays_o, rays_d, t_vals, cond, bg) -> Outputs:
        """Evaluate one field on the real samples of t_vals (the last is the background) and composite."""
        pts = rays_o[:, None, :] + rays_d[:, None, :] * t_vals[:, :-1, None]
        rgb, sigma, *extras = field_fn(pts, rays_d, cond)
        att, logits = field_extras(extras, bool(self.regions), self.semantic_classes)
        if self.training and self.raw_noise_std > 0:
            # NeRF's density noise; applied to the activated sigma, so it also re-clamps at 0.
            sigma = torch.relu(sigma + torch.randn_like(sigma) * self.raw_noise_std)
        out = composite_real(rgb, sigma, t_vals, bg)
        if att is not None:  # region attention magnitudes rendered with the volume weights (SyncTalk's masking)
            out["region_att"] = torch.einsum("rs,rsk->rk", out["weights"][:, :-1], att)
        if logits is not None:  # parsing logits rendered with the same weights (SSP-NeRF)
            out["semantic"] = composite_logits(out["weights"], logits, self.semantic_bg)
        return out

    def forward(self, rays_o, rays_d, near, far, cond, bg) -> Outputs:
        """rays_o/rays_d [R,3] (unit d), near/far [R], cond [R,C], bg [R,3] -> rgb, rgb_coarse [R,3], depth, acc [R]."""
        if cond is not None and cond.shape[-1] != self.cond_dim:
            raise ValueError(f"NeRFRenderer built for cond_dim={self.cond_dim}, got cond of shape {tuple(cond.shape)}")
        perturb = self.perturb and self.training
        coarse_fn, fine_fn = self._compiled or (self.coarse, self.fine)
        t_coarse = stratified_samples(near, far, self.n_coarse, perturb)
        coarse = self._render_pass(coarse_fn, rays_o, rays_d, t_coarse, cond, bg)
        if fine_fn is None:
            out = {"rgb": coarse["rgb"], "rgb_coarse": coarse["rgb"], "depth": coarse["depth"], "acc": coarse["acc"]}
            return _with_extras(out, coarse, coarse)
        mids = 0.5 * (t_coarse[:, 1:] + t_coarse[:, :-1])
        # weights[:, 1:-1]: NeRF drops the first real sample and (here) the background sample from the pdf.
        t_importance = sample_pdf(mids, coarse["weights"][:, 1:-1], self.n_fine, deterministic=not perturb)
        t_all = torch.sort(torch.cat([t_coarse, t_importance], dim=-1), dim=-1).values
        fine = self._render_pass(fine_fn, rays_o, rays_d, t_all, cond, bg)
        out = {"rgb": fine["rgb"], "rgb_coarse": coarse["rgb"], "depth": fine["depth"], "acc": fine["acc"]}
        return _with_extras(out, fine, coarse)

    @torch.no_grad()
    def render_chunked(self, rays_o, rays_d, near, far, cond, bg) -> Outputs:
        """Evaluation render in chunks of ``eval_chunk_rays`` rays (bounded memory for whole images)."""
        chunks = [
            self(rays_o[s], rays_d[s], near[s], far[s], None if cond is None else cond[s], bg[s])
            for s in _slices(rays_o.shape[0], self.eval_chunk_rays)
        ]
        return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}

    def forward_backward(
        self,
        rays_o,
        rays_d,
        near,
        far,
        cond,
        bg,
        loss_fn: ChunkLoss,
        chunk_rays: int | None = None,
        no_sync: Callable[[], AbstractContextManager] | None = None,
    ) -> Outputs:
        """Training step body: forward + backward per chunk of rays, accumulating ``.grad``.

        Returns the detached outputs of all rays plus "loss" (the batch loss).

        Gives the gradients of one full-batch ``loss.backward()`` (up to float summation order) when the
        batch loss is a sum of per-ray terms: ``loss_fn(out, sl)`` returns the share of rays ``sl`` (e.g.
        ``mse_chunk_loss``). Activations then stay cache-sized instead of ~GB per step, which on CPU is most
        of the time saved. Inputs carrying a graph (a conditioner's ``cond``) get the earlier chunks'
        gradient pushed upstream inside the last chunk's backward, so a step makes exactly one backward
        through anything upstream; under DDP pass ``no_sync`` (e.g. ``ddp_model.no_sync``) and the earlier
        chunks skip the gradient all-reduce, as in gradient accumulation.
        """
        inputs = {"rays_o": rays_o, "rays_d": rays_d, "near": near, "far": far, "cond": cond, "bg": bg}
        # Earlier chunks read detached leaves (their graphs end here); the last reads the real inputs.
        leaves = {k: v.detach().requires_grad_() if v is not None and v.requires_grad else v for k, v in inputs.items()}
        upstream = [k for k in inputs if leaves[k] is not inputs[k]]
        slices = _slices(rays_o.shape[0], chunk_rays or self.train_chunk_rays)
        outs, losses = [], []
        for i, sl in enumerate(slices):
            last = i == len(slices) - 1
            source = inputs if last else leaves
            out = self(**{k: None if v is None else v[sl] for k, v in source.items()})
            loss = loss_fn(out, sl)
            if not last:
                with no_sync() if no_sync is not None else contextlib.nullcontext():
                    loss.backward()
            else:
                # Leaf grads are zero on the last chunk's rows, whose gradient flows through the graph.
                pending = [(inputs[k], leaves[k].grad) for k in upstream if leaves[k].grad is not None]
                torch.autograd.backward([loss, *(t for t, _ in pending)], [None, *(g for _, g in pending)])
            outs.append({k: v.detach() for k, v in out.items()})
            losses.append(loss.detach())
        result = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        result["loss"] = torch.stack(losses).sum()
        return result


def _with_extras(out: Outputs, fine: Outputs, coarse: Outputs) -> Outputs:
    """The fine pass's region attention / parsing logits, and the coarse pass's as ``*_coarse``."""
    for key in ("region_att", "semantic"):
        if key in fine:
            out[key], out[f"{key}_coarse"] = fine[key], coarse[key]
    return out


def mse_chunk_loss(target: torch.Tensor, coarse_weight: float = 1.0) -> ChunkLoss:
    """NeRF's loss mse(rgb) + coarse_weight * mse(rgb_coarse) over the whole batch, as per-chunk shares."""
    scale = 1.0 / target.numel()

    def loss_fn(out: Outputs, sl: slice) -> torch.Tensor:
        tgt = target[sl]
        return scale * ((out["rgb"] - tgt).square().sum() + coarse_weight * (out["rgb_coarse"] - tgt).square().sum())

    return loss_fn


def _slices(n: int, chunk: int) -> list[slice]:
    """Consecutive, near-equal slices of at most ``chunk`` items covering range(n) (no tiny last chunk)."""
    if chunk < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk}")
    n_chunks = max(1, -(-n // chunk))
    size = -(-n // n_chunks)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]
