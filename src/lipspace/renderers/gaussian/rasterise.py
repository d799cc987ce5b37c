"""Tile rasteriser of projected 2-D Gaussians in pure PyTorch (3DGS's forward pass; the per-pixel part has a
hand-written backward, autograd does the rest), and a dense reference without tiles for tests.

Per camera the image is cut into ``tile`` x ``tile`` tiles (16, as 3DGS). Each Gaussian is binned to the tiles its
box touches: the axis-aligned box of the ellipse on which its alpha falls to 1/255, i.e. Mahalanobis radius
sqrt(2 ln(255 opacity)) (at most 3.33 sigma; 3DGS takes a 3-sigma square, which can drop pixels where alpha is
still above 1/255, so here tiling changes nothing: the tiled image equals the dense reference). The (tile,
Gaussian) pairs are sorted by tile, then front to back by camera depth. Tiles are processed in groups of similar
Gaussian counts (a padded gather of each tile's Gaussians, [tiles, K, tile^2] tensors; padding is a dummy Gaussian
of zero opacity). Per pixel: alpha = min(0.99, opacity exp(-0.5 d^T Sigma^-1 d)), zero below 1/255 (skipped),
front-to-back transmittance T_k = prod_{j<k} (1 - alpha_j) (a running product), colour = sum_k alpha_k T_k c_k +
T_final bg, alpha map 1 - T_final, depth map sum_k alpha_k T_k z_k (not normalised by alpha). No early stop at
T < 1e-4 (3DGS's): the result is the exact composite of every splat.

The exponent is separable over a tile's rows and columns (d = (dx_c, dy_r)): -0.5 (A dx^2 + C dy^2) - B dx dy +
ln(opacity) is formed from [K, tile] row and column terms with one broadcast add and one addcmul, so the
per-pixel work is a few elementwise passes, the running product and one batched matmul; the backward is written
by hand (:class:`_CompositeTiles`). Speed (benchmarks/bench_gaussian_raster.py, 128x128, one CPU thread
of a loaded 2-core machine, projection + rasterisation, forward + backward): 5k Gaussians ~170 ms, 10k ~235 ms.
"""

from __future__ import annotations

import math

import torch

from lipspace.renderers.gaussian.projection import conics

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
PAD_LOG_OPACITY = -1.0e4  # the dummy Gaussian of padded slots: alpha exp(-1e4) = 0
GROUP_ELEMENTS = 1 << 22  # at most this many (pixel, Gaussian) elements per group of tiles
GROUP_FILL = 0.7  # a tile joins a group while its count is at least this share of the group's largest


def _loop_ok(x: torch.Tensor) -> bool:
    """Running products / sums along K as a Python loop over [B,P] slices: on CPU measured 6x faster than
    torch.cumprod / cumsum along the strided K dim (3.9 vs 24.7 ms at [35,438,256], 1 thread), and the loop gives
    the exclusive forms directly (no division, no subtraction pass). Native ops on GPU or for small slices."""
    b, k, p = x.shape
    return not x.is_cuda and b * p >= 2048 and k >= 2


def _transmittance(one_minus: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exclusive T_k = prod_{j<k} (1 - alpha_j) [B,K,P] and the final transmittance [B,P]."""
    if not _loop_ok(one_minus):
        incl = torch.cumprod(one_minus, dim=1)
        return incl / one_minus, incl[:, -1]  # 1 - alpha >= 0.01: the division is exact to rounding
    t = torch.empty_like(one_minus)
    t[:, 0] = 1.0
    for i in range(1, one_minus.shape[1]):
        torch.mul(t[:, i - 1], one_minus[:, i - 1], out=t[:, i])
    return t, t[:, -1] * one_minus[:, -1]


def _after(g: torch.Tensor, weights: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
    """S_k = sum_{m>k} g_m w_m + tail [B,K,P] (tail [B,P])."""
    if not _loop_ok(g):
        c = torch.cumsum(g * weights, dim=1)
        return (c[:, -1] + tail)[:, None, :] - c
    out = torch.empty_like(g)
    out[:, -1] = tail
    for i in range(g.shape[1] - 2, -1, -1):
        torch.addcmul(out[:, i + 1], g[:, i + 1], weights[:, i + 1], out=out[:, i])
    return out


class _CompositeTiles(torch.autograd.Function):
    """Alpha and front-to-back compositing of a group of B tiles with K (padded) Gaussians each, forward and a
    hand-written backward (fewer full-size passes than autograd's; the [B,K,P] tensors dominate the cost).

    Inputs, per (tile, Gaussian, row or column of the tile): ``row`` = ln(opacity) - 0.5 C dy_r^2, ``col`` =
    -0.5 A dx_c^2, ``bdy`` = -B dy_r, ``dx`` [B,K,t]; ``feats`` [B,K,F] (colour and depth). The exponent at pixel
    (r, c) is row_r + col_c + bdy_r dx_c. Returns the composited features [B,P,F] (P = t^2, row-major) and the final
    transmittance [B,P].

    Backward: with g_k = dL/dw_k (w_k = alpha_k T_k), dL/dalpha_k = g_k T_k - (sum_{m>k} g_m w_m + dL/dT_fin T_fin)
    / (1 - alpha_k); through alpha = min(0.99, exp(power)) (zero below 1/255): dL/dpower = dL/dalpha alpha where
    alpha < 0.99, else 0; the separable exponent's gradients are row / column sums and two small batched matmuls."""

    @staticmethod
    def forward(ctx, row, col, bdy, dx, feats):
        b, k, t = row.shape
        power = torch.add(row[..., :, None], col[..., None, :]).addcmul_(bdy[..., :, None], dx[..., None, :])
        # exp of very negative numbers (underflow, denormals) takes a slow path, ~30x slower on x86: clamp first
        # (exp(-30) is far below 1/255, so nothing changes)
        alpha = torch.threshold(power.clamp_(min=-30.0).exp_(), ALPHA_MIN, 0.0).clamp_(max=ALPHA_MAX).view(b, k, t * t)
        one_minus = torch.rsub(alpha, 1.0)
        t_excl, t_last = _transmittance(one_minus)
        weights = alpha * t_excl
        out = torch.bmm(weights.transpose(1, 2), feats)
        ctx.save_for_backward(bdy, dx, feats, alpha, one_minus, t_excl, weights, t_last)
        return out, t_last

    @staticmethod
    def backward(ctx, grad_out, grad_t):
        bdy, dx, feats, alpha, one_minus, t_excl, weights, t_last = ctx.saved_tensors
        b, k, t = bdy.shape
        grad_feats = torch.bmm(weights, grad_out)
        g = torch.bmm(feats, grad_out.transpose(1, 2))  # dL/dw [B,K,P]
        after = _after(g, weights, grad_t * t_last)  # sum_{m>k} g_m w_m + dL/dT_fin T_fin
        grad_alpha = g.mul_(t_excl).addcdiv_(after, one_minus, value=-1.0)
        gp = grad_alpha.mul_(torch.where(alpha < ALPHA_MAX, alpha, 0.0)).view(b * k, t, t)  # dL/dpower [.., r, c]
        ones = torch.ones_like(dx)
        by_row = torch.bmm(gp, torch.stack([ones, dx], -1).view(b * k, t, 2)).view(b, k, t, 2)
        by_col = torch.bmm(gp.transpose(1, 2), torch.stack([ones, bdy], -1).view(b * k, t, 2)).view(b, k, t, 2)
        return by_row[..., 0], by_col[..., 0], by_row[..., 1], by_col[..., 1], grad_feats


def _per_camera(x: torch.Tensor, f: int, n: int, trailing: tuple) -> torch.Tensor:
    """[N, ...] or [F, N, ...] -> [F, N, ...]."""
    return x.expand(f, n, *trailing) if x.dim() == 1 + len(trailing) else x


def _binning(means2d, cov2d, opac, visible, hw, tile):
    """(tile, Gaussian) pairs sorted by tile then depth rank: (sorted Gaussian ids, sorted tile ids) over the
    flattened F*N Gaussians and F*T tiles; and the tile grid (nty, ntx)."""
    f, n = means2d.shape[:2]
    h, w = hw
    nty, ntx = math.ceil(h / tile), math.ceil(w / tile)
    r2 = 2.0 * torch.log((255.0 * opac).clamp_min(1e-30))
    keep = visible & (r2 > 0)
    r = torch.sqrt(r2.clamp_min(0)) * 1.0001 + 1e-3  # a hair wider: float rounding never drops a pixel
    ext = r[..., None] * torch.sqrt(torch.stack([cov2d[..., 0, 0], cov2d[..., 1, 1]], -1).clamp_min(0))
    keep = keep & torch.isfinite(means2d).all(-1) & torch.isfinite(ext).all(-1)
    lo = torch.nan_to_num(torch.floor((means2d - ext - 0.5) / tile), nan=1e7).clamp(-1e7, 1e7)
    hi = torch.nan_to_num(torch.floor((means2d + ext - 0.5) / tile), nan=-1e7).clamp(-1e7, 1e7)
    lim = torch.tensor([ntx - 1, nty - 1], dtype=lo.dtype, device=lo.device)
    lo = torch.maximum(lo, torch.zeros_like(lo)).long()
    hi = torch.minimum(hi, lim).long()
    span = (hi - lo + 1).clamp_min(0)
    counts = torch.where(keep, span[..., 0] * span[..., 1], torch.zeros_like(span[..., 0])).reshape(-1)
    total = int(counts.sum())
    gid = torch.repeat_interleave(torch.arange(f * n, device=counts.device), counts)
    local = torch.arange(total, device=counts.device) - (torch.cumsum(counts, 0) - counts)[gid]
    lo, span = lo.reshape(-1, 2), span.reshape(-1, 2)
    tx = lo[gid, 0] + local % span[gid, 0]
    ty = lo[gid, 1] + torch.div(local, span[gid, 0], rounding_mode="floor")
    tile_id = torch.div(gid, n, rounding_mode="floor") * (nty * ntx) + ty * ntx + tx
    return gid, tile_id, (nty, ntx)


def _groups(counts: torch.Tensor, tile_px: int) -> list[tuple[torch.Tensor, int]]:
    """Non-empty tiles in groups of similar Gaussian counts: [(tile ids, K = the group's largest count)]."""
    order = torch.argsort(counts, descending=True)
    c = counts[order].tolist()
    out, s = [], 0
    while s < len(c) and c[s] > 0:
        k, e = c[s], s + 1
        cap = max(1, GROUP_ELEMENTS // (k * tile_px))
        while e < len(c) and c[e] > 0 and c[e] >= GROUP_FILL * k and e - s < cap:
            e += 1
        out.append((order[s:e], k))
        s = e
    return out


def rasterise(means2d: torch.Tensor, cov2d: torch.Tensor, depths: torch.Tensor, colours: torch.Tensor,
              opacities: torch.Tensor, visible: torch.Tensor, hw: tuple[int, int], bg: torch.Tensor | None = None,
              tile: int = 16) -> dict[str, torch.Tensor]:
    """Composite F cameras' projected Gaussians (``projection.Projected``'s means2d [F,N,2], cov2d [F,N,2,2],
    depths [F,N], visible [F,N]) with colours [N,C] or [F,N,C] and opacities in (0, 1] [N] or [F,N] over ``bg``
    [F,h,w,C] (None: black) -> rgb [F,h,w,C], alpha [F,h,w], depth [F,h,w]. Differentiable by autograd in means2d,
    cov2d, depths, colours and opacities (not in bg's role as a constant only: bg gets gradients too)."""
    f, n = means2d.shape[:2]
    h, w = hw
    nc = colours.shape[-1]
    colours = _per_camera(colours, f, n, (nc,))
    opacities = _per_camera(opacities, f, n, ())
    with torch.no_grad():
        gid, tile_id, (nty, ntx) = _binning(means2d.detach(), cov2d.detach(), opacities.detach(), visible, hw, tile)
        n_tiles = f * nty * ntx
        rank = torch.empty(f * n, dtype=torch.long, device=gid.device)
        rank[torch.argsort(depths.detach().reshape(-1), stable=True)] = torch.arange(f * n, device=gid.device)
        order = torch.argsort(tile_id * (f * n) + rank[gid])
        gid, tile_id = gid[order], tile_id[order]
        counts = torch.bincount(tile_id, minlength=n_tiles)
        starts = torch.cumsum(counts, 0) - counts
    tp = tile * tile
    dtype = means2d.dtype
    # per-Gaussian rows, plus the dummy padding row at index F*N
    conic = conics(cov2d).reshape(-1, 3)
    pad = lambda x, v: torch.cat([x, x.new_full((1, *x.shape[1:]), v)])  # noqa: E731
    mean_rows = pad(means2d.reshape(-1, 2), 0.0)
    conic_rows = pad(conic, 0.0)
    logop_rows = pad(torch.log(opacities.reshape(-1).clamp_min(1e-30)), PAD_LOG_OPACITY)
    feat_rows = pad(torch.cat([colours.reshape(-1, nc), depths.reshape(-1, 1)], -1), 0.0)
    buf = means2d.new_zeros(n_tiles, tp, nc + 1)
    trans = means2d.new_ones(n_tiles, tp)
    offs = torch.arange(tile, dtype=dtype, device=means2d.device) + 0.5
    for tiles, k in _groups(counts, tp):
        with torch.no_grad():
            slot = torch.arange(k, device=gid.device)
            pos = (starts[tiles][:, None] + slot).clamp(max=max(len(gid) - 1, 0))
            g = torch.where(slot < counts[tiles][:, None], gid[pos], f * n)  # [B,K]
            t_local = tiles % (nty * ntx)
            ox = (t_local % ntx).to(dtype) * tile
            oy = torch.div(t_local, ntx, rounding_mode="floor").to(dtype) * tile
        m = mean_rows[g]  # [B,K,2]
        a, b, c = conic_rows[g].unbind(-1)
        dx = (ox[:, None, None] + offs) - m[..., 0:1]  # [B,K,tile] columns
        dy = (oy[:, None, None] + offs) - m[..., 1:2]  # rows
        row = logop_rows[g][..., None] - 0.5 * c[..., None] * dy * dy
        col = -0.5 * a[..., None] * dx * dx
        out, t_last = _CompositeTiles.apply(row, col, -b[..., None] * dy, dx, feat_rows[g])
        buf = buf.index_copy(0, tiles, out)
        trans = trans.index_copy(0, tiles, t_last)
    img = buf.reshape(f, nty, ntx, tile, tile, nc + 1).permute(0, 1, 3, 2, 4, 5).reshape(f, nty * tile, ntx * tile,
                                                                                          nc + 1)[:, :h, :w]
    t_final = trans.reshape(f, nty, ntx, tile, tile).permute(0, 1, 3, 2, 4).reshape(f, nty * tile, ntx * tile)
    t_final = t_final[:, :h, :w]
    rgb = img[..., :nc]
    if bg is not None:
        rgb = rgb + t_final[..., None] * bg
    return {"rgb": rgb, "alpha": 1.0 - t_final, "depth": img[..., nc]}


def rasterise_dense(means2d, cov2d, depths, colours, opacities, visible, hw, bg=None) -> dict[str, torch.Tensor]:
    """Reference: every Gaussian at every pixel, no tiles, composited front to back by a loop-free cumprod over all
    Gaussians sorted by depth. Same arguments and outputs as :func:`rasterise`; memory [F, N, h w]."""
    f, n = means2d.shape[:2]
    h, w = hw
    nc = colours.shape[-1]
    colours = _per_camera(colours, f, n, (nc,))
    opacities = _per_camera(opacities, f, n, ())
    ys, xs = torch.meshgrid(torch.arange(h, dtype=means2d.dtype), torch.arange(w, dtype=means2d.dtype),
                            indexing="ij")
    px = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1) + 0.5  # [P,2]
    order = torch.argsort(depths.detach(), dim=1, stable=True)
    take = lambda x: torch.gather(x, 1, order.view(f, n, *([1] * (x.dim() - 2))).expand_as(x))  # noqa: E731
    m, con, op = take(means2d), take(conics(cov2d)), take(opacities)
    col, z, vis = take(colours), take(depths), take(visible)
    d = px[None, None] - m[:, :, None]  # [F,N,P,2]
    dx, dy = d[..., 0], d[..., 1]
    power = -0.5 * (con[..., 0:1] * dx ** 2 + con[..., 2:3] * dy ** 2) - con[..., 1:2] * dx * dy
    raw = op[..., None] * torch.exp(power)
    alpha = torch.where((raw > ALPHA_MIN) & vis[..., None], raw.clamp(max=ALPHA_MAX), torch.zeros_like(raw))
    t_incl = torch.cumprod(1 - alpha, dim=1)
    weights = alpha * (t_incl / (1 - alpha))  # [F,N,P]
    rgb = torch.einsum("fnp,fnc->fpc", weights, col).reshape(f, h, w, nc)
    t_final = t_incl[:, -1].reshape(f, h, w)
    if bg is not None:
        rgb = rgb + t_final[..., None] * bg
    return {"rgb": rgb, "alpha": 1 - t_final, "depth": torch.einsum("fnp,fn->fp", weights, z).reshape(f, h, w)}
