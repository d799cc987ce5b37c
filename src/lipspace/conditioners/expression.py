"""LipNeRF's space: 3DMM expression coefficients + learned per-frame latent codes; Savitzky-Golay smoothing at inference."""

from __future__ import annotations

import torch
from scipy.signal import savgol_filter
from torch import nn

from lipspace.conditioners.base import Conditioner
from lipspace.errors import LipspaceError


class ExpressionConditioner(Conditioner):
    """c = [expr, z_t] (optionally projected). ``z_t`` is a learned code per training frame, regularised by
    ``latent_reg * ||z||^2``; frames never trained (held-out tail, new audio) use the mean of trained codes."""

    name = "expression"

    def __init__(self, n_frames: int, inputs: dict[str, int] | None = None, latent_dim: int = 32,
                 latent_reg: float = 0.01, smooth_window: int = 5, smooth_order: int = 2, out_dim: int | None = None):
        super().__init__(inputs or {"expr": 53}, out_dim)
        if list(self.inputs) != ["expr"]:
            raise LipspaceError(f"conditioner 'expression' reads exactly one input 'expr', got {self.inputs}. "
                                "Set conditioner.inputs={expr: <dim>}.")
        if smooth_window and (smooth_window % 2 == 0 or smooth_window <= smooth_order):
            raise LipspaceError(f"conditioner.smooth_window={smooth_window} must be odd and > smooth_order="
                                f"{smooth_order} (Savitzky-Golay), or 0 to disable smoothing.")
        self.expr_dim = self.inputs["expr"]
        self.latent_dim, self.latent_reg = latent_dim, latent_reg
        self.smooth_window, self.smooth_order = smooth_window, smooth_order
        self.latents = nn.Embedding(n_frames, latent_dim) if latent_dim > 0 else None
        if self.latents is not None:
            nn.init.normal_(self.latents.weight, std=0.01)
        self.register_buffer("seen", torch.zeros(n_frames, dtype=torch.bool))
        self._build_projection()

    @property
    def raw_dim(self) -> int:
        return self.expr_dim + self.latent_dim

    def mean_latent(self) -> torch.Tensor:
        w = self.latents.weight
        return w[self.seen].mean(0) if self.seen.any() else torch.zeros_like(w[0])

    def _latent(self, frame_idx: torch.Tensor | None, n: int) -> torch.Tensor:
        if self.training and frame_idx is not None:
            self.seen[frame_idx] = True
            return self.latents(frame_idx)
        if frame_idx is not None and bool(self.seen[frame_idx].all()):
            return self.latents(frame_idx)  # reconstruction of a training frame
        return self.mean_latent().expand(n, -1)

    def encode(self, inputs, frame_idx):
        expr = inputs["expr"]
        if self.latents is None:
            return expr
        return torch.cat([expr, self._latent(frame_idx, expr.shape[0])], dim=-1)

    def regularizer(self, frame_idx):
        if self.latents is None or frame_idx is None:
            return super().regularizer(frame_idx)
        z = self.latents(frame_idx)
        return self.latent_reg * (z * z).sum(-1).mean()

    def prepare_sequence(self, inputs):
        expr = inputs["expr"]
        if not self.smooth_window or expr.shape[0] < self.smooth_window:
            return inputs
        smoothed = savgol_filter(expr.cpu().numpy(), self.smooth_window, self.smooth_order, axis=0)
        return {**inputs, "expr": torch.as_tensor(smoothed, dtype=expr.dtype, device=expr.device)}
