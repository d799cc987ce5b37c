"""Ray sampling and volume compositing: stratified and hierarchical samples, AD-NeRF alpha compositing."""

from __future__ import annotations

import torch


def stratified_samples(
    near: torch.Tensor, far: torch.Tensor, n_samples: int, perturb: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n_samples`` sorted depths per ray in [near, far]; jittered inside their strata when ``perturb``.

    As in NeRF / AD-NeRF the last sample stays exactly at ``far`` even when perturbed: it is the one that
    carries the background colour in :func:`composite`.
    """
    if n_samples < 2:
        raise ValueError(f"stratified_samples needs n_samples >= 2 (the last one is the background), got {n_samples}")
    steps = torch.linspace(0.0, 1.0, n_samples, device=near.device, dtype=near.dtype)
    span = (far - near)[:, None]
    if not perturb:
        return near[:, None] + span * steps
    # Jitter the fraction within [mid_{i-1}, mid_i] (first/last stratum are half-width), then map to depth.
    mids = 0.5 * (steps[1:] + steps[:-1])
    lower = torch.cat([steps[:1], mids])
    upper = torch.cat([mids, steps[-1:]])
    u = torch.rand((near.shape[0], n_samples), device=near.device, dtype=near.dtype, generator=generator)
    u[:, -1] = 1.0
    return near[:, None] + span * (lower + (upper - lower) * u)


@torch.no_grad()
def sample_pdf(
    bins: torch.Tensor,
    weights: torch.Tensor,
    n_samples: int,
    deterministic: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Inverse-CDF samples [R, n] from the piecewise-constant pdf ``weights`` [R, S] over ``bins`` [R, S+1].

    Output is sorted along each ray and detached (NeRF's hierarchical sampling). ``deterministic`` uses
    bin-centred quantiles (i + 0.5) / n instead of NeRF's linspace(0, 1), whose end points always land on
    the outer bin edges whatever the weights are.
    """
    if bins.shape[-1] != weights.shape[-1] + 1:
        raise ValueError(
            f"sample_pdf needs bins [R, S+1] for weights [R, S], got {tuple(bins.shape)}, {tuple(weights.shape)}"
        )
    weights = weights.detach() + 1e-5  # NeRF's guard: an all-zero ray still gets a uniform pdf, never NaN
    cdf = torch.cumsum(weights, dim=-1)
    cdf = cdf / cdf[:, -1:]
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], dim=-1)  # [R, S+1], aligned with bins
    shape = (cdf.shape[0], n_samples)
    if deterministic:
        u = (torch.arange(n_samples, device=cdf.device, dtype=cdf.dtype) + 0.5) / n_samples
        u = u.expand(shape).contiguous()
    else:
        # Sorting u (not the samples) keeps the output sorted: the inverse CDF is monotone.
        u = torch.rand(shape, device=cdf.device, dtype=cdf.dtype, generator=generator).sort(dim=-1).values
    idx = torch.searchsorted(cdf, u, right=True)
    below = (idx - 1).clamp_(min=0)
    above = idx.clamp_(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    bin_lo, bin_hi = bins.gather(-1, below), bins.gather(-1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)


def composite_real(
    rgb: torch.Tensor, sigma: torch.Tensor, t_vals: torch.Tensor, bg: torch.Tensor
) -> dict[str, torch.Tensor]:
    """:func:`composite` given field outputs for the S-1 real samples only (the renderer's fast path).

    The background sample's field value never reaches the output (colour replaced, alpha forced to 1), so
    the renderer does not evaluate the field there at all.
    """
    deltas = t_vals[:, 1:] - t_vals[:, :-1]  # [R, S-1]; unit ray directions make these metric distances
    tau = sigma * deltas  # optical thickness of each real interval
    # Transmittance as exp(-cumsum) rather than NeRF's cumprod(1 - alpha): same value, and cumsum's
    # backward is a reversed cumsum where cumprod's needs a division-safe special path.
    cum = torch.cumsum(tau, dim=-1)
    trans = torch.exp(-torch.cat([torch.zeros_like(cum[:, :1]), cum[:, :-1]], dim=-1))
    w_real = trans * -torch.expm1(-tau)  # T_i * alpha_i, alpha computed without 1 - exp cancellation
    w_bg = torch.exp(-cum[:, -1])  # light that crosses every real sample lands on the background
    out_rgb = torch.einsum("rs,rsc->rc", w_real, rgb) + w_bg[:, None] * bg
    depth = (w_real * t_vals[:, :-1]).sum(-1) + w_bg * t_vals[:, -1]
    return {
        "rgb": out_rgb,
        "depth": depth,
        "acc": w_real.sum(-1),
        "weights": torch.cat([w_real, w_bg[:, None]], dim=-1),
    }


def composite(
    rgb: torch.Tensor, sigma: torch.Tensor, t_vals: torch.Tensor, bg: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Alpha-composite S samples per ray, AD-NeRF rule: the last sample is the background (alpha 1, colour bg).

    Returns rgb [R,3], depth [R] (expected depth, the background counted at the last sample's depth),
    acc [R] (weight on the real samples), weights [R,S] (last entry = background weight).
    A ray with near == far has zero-length intervals and returns exactly bg.
    """
    return composite_real(rgb[:, :-1], sigma[:, :-1], t_vals, bg)
