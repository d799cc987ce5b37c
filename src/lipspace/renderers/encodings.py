"""Input encodings for fields: NeRF's sinusoidal positional encoding (pure torch)."""

from __future__ import annotations

import torch
from torch import nn


class PositionalEncoding(nn.Module):
    """NeRF PE: [x, sin(2^0 x), cos(2^0 x), ..., sin(2^(F-1) x), cos(2^(F-1) x)], reports ``out_dim``.

    The layout (frequency-major, sin block then cos block, each ``in_dim`` wide) is the one of the
    NeRF / AD-NeRF ``Embedder``, so weights trained there map one-to-one onto layers fed by this.
    """

    def __init__(self, in_dim: int = 3, n_freqs: int = 10, include_input: bool = True):
        super().__init__()
        if in_dim < 1 or n_freqs < 0:
            raise ValueError(f"PositionalEncoding needs in_dim >= 1 and n_freqs >= 0, got {in_dim}, {n_freqs}")
        self.in_dim = in_dim
        self.n_freqs = n_freqs
        self.include_input = include_input
        # A buffer (not a Python list) so .to(device/dtype) moves it and torch.compile sees a constant.
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freqs, dtype=torch.float32), persistent=False)
        self.out_dim = in_dim * (int(include_input) + 2 * n_freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"PositionalEncoding expects last dim {self.in_dim}, got shape {tuple(x.shape)}")
        parts = [x] if self.include_input else []
        if self.n_freqs:
            scaled = x[..., None, :] * self.freqs.to(x.dtype)[:, None]  # [..., F, in_dim]
            # sin and cos computed separately (not cos = sin(y + pi/2)) so values match NeRF to the last bit.
            parts.append(torch.stack([scaled.sin(), scaled.cos()], dim=-2).flatten(-3))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, n_freqs={self.n_freqs}, include_input={self.include_input}, "
                f"out_dim={self.out_dim}")
