"""The compiled path of the hash encoding (``lipspace.renderers.hashgrid``, ``compile=True`` / ``"auto"``): the
encoding's index arithmetic laid out with the point index innermost, so that torch.compile vectorises it over
points, fused with the table gather and the d-linear interpolation into one loop (forward bit-identical to the
eager path), and the backward parts that recompute rows and weights and hand back the table rows with their
gradient contributions instead of storing [P, L, 2^d] of them. Module-level functions of tensors only, compiled
once per process (torch.compile(dynamic=True)) and shared by every grid: a compiled bound method would recompile
per instance and hit dynamo's recompile limit in a sweep.
"""

from __future__ import annotations

import functools

import torch


def _corner_terms(xt: torch.Tensor, res: torch.Tensor, dense: torch.Tensor, mask: torch.Tensor,
                  stride: torch.Tensor, prime: torch.Tensor, offsets: torch.Tensor):
    """Per corner (lists of 2^d) table rows (int32) [G, L, P] and weights [G, L, P] for points xt [G, d, P]: the
    arithmetic of ``HashGrid.indices_and_weights`` (dense vs hashed chosen per level by ``torch.where``), point
    index last.
    res [L] float, dense [L] bool, mask [L] / stride [L, d] / prime [d] / offsets [G, L] int32."""
    res = res[:, None, None]  # [L, 1, 1]
    pos = xt.clamp(0.0, 1.0)[:, None] * res  # [G, L, d, P]
    cell = torch.minimum(pos.floor(), res - 1)
    frac = pos - cell
    c = cell.to(torch.int32)
    dense, mask, stride, prime = dense[:, None, None], mask[:, None, None], stride[:, :, None], prime[:, None]
    lo = torch.where(dense, c * stride, (c * prime) & mask)
    hi = torch.where(dense, (c + 1) * stride, ((c + 1) * prime) & mask)
    dense = dense[..., 0]  # [L, 1]
    idx, w = [lo[:, :, 0], hi[:, :, 0]], [1.0 - frac[:, :, 0], frac[:, :, 0]]
    for i in range(1, xt.shape[1]):  # corner k: bit i of k = upper neighbour along dimension i
        idx = [torch.where(dense, a + b, a ^ b) for b in (lo[:, :, i], hi[:, :, i]) for a in idx]
        w = [a * b for b in (1.0 - frac[:, :, i], frac[:, :, i]) for a in w]
    offsets = offsets[:, :, None]
    return [i + offsets for i in idx], w


def _fused_forward(xt: torch.Tensor, table: torch.Tensor, *consts: torch.Tensor) -> torch.Tensor:
    """xt [G, d, P], table [rows, F] -> features [P, G, L, F]. The corner sum is written out term by term (a
    pointwise kernel): as a ``.sum`` over the corner axis, inductor parallelised that 2^d-long reduction per
    output element (measured 25x slower for the 3-D grid)."""
    rows, w = _corner_terms(xt, *consts)
    out = w[0][..., None] * table[rows[0]]
    for r, wk in zip(rows[1:], w[1:]):
        out = out + wk[..., None] * table[r]
    return out.permute(2, 0, 1, 3)


def _fused_backward_parts(xt: torch.Tensor, grad: torch.Tensor, *consts: torch.Tensor):
    """Rows [G L 2^d P] (int32) and their gradient contributions [G L 2^d P, F] for grad [P, G, L, F]."""
    rows, w = _corner_terms(xt, *consts)
    g = grad.permute(1, 2, 0, 3)  # [G, L, P, F]
    contrib = torch.stack([wk[..., None] * g for wk in w], 2)
    return torch.stack(rows, 2).reshape(-1), contrib.reshape(-1, grad.shape[-1])


@functools.cache
def compiled_functions() -> tuple:
    """(forward, backward parts) through torch.compile, built on first use (compilation itself happens at the
    first call, per input kind)."""
    return tuple(torch.compile(f, dynamic=True) for f in (_fused_forward, _fused_backward_parts))
