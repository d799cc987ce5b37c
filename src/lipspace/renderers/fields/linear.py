"""Linear layers of a field with per-ray terms, in two backends: plain torch, and oneDNN feature-major (CPU fp32).

Both compute act(x W^T + b + extra + ray_term per ray) on N = R * S samples. The torch backend keeps
activations as [N, K] (samples x features); the oneDNN one keeps them transposed, [K, N], because then
every GEMM of a training step - forward, input grad, weight grad - reads both operands in the layout
oneDNN wants, where [N, K] makes the weight-grad GEMM transpose a whole activation first (~20% of a step).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# oneDNN's dense-tensor linear (the op inductor emits for CPU linears): A @ B^T (+ bias)(+ post-op).
# On this project's AMD CPUs, MKL's sgemm behind torch.mm runs an AVX2 path; oneDNN's AVX-512 kernels
# measured ~2x faster for these shapes.
_linear_pointwise = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


def _mm_nt(a: torch.Tensor, b: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b^T (+ add) on oneDNN. ``a`` contiguous; ``b`` contiguous or a transpose of a contiguous tensor:
    any other strides (e.g. a column slice) fall off a cliff (~4000x slower, measured on torch 2.13)."""
    if add is not None:
        return _linear_pointwise.binary(a, add, b, None, "add")
    return _linear_pointwise(a, b, None, "none", [], "")


@functools.cache
def _onednn_works() -> bool:
    """Whether oneDNN linear exists in this torch build and matches torch's result (checked once)."""
    if _linear_pointwise is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        a, b, o = (torch.randn(*s, generator=g) for s in ((11, 19), (37, 19), (11, 37)))
        ok = torch.allclose(_mm_nt(a, b), a @ b.t(), atol=1e-5, rtol=1e-5)
        ok = ok and torch.allclose(_mm_nt(a, b.t().contiguous().t()), a @ b.t(), atol=1e-5, rtol=1e-5)
        return ok and torch.allclose(_mm_nt(a, b, add=o), a @ b.t() + o, atol=1e-5, rtol=1e-5)
    except (RuntimeError, AttributeError):  # op missing or rejecting dense tensors in this build
        return False


def onednn_usable(x: torch.Tensor) -> bool:
    """True where the oneDNN backend applies: CPU float32 tensors, eager mode, working op."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.compiler.is_compiling() and _onednn_works()


class _FeatureMajorLinear(torch.autograd.Function):
    """y_t [M,N] = act(W x_t + b + extra_t + ray_term^T per ray), x_t [K,N]; all GEMMs on oneDNN, no transposes."""

    @staticmethod
    def forward(ctx, x_t, weight, bias, ray_term, extra_t, relu: bool):
        y = _mm_nt(weight, x_t.t(), add=extra_t)
        if bias is not None:
            y.add_(bias[:, None])
        if ray_term is not None:
            y.view(y.shape[0], ray_term.shape[0], -1).add_(ray_term.t()[:, :, None])
        if relu:
            y.relu_()
        ctx.relu = relu
        ctx.n_rays = 0 if ray_term is None else ray_term.shape[0]
        ctx.save_for_backward(x_t, weight, y if relu else None)
        return y

    @staticmethod
    @once_differentiable  # hand-written backward: no double backward through it
    def backward(ctx, grad_y):
        x_t, weight, y = ctx.saved_tensors
        g = torch.ops.aten.threshold_backward(grad_y, y, 0.0) if ctx.relu else grad_y.contiguous()
        need_x, need_w, need_b, need_r, need_e, _ = ctx.needs_input_grad
        grad_x = _mm_nt(weight.t().contiguous(), g.t()) if need_x else None  # W^T g
        grad_w = _mm_nt(g, x_t) if need_w else None  # g x_t^T: both operands already [rows, samples]
        grad_b = g.sum(1) if need_b else None
        grad_r = g.view(g.shape[0], ctx.n_rays, -1).sum(2).t() if need_r else None
        return grad_x, grad_w, grad_b, grad_r, (g if need_e else None), None


class _FeatureMajorSplitHead(torch.autograd.Function):
    """One GEMM feeding two heads: row 0 raw (sigma), rows 1.. through ReLU (view branch).

    As one op its backward assembles the gradient in one pass, where slicing the output would have
    autograd zero-fill and add two full-size gradients.
    """

    @staticmethod
    def forward(ctx, x_t, weight, ray_term):
        y = _mm_nt(weight, x_t.t())
        y.view(y.shape[0], ray_term.shape[0], -1).add_(ray_term.t()[:, :, None])
        first, rest = y[0].clone(), y[1:].relu_()
        ctx.n_rays = ray_term.shape[0]
        ctx.save_for_backward(x_t, weight, y)
        return first, rest

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_first, grad_rest):
        x_t, weight, y = ctx.saved_tensors
        g = torch.empty_like(y)
        g[0] = 0 if grad_first is None else grad_first
        if grad_rest is None:
            g[1:] = 0
        else:
            torch.ops.aten.threshold_backward.grad_input(grad_rest, y[1:], 0.0, grad_input=g[1:])
        need_x, need_w, need_r = ctx.needs_input_grad
        grad_x = _mm_nt(weight.t().contiguous(), g.t()) if need_x else None
        grad_w = _mm_nt(g, x_t) if need_w else None
        grad_r = g.view(g.shape[0], ctx.n_rays, -1).sum(2).t() if need_r else None
        return grad_x, grad_w, grad_r


class TorchLinearOps:
    """Reference backend: activations [N, K], autograd through standard torch ops (any device/dtype)."""

    @staticmethod
    def layout(x: torch.Tensor) -> torch.Tensor:
        """[N, K] samples x features -> this backend's activation layout."""
        return x

    @staticmethod
    def rows(h: torch.Tensor) -> torch.Tensor:
        """This backend's activation -> [N, M]."""
        return h

    @staticmethod
    def linear(h, weight, bias=None, ray_term=None, extra=None, relu: bool = False) -> torch.Tensor:
        """act(h W^T + b + extra + ray_term per ray)."""
        y = F.linear(h, weight, bias)
        if extra is not None:
            y = y + extra
        if ray_term is not None:
            # Out of place: an in-place add on a view would cost a CopySlices pass in backward.
            y = (y.view(ray_term.shape[0], -1, y.shape[-1]) + ray_term[:, None, :]).view(y.shape)
        return torch.relu(y) if relu else y

    @staticmethod
    def cat_features(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """[N, Ka], [N, Kb] -> [N, Ka + Kb]."""
        return torch.cat([a, b], dim=1)

    @staticmethod
    def mul_ray(h: torch.Tensor, ray_term: torch.Tensor) -> torch.Tensor:
        """h [N, K] times a per-ray factor ray_term [R, K] (N = R * S samples, ray-major)."""
        return (h.view(ray_term.shape[0], -1, h.shape[-1]) * ray_term[:, None, :]).view(h.shape)

    @staticmethod
    def split_head(h, weight, ray_term) -> tuple[torch.Tensor, torch.Tensor]:
        """y = h W^T + ray_term -> (y's first feature [N], relu of the others)."""
        y = TorchLinearOps.linear(h, weight, ray_term=ray_term)
        return y[:, 0], torch.relu(y[:, 1:])


class OneDNNLinearOps:
    """oneDNN backend for CPU float32: activations [K, N] (feature-major), fused custom autograd ops."""

    @staticmethod
    def layout(x: torch.Tensor) -> torch.Tensor:
        return x.t().contiguous()

    @staticmethod
    def rows(h: torch.Tensor) -> torch.Tensor:
        return h.t()

    @staticmethod
    def linear(h, weight, bias=None, ray_term=None, extra=None, relu: bool = False) -> torch.Tensor:
        extra = None if extra is None else extra.contiguous()
        return _FeatureMajorLinear.apply(h.contiguous(), weight.contiguous(), bias, ray_term, extra, relu)

    @staticmethod
    def cat_features(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b], dim=0)

    @staticmethod
    def mul_ray(h: torch.Tensor, ray_term: torch.Tensor) -> torch.Tensor:
        """h [K, N] (feature-major) times a per-ray factor ray_term [R, K]."""
        return (h.view(h.shape[0], ray_term.shape[0], -1) * ray_term.t()[:, :, None]).view(h.shape)

    @staticmethod
    def split_head(h, weight, ray_term) -> tuple[torch.Tensor, torch.Tensor]:
        return _FeatureMajorSplitHead.apply(h.contiguous(), weight.contiguous(), ray_term)


def linear_ops(x: torch.Tensor, allow_onednn: bool = True) -> type[TorchLinearOps] | type[OneDNNLinearOps]:
    """The backend for tensors like ``x``: oneDNN where allowed and usable, torch otherwise."""
    return OneDNNLinearOps if allow_onednn and onednn_usable(x) else TorchLinearOps
