"""Linear layers of a field with per-ray terms: oneDNN GEMMs on CPU float32, plain torch everywhere else."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# oneDNN's dense-tensor linear (the op inductor emits for CPU linears). On this project's AMD CPUs MKL's
# sgemm, which torch.mm uses, runs an AVX2 path; oneDNN's AVX-512 kernels measured ~2x faster here.
_linear_pointwise = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


@functools.cache
def _onednn_works() -> bool:
    """Whether oneDNN linear exists in this torch build and matches torch's own result (checked once)."""
    if _linear_pointwise is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        x, w, b, o = (torch.randn(*s, generator=g) for s in ((37, 19), (11, 19), (11,), (37, 11)))
        ok = torch.allclose(_dnn(x, w, b, relu=True), torch.relu(F.linear(x, w, b)), atol=1e-5, rtol=1e-5)
        return ok and torch.allclose(_dnn(x, w, b, add=o), F.linear(x, w, b) + o, atol=1e-5, rtol=1e-5)
    except RuntimeError:
        return False


def onednn_usable(x: torch.Tensor) -> bool:
    """True where the oneDNN path applies: CPU float32 tensors, eager mode, working op."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.compiler.is_compiling() and _onednn_works()


def _dnn(x, w, b=None, relu: bool = False, add: torch.Tensor | None = None) -> torch.Tensor:
    """x @ w.T (+ b)(+ add)(ReLU) on oneDNN, the epilogue fused into the GEMM.

    ``w`` must be contiguous or the transpose of a contiguous tensor: a column slice of a weight took
    ~4000x longer (measured, torch 2.13), so callers pass ``.contiguous()`` weights.
    """
    if add is not None:
        return _linear_pointwise.binary(x, add, w, b, "add")
    return _linear_pointwise(x, w, b, "relu" if relu else "none", [], "")


def _weight_grad(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """g^T x, the weight gradient: computed as (x^T g)^T, the operand order oneDNN runs fastest (measured)."""
    return _dnn(x.t(), g.t()).t()


def _add_ray_term(y: torch.Tensor, ray_term: torch.Tensor) -> torch.Tensor:
    """y [R*S, M] += ray_term [R, M] broadcast over each ray's S samples, in place."""
    y.view(ray_term.shape[0], -1, y.shape[-1]).add_(ray_term[:, None, :])
    return y


class _OneDNNLinear(torch.autograd.Function):
    """y = act(x W^T + b + extra + ray_term per ray); forward, input-grad and weight-grad GEMMs on oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias, ray_term, extra, relu: bool):
        if ray_term is None:
            y = _dnn(x, weight, bias, relu=relu and extra is None, add=extra)
            if relu and extra is not None:
                y.relu_()
        else:
            y = _add_ray_term(_dnn(x, weight, bias, add=extra), ray_term)
            if relu:
                y.relu_()
        ctx.relu = relu
        ctx.n_rays = 0 if ray_term is None else ray_term.shape[0]
        ctx.save_for_backward(x, weight, y if relu else None)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, y = ctx.saved_tensors
        g = torch.ops.aten.threshold_backward(grad_y, y, 0.0) if ctx.relu else grad_y.contiguous()
        need_x, need_w, need_b, need_r, need_e, _ = ctx.needs_input_grad
        grad_x = _dnn(g, weight.t().contiguous()) if need_x else None
        grad_w = _weight_grad(g, x) if need_w else None
        grad_b = g.sum(0) if need_b else None
        grad_r = g.view(ctx.n_rays, -1, g.shape[-1]).sum(1) if need_r else None
        return grad_x, grad_w, grad_b, grad_r, (g if need_e else None), None


class _OneDNNSplitHead(torch.autograd.Function):
    """One GEMM feeding two heads: column 0 raw (sigma), columns 1.. through ReLU (view branch).

    As one op its backward assembles the [N, 1+M] gradient in one pass, where slicing the output would
    have autograd zero-fill and add two full-size gradients.
    """

    @staticmethod
    def forward(ctx, x, weight, ray_term):
        y = _add_ray_term(_dnn(x, weight), ray_term)
        first, rest = y[:, 0].clone(), y[:, 1:].relu_()
        ctx.n_rays = ray_term.shape[0]
        ctx.save_for_backward(x, weight, y)
        return first, rest

    @staticmethod
    def backward(ctx, grad_first, grad_rest):
        x, weight, y = ctx.saved_tensors
        g = torch.empty_like(y)
        if grad_first is None:
            g[:, 0] = 0
        else:
            g[:, 0] = grad_first
        if grad_rest is None:
            g[:, 1:] = 0
        else:
            torch.ops.aten.threshold_backward.grad_input(grad_rest, y[:, 1:], 0.0, grad_input=g[:, 1:])
        need_x, need_w, need_r = ctx.needs_input_grad
        grad_x = _dnn(g, weight.t().contiguous()) if need_x else None
        grad_w = _weight_grad(g, x) if need_w else None
        grad_r = g.view(ctx.n_rays, -1, g.shape[-1]).sum(1) if need_r else None
        return grad_x, grad_w, grad_r


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    ray_term: torch.Tensor | None = None,
    extra: torch.Tensor | None = None,
    relu: bool = False,
    onednn: bool = True,
) -> torch.Tensor:
    """act(x [N,K] W^T + b + extra [N,M] + ray_term [R,M] broadcast per ray) -> [N,M], N = R * samples per ray.

    ``onednn`` allows the oneDNN path where :func:`onednn_usable`; the torch path is the reference maths.
    """
    if onednn and onednn_usable(x):
        return _OneDNNLinear.apply(x.contiguous(), weight.contiguous(), bias, ray_term, extra, relu)
    y = F.linear(x, weight, bias)
    if extra is not None:
        y = y + extra
    if ray_term is not None:
        # Out of place: an in-place add on a view would cost a CopySlices pass in backward.
        y = (y.view(ray_term.shape[0], -1, y.shape[-1]) + ray_term[:, None, :]).view(y.shape)
    return torch.relu(y) if relu else y


def split_head(
    x: torch.Tensor, weight: torch.Tensor, ray_term: torch.Tensor, onednn: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """y = x W^T + ray_term per ray -> (y[:, 0] [N], relu(y[:, 1:]) [N, M-1]); one GEMM for both heads."""
    if onednn and onednn_usable(x):
        return _OneDNNSplitHead.apply(x.contiguous(), weight.contiguous(), ray_term)
    y = linear(x, weight, ray_term=ray_term, onednn=False)
    return y[:, 0], torch.relu(y[:, 1:])
