"""Region attention of a field (ER-NeRF / SyncTalk): per-point channel gates on declared slices of the condition.

A conditioner may declare *regions* of its condition c, e.g. SyncTalk's ``lip`` (audio code) and ``exp`` (upper-face
expression code). For each region r a small MLP of the point's positional encoding gives a channel-wise gate
a_r(x) = sigmoid(MLP(PE(x))) in (0, 1)^{|r|}, and the field reads c_r * a_r(x) in place of c_r (ER-NeRF's
``enc_a * aud_ch_att(enc_x)``, SyncTalk's ``enc_e * eye_att(enc_x)``). The region columns therefore become a
per-*sample* term; the rest of c keeps the per-ray projection. The per-point gate magnitude (mean over the
region's channels) is returned so the renderer can composite it along the ray for the masking loss.

The renderer only sees ``(name, start, stop)`` triples: which parsing classes a region belongs to is the
system's business (its loss), not the field's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

RegionSpec = tuple[str, int, int]


def normalise_regions(regions, cond_dim: int) -> tuple[RegionSpec, ...]:
    """``{name: slice | (start, stop)}`` or ``[(name, start, stop)]`` -> sorted, checked (name, start, stop)."""
    if isinstance(regions, dict):
        items = [(name, v if isinstance(v, slice) else slice(*v)) for name, v in regions.items()]
    else:
        items = [(r[0], slice(r[1], r[2])) for r in regions]
    out = []
    for name, sl in items:
        start, stop = int(sl.start or 0), int(sl.stop)
        if not 0 <= start < stop <= cond_dim:
            raise ValueError(f"region '{name}': columns [{start}, {stop}) are not a non-empty part of the "
                             f"condition's {cond_dim} columns")
        out.append((str(name), start, stop))
    out.sort(key=lambda r: r[1])
    for a, b in zip(out[:-1], out[1:]):
        if b[1] < a[2]:
            raise ValueError(f"regions '{a[0]}' and '{b[0]}' overlap in the condition's columns")
    if not out:
        raise ValueError("regions: at least one region is needed (use regions=None for none)")
    return tuple(out)


class RegionAttention(nn.Module):
    """Gates for the regions' columns of c: PE(x) -> Linear(pe_dim, hidden) -> ReLU -> Linear(hidden, D) -> sigmoid,
    D = total region width (one shared hidden layer, one output head per region's channels)."""

    def __init__(self, regions: Sequence[RegionSpec], cond_dim: int, pe_dim: int, hidden: int = 32):
        super().__init__()
        self.regions = normalise_regions(regions, cond_dim)
        cols = torch.cat([torch.arange(s, e) for _, s, e in self.regions])
        self.register_buffer("cols", cols, persistent=False)
        keep = torch.ones(cond_dim)
        keep[cols] = 0.0
        self.register_buffer("keep", keep, persistent=False)
        self.has_ray_part = bool(keep.any())
        self.hidden_layer = nn.Linear(pe_dim, hidden)
        self.out_layer = nn.Linear(hidden, len(cols))
        # Region widths and offsets inside the gate vector, for per-region magnitudes.
        self.widths = [e - s for _, s, e in self.regions]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _, _ in self.regions)

    def ray_part(self, c: torch.Tensor) -> torch.Tensor:
        """c with the region columns zeroed: what the per-ray projection still reads."""
        return c * self.keep

    def gates(self, ops, pe) -> torch.Tensor:
        """Gate values in the ops backend's activation layout ([N, D] torch, [D, N] oneDNN)."""
        hid = ops.linear(pe, self.hidden_layer.weight, self.hidden_layer.bias, relu=True)
        return torch.sigmoid(ops.linear(hid, self.out_layer.weight, self.out_layer.bias))

    def modulated(self, ops, gates: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """c_r * a_r(x) for every sample (backend layout, D features)."""
        return ops.mul_ray(gates, c[:, self.cols])

    def magnitudes(self, ops, gates: torch.Tensor) -> torch.Tensor:
        """[N, n_regions]: mean gate value of each region's channels at every sample."""
        rows = ops.rows(gates)
        return torch.stack([part.mean(-1) for part in rows.split(self.widths, dim=-1)], dim=-1)
