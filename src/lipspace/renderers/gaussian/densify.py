"""3DGS's adaptive density control (Kerbl et al. 2023, section 5.2) for a set of Gaussians held as row-aligned
parameters, with the optimiser's per-row state carried along.

Statistics (:class:`DensifyStats`): after every training step, the norm of the loss gradient w.r.t. each
Gaussian's projected 2-D mean, in NDC units as 3DGS (pixel gradient x (w/2, h/2)) and multiplied by the number of
frames in the batch (gsplat's convention: the loss averages over the batch's frames), summed over the frames in
which it is visible; the count of those frames; the largest screen radius seen.

Every ``every`` steps from ``start`` to ``stop`` (:func:`densify_and_prune`): Gaussians whose mean gradient is at
least ``grad_threshold`` are cloned when small (largest scale <= ``percent_dense`` x the scene extent; the copy is
exact, as 3DGS) or split when large (two samples drawn from the Gaussian, scales / 1.6; the original is removed);
then Gaussians with opacity below ``min_opacity`` are pruned and, after the first opacity reset (as 3DGS), those
larger than ``max_world_scale`` x the extent or wider on screen than ``max_screen_radius`` px (each when set).
Every ``reset_opacity_every`` steps opacities are clamped to at most 0.01 (:func:`reset_opacity`).
``max_gaussians`` caps the count (the highest gradients are densified first).

Optimiser consistency: the parameter objects stay the same (their ``.data`` is replaced, ``.grad`` dropped), so the
optimiser's param groups still hold them; every per-row state tensor (Adam's exp_avg, exp_avg_sq) is re-indexed
with the rows: kept rows keep their state, new rows start at zero (as 3DGS's cat_tensors_to_optimizer). Opacity
reset zeroes the opacities' state (3DGS replaces the tensor in the optimiser)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lipspace.renderers.gaussian.projection import quat_to_rotmat


@dataclass
class DensifyConfig:
    enabled: bool = True
    start: int = 500
    stop: int = 15000
    every: int = 100
    grad_threshold: float = 2e-4
    percent_dense: float = 0.01
    min_opacity: float = 0.005
    reset_opacity_every: int = 3000
    max_screen_radius: float | None = None  # px of the training batches; None: no screen-size pruning
    max_world_scale: float | None = 0.1  # x the scene extent; None: no world-size pruning
    max_gaussians: int = 100_000


class DensifyStats:
    """Per-Gaussian accumulators between two densifications."""

    def __init__(self, n: int, device=None):
        self.reset(n, device)

    def reset(self, n: int, device=None) -> None:
        self.grad = torch.zeros(n, device=device)
        self.count = torch.zeros(n, device=device)
        self.max_radius = torch.zeros(n, device=device)

    @torch.no_grad()
    def add(self, means2d: torch.Tensor, radii: torch.Tensor, visible: torch.Tensor, hw: tuple[int, int]) -> None:
        """Accumulate one batch's view-space gradients (``means2d`` [F,N,2] after backward; no grad: nothing)."""
        if means2d.grad is None or means2d.shape[1] != len(self.grad):
            return
        h, w = hw
        scale = torch.tensor([w / 2.0, h / 2.0], device=means2d.device) * means2d.shape[0]
        norm = (means2d.grad * scale).norm(dim=-1) * visible  # [F,N]
        self.grad += norm.sum(0).to(self.grad)
        self.count += visible.sum(0).to(self.count)
        self.max_radius = torch.maximum(self.max_radius, radii.max(0).values.to(self.max_radius))

    def mean_grad(self) -> torch.Tensor:
        return torch.where(self.count > 0, self.grad / self.count.clamp_min(1), torch.zeros_like(self.grad))


def _sync_state(optimizer, param: torch.nn.Parameter, keep: torch.Tensor, n_new: int) -> None:
    if optimizer is None or param not in optimizer.state:
        return
    state = optimizer.state[param]
    n_old = param.shape[0]
    for key, v in list(state.items()):
        if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n_old and v.shape == param.shape:
            state[key] = torch.cat([v[keep], v.new_zeros(n_new, *v.shape[1:])])


def apply_rows(rows: dict[str, torch.Tensor], keep: torch.Tensor, new: dict[str, torch.Tensor], optimizer) -> None:
    """Every tensor of ``rows`` (parameters and row-aligned buffers, same first dimension) becomes
    cat(old[keep], new[name]) in place of its data; parameters' optimiser state follows (new rows: zero)."""
    for name, t in rows.items():
        add = new[name].to(t)
        if isinstance(t, torch.nn.Parameter):
            _sync_state(optimizer, t, keep, len(add))
            t.grad = None
        t.data = torch.cat([t.data[keep], add])


def reset_opacity(opacity_logits: torch.nn.Parameter, optimizer, ceiling: float = 0.01) -> None:
    """Opacities to at most ``ceiling`` (3DGS), the optimiser's state of them zeroed."""
    with torch.no_grad():
        opacity_logits.data = torch.minimum(opacity_logits.data,
                                            torch.full_like(opacity_logits.data, math.log(ceiling / (1 - ceiling))))
    if optimizer is not None and opacity_logits in optimizer.state:
        for key, v in optimizer.state[opacity_logits].items():
            if torch.is_tensor(v) and v.shape == opacity_logits.shape:
                v.zero_()


@torch.no_grad()
def densify_and_prune(rows: dict[str, torch.Tensor], stats: DensifyStats, cfg: DensifyConfig, extent: float,
                      optimizer, generator: torch.Generator | None = None, screen_prune: bool = False) -> dict:
    """One round of clone / split / prune over ``rows`` (must hold means, log_scales, quats, opacity_logits; every
    other row-aligned tensor is copied to clones and split children). Returns counts {cloned, split, pruned}."""
    means, log_scales, quats = rows["means"], rows["log_scales"], rows["quats"]
    n = means.shape[0]
    grad = stats.mean_grad().to(means.device)
    max_scale = log_scales.data.exp().max(-1).values
    hot = grad >= cfg.grad_threshold
    room = max(cfg.max_gaussians - n, 0)
    small = max_scale <= cfg.percent_dense * extent
    if int(hot.sum() + (hot & ~small).sum()) > room:  # over the cap: the largest gradients first
        order = torch.argsort(torch.where(hot, grad, torch.full_like(grad, -1.0)), descending=True)
        cost = torch.where(small, 1, 2)[order].cumsum(0)  # a clone adds one Gaussian, a split two (minus one)
        chosen = torch.zeros_like(hot)
        chosen[order[cost <= room]] = True
        hot &= chosen
    clone, split = hot & small, hot & ~small
    ci, si = clone.nonzero().squeeze(1), split.nonzero().squeeze(1)
    new = {k: torch.cat([v.data[ci], v.data[si].repeat_interleave(2, 0)]) for k, v in rows.items()}
    if len(si):  # children: samples of the parent, scales / 1.6
        std = log_scales.data[si].exp().repeat_interleave(2, 0)
        rot = quat_to_rotmat(quats.data[si]).repeat_interleave(2, 0)
        noise = torch.randn(std.shape, generator=generator, device=std.device if generator is None else "cpu")
        offset = (rot @ (noise.to(std) * std)[..., None]).squeeze(-1)
        new["means"][len(ci):] = means.data[si].repeat_interleave(2, 0) + offset
        new["log_scales"][len(ci):] = log_scales.data[si].repeat_interleave(2, 0) - math.log(1.6)
    keep = (~split).nonzero().squeeze(1)
    apply_rows(rows, keep, new, optimizer)
    # prune (children included: they inherit their parent's opacity)
    opac = torch.sigmoid(rows["opacity_logits"].data)
    drop = opac < cfg.min_opacity
    if screen_prune:  # 3DGS: the size criteria only after the first opacity reset
        if cfg.max_world_scale is not None:
            drop |= rows["log_scales"].data.exp().max(-1).values > cfg.max_world_scale * extent
        if cfg.max_screen_radius is not None:
            n_new = len(opac) - len(keep)
            radius = torch.cat([stats.max_radius.to(opac)[keep], torch.zeros(n_new, device=opac.device)])
            drop |= radius > cfg.max_screen_radius
    if drop.all():  # never prune to nothing
        drop[torch.argmax(opac)] = False
    n_now = len(drop)
    if drop.any():
        apply_rows(rows, (~drop).nonzero().squeeze(1), {k: v.data[:0] for k, v in rows.items()}, optimizer)
    stats.reset(rows["means"].shape[0], means.device)
    n_drop = int(drop.sum())
    return {"cloned": len(ci), "split": len(si), "pruned": n_drop, "before": n, "after": n_now - n_drop}
