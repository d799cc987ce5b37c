"""Tri-plane hash renderer (ER-NeRF / SyncTalk style): one ray-marching pass through a TriPlaneField, samples in
empty space skipped by an occupancy grid.

Rays march ``n_samples`` stratified steps between near and far (plus the background sample at far, as the MLP
renderer does); samples outside the scene box or in cells the occupancy grid marks empty are not evaluated
(sigma = 0 there), so the field runs only on the kept samples, flattened. The scene box is the cube around the
dataset's bounds sphere (``setup_scene``, called by the train task; stored in the checkpoint). The occupancy grid is
refreshed every ``occupancy.update_every`` steps through the system's step hook (``on_train_step``), with the
densities under the conditions of the latest training batch (max over its frames).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from lipspace.utils.errors import LipspaceError
from lipspace.renderers.base import Outputs, VolumeRenderer
from lipspace.renderers.occupancy import OccupancyGrid
from lipspace.renderers.semantic import composite_logits, field_extras, semantic_background
from lipspace.renderers.volume import composite_real, stratified_samples


class TriPlaneRenderer(VolumeRenderer):
    """One ray-marching pass through a tri-plane hash field; own learning rate for the hash tables, occupancy
    refresh in the step hook, scene box from the dataset's bounds; region attention; the implicit parsing branch
    (a field with ``semantic_classes`` > 0: ``semantic`` [R, K] logits in the outputs, as NeRFRenderer)."""

    supports_regions: ClassVar[bool] = True
    supports_semantic: ClassVar[bool] = True

    def __init__(self, field: Callable[..., nn.Module], cond_dim: int, n_samples: int = 64, perturb: bool = True,
                 eval_chunk_rays: int = 4096, occupancy: dict | None = None, lr_grid: float | None = None,
                 regions=None):
        """``occupancy``: {resolution, update_every, decay, threshold, explore_fraction} or None/``enabled:
        false`` to evaluate every sample; ``lr_grid``: learning rate of the hash tables (SyncTalk: 1e-2 with
        1e-3 for the MLPs), used by ``param_groups``; None keeps the optimiser's single rate."""
        super().__init__(cond_dim)
        if n_samples < 2:
            raise LipspaceError(f"TriPlaneRenderer needs n_samples >= 2, got {n_samples}")
        self.n_samples, self.perturb = n_samples, perturb
        self.eval_chunk_rays, self.lr_grid = eval_chunk_rays, lr_grid
        self.declare_regions(regions)  # region attention gated by the point's tri-plane features (SyncTalk)
        self.field = field(cond_dim=cond_dim, regions=self.regions) if self.regions else field(cond_dim=cond_dim)
        self.semantic_classes = int(self.field.semantic_classes)
        self.semantic_bg = semantic_background(self.semantic_classes)  # the background sample's logits
        occ = dict(occupancy or {})
        self.occupancy_enabled = bool(occ.pop("enabled", occupancy is not None))
        self.update_every = int(occ.pop("update_every", 16))
        self._occ_kwargs = occ
        self.grid: OccupancyGrid | None = None
        self.register_buffer("scene_center", torch.zeros(3))
        self.register_buffer("scene_half", torch.zeros(()))
        self._recent_cond: torch.Tensor | None = None

    # -- scene box ------------------------------------------------------------------------------------------
    def setup_scene(self, clip) -> None:
        """The scene box around the dataset's bounds sphere (``clip.bounds``)."""
        self.set_scene(*clip.bounds)

    def set_scene(self, center, radius: float) -> None:
        """The cube around the bounds sphere (center [3], radius) in head space; builds the occupancy grid."""
        self.scene_center.copy_(torch.as_tensor(center, dtype=torch.float32).reshape(3))
        self.scene_half.fill_(float(radius))
        if self.occupancy_enabled and self.grid is None:
            self.grid = OccupancyGrid(self.scene_center, float(radius), **self._occ_kwargs).to(self.scene_center.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint written after set_scene carries the grid: build it before loading into it
        if self.occupancy_enabled and self.grid is None and f"{prefix}grid.values" in state_dict:
            self.set_scene(state_dict[f"{prefix}scene_center"], float(state_dict[f"{prefix}scene_half"]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def normalise(self, pts: torch.Tensor) -> torch.Tensor:
        if float(self.scene_half) <= 0:
            raise LipspaceError("TriPlaneRenderer: the scene box is not set (setup_scene(clip), or set_scene(center, "
                                "radius) from the dataset bounds; the train task does this)")
        return (pts - self.scene_center) / (2 * self.scene_half) + 0.5

    def field_affine(self) -> tuple[torch.Tensor, float]:
        """The field reads points in the scene box's [0, 1]^3 (:meth:`normalise`)."""
        scale = 1.0 / (2 * float(self.scene_half))
        return 0.5 - self.scene_center * scale, scale

    # -- optimisation ---------------------------------------------------------------------------------------
    def param_groups(self, lr: float) -> list[dict]:
        """Hash tables at ``lr_grid`` (when set), everything else at ``lr``."""
        tables = [p for n, p in self.named_parameters() if n.endswith("table")]
        rest = [p for n, p in self.named_parameters() if not n.endswith("table")]
        if self.lr_grid is None:
            return [{"params": tables + rest}]
        return [{"params": tables, "lr": self.lr_grid}, {"params": rest, "lr": lr}]

    def on_train_step(self, step: int) -> None:
        """Occupancy refresh every ``update_every`` steps (the system's step hook)."""
        if self.grid is None or not self.training or step % self.update_every or self._recent_cond is None:
            return
        # the batch's frames (one condition per frame); an unconditioned field needs none
        conds = torch.unique(self._recent_cond, dim=0)[:8] if self.cond_dim else None
        field = self.field
        g = torch.Generator(device=self.scene_center.device).manual_seed(int(step))
        was = field.training
        field.eval()
        self.grid.update(lambda pts: field.max_density(self.normalise(pts), conds), generator=g)
        field.train(was)

    # -- rendering ------------------------------------------------------------------------------------------
    def forward(self, rays_o, rays_d, near, far, cond, bg) -> Outputs:
        """rays_o/rays_d [R,3] (unit d), near/far [R], cond [R,C], bg [R,3] -> rgb [R,3], depth, acc [R] and
        kept_fraction (share of samples evaluated)."""
        if cond is not None and cond.shape[-1] != self.cond_dim:
            raise LipspaceError(f"TriPlaneRenderer built for cond_dim={self.cond_dim}, got {tuple(cond.shape)}")
        n_rays = rays_o.shape[0]
        t_vals = stratified_samples(near, far, self.n_samples + 1, self.perturb and self.training)
        pts = rays_o[:, None, :] + rays_d[:, None, :] * t_vals[:, :-1, None]  # [R, S, 3]
        x01 = self.normalise(pts)
        keep = ((x01 >= 0) & (x01 <= 1)).all(-1)
        if self.grid is not None:
            keep &= self.grid.occupied(pts)
        # kept samples by flat index (index_select / index_copy: their backward passes are gathers, measured
        # faster than advanced indexing's index_put on CPU)
        flat = torch.nonzero(keep.reshape(-1)).squeeze(1)
        ray_idx = torch.div(flat, self.n_samples, rounding_mode="floor")
        n_all = n_rays * self.n_samples
        rgb = pts.new_zeros(n_all, 3)
        sigma = pts.new_zeros(n_all)
        att = pts.new_zeros(n_all, len(self.regions)) if self.regions else None
        logits = pts.new_zeros(n_all, self.semantic_classes) if self.semantic_classes else None
        if len(flat):
            rgb_k, sigma_k, *extras = self.field(x01.reshape(-1, 3).index_select(0, flat), rays_d, cond, ray_idx)
            att_k, logits_k = field_extras(extras, bool(self.regions), self.semantic_classes)
            rgb = rgb.index_copy(0, flat, rgb_k)
            sigma = sigma.index_copy(0, flat, sigma_k)
            if att is not None:
                att = att.index_copy(0, flat, att_k)
            if logits is not None:
                logits = logits.index_copy(0, flat, logits_k)
        rgb, sigma = rgb.view(n_rays, self.n_samples, 3), sigma.view(n_rays, self.n_samples)
        if att is not None:
            att = att.view(n_rays, self.n_samples, -1)
        if self.training and self.grid is not None:  # reduced to distinct rows only when the grid updates
            self._recent_cond = cond.detach() if cond is not None else rays_o.new_zeros(1, 0)
        out = composite_real(rgb, sigma, t_vals, bg)
        weights = out.pop("weights")
        if att is not None:  # each region's gate magnitude rendered along the ray (SyncTalk's masking loss)
            out["region_att"] = torch.einsum("rs,rsk->rk", weights[:, :-1], att)
        if logits is not None:  # skipped samples have weight 0, so their zero logits add nothing (SSP-NeRF)
            out["semantic"] = composite_logits(weights, logits.view(n_rays, self.n_samples, -1), self.semantic_bg)
        out["kept_fraction"] = keep.float().mean().expand(n_rays)
        return out
