"""Occupancy grid (Instant-NGP / ER-NeRF): a coarse voxel grid over the scene box holding a running estimate of the
field's density, thresholded into a bitfield so that samples in empty space are never sent to the field.

Update rule (``update``), every ``update_every`` training steps: the density of the field is evaluated at one
jittered point per selected cell, for each of the few conditions given (a conditional field's density depends on
the condition, e.g. an open mouth; the maximum over them is kept); a cell's value becomes max(decay * value,
density). The first update evaluates every cell; later ones every currently occupied cell plus a random
``explore_fraction`` of all cells, so that occupied space is always re-measured and empty space is re-checked.
Cells not evaluated keep their value (they are never decayed unseen). The bitfield is value >= min(threshold,
mean value) (a spatially uniform density keeps every cell), dilated by one cell (max-pool 3^3), so a surface crossing
a cell corner is not lost. Before the first update every cell counts as occupied.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lipspace.utils.errors import LipspaceError


class OccupancyGrid(nn.Module):
    """``resolution``^3 cells over the box [center - half, center + half]^3 (head space)."""

    def __init__(self, center, half_size: float, resolution: int = 48, decay: float = 0.95, threshold: float = 0.01,
                 explore_fraction: float = 0.125, dilate: bool = True):
        super().__init__()
        if resolution < 2 or half_size <= 0 or not 0 < decay <= 1:
            raise LipspaceError(f"occupancy grid: need resolution >= 2, half_size > 0, decay in (0, 1]; got "
                                f"{resolution}, {half_size}, {decay}")
        self.resolution, self.decay, self.threshold = int(resolution), float(decay), float(threshold)
        self.explore_fraction, self.dilate = float(explore_fraction), bool(dilate)
        self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32).reshape(3))
        self.register_buffer("half_size", torch.tensor(float(half_size)))
        self.register_buffer("values", torch.full((resolution,) * 3, float("inf")))
        self.register_buffer("mask", torch.ones((resolution,) * 3, dtype=torch.bool))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))

    def cell_of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat cell index [...] (int64) of points x [..., 3] and whether they lie inside the box."""
        u = (x - self.center) / (2 * self.half_size) + 0.5  # [0, 1] inside
        inside = ((u >= 0) & (u <= 1)).all(-1)
        ijk = (u * self.resolution).long().clamp_(0, self.resolution - 1)
        r = self.resolution
        return (ijk[..., 0] * r + ijk[..., 1]) * r + ijk[..., 2], inside

    def occupied(self, x: torch.Tensor) -> torch.Tensor:
        """[...] bool: x [..., 3] lies in an occupied cell (points outside the box: False)."""
        idx, inside = self.cell_of(x)
        return self.mask.reshape(-1)[idx] & inside

    @property
    def occupied_fraction(self) -> float:
        return float(self.mask.float().mean())

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator | None = None,
               chunk: int = 65536) -> None:
        """Re-measure cells with ``density_fn(points [N, 3]) -> sigma [N]`` (already the max over conditions)."""
        r = self.resolution
        n = r ** 3
        flat = self.values.reshape(-1)
        if int(self.n_updates) == 0:
            cells = torch.arange(n, device=flat.device)
        else:
            explore = torch.rand(n, generator=generator, device=flat.device) < self.explore_fraction
            cells = torch.nonzero(self.mask.reshape(-1) | explore).squeeze(1)
        ijk = torch.stack([cells // (r * r), (cells // r) % r, cells % r], -1).float()
        jitter = torch.rand(ijk.shape, generator=generator, device=flat.device)
        pts = ((ijk + jitter) / r - 0.5) * (2 * self.half_size) + self.center
        sigma = torch.cat([density_fn(pts[s:s + chunk]).reshape(-1) for s in range(0, len(pts), chunk)])
        old = flat[cells]
        old = torch.where(torch.isinf(old), torch.zeros_like(old), old)
        flat[cells] = torch.maximum(old * self.decay, sigma.float())
        self.n_updates += 1
        thr = min(self.threshold, float(flat[torch.isfinite(flat)].mean()))
        # >=, not >: a field whose density is still the same everywhere (below the threshold, e.g. early in training
        # or after a uniform drop) has every cell AT the mean; '>' emptied the whole grid, no sample was evaluated
        # again and training stopped ("element 0 of tensors does not require grad": adnerf on the obama clip)
        occ = (self.values >= thr).float()
        if self.dilate:
            occ = F.max_pool3d(occ[None, None], 3, stride=1, padding=1)[0, 0]
        self.mask.copy_(occ > 0)
