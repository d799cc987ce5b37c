"""TalkingGaussian's grid-based motion fields: per-Gaussian offsets from a tri-plane hash encoding of the canonical
position and the frame's condition, through a small MLP.

One field per branch: the face branch predicts offsets of position, log-scale and rotation (3 + 3 + 4 = 10); the
inside-mouth branch, a smaller field, predicts a position offset only (3), as TalkingGaussian's mouth branch (a
translation of the teeth / tongue Gaussians driven by the speech). The last layer starts at zero, so training starts
from the canonical Gaussians.

The first layer is split (it is linear): W [enc; c] = W_enc enc + W_c c, so the encoding's part runs once per
Gaussian and the condition's once per frame, broadcast to [F, N, hidden].
"""

from __future__ import annotations

import torch
from torch import nn

from lipspace.renderers.hashgrid import TriPlaneHash


class DeformationField(nn.Module):
    """x01 [N,3] (canonical positions normalised to [0,1]^3), cond [F,C] -> offsets [F,N,out_dim]."""

    def __init__(self, cond_dim: int, out_dim: int, hidden: int = 64, layers: int = 2, n_levels: int = 12,
                 n_features: int = 1, log2_table: int = 14, base_res: int = 16, finest_res: int = 256,
                 compile: bool | str = False):
        super().__init__()
        self.encoding = TriPlaneHash(n_levels, n_features, log2_table, base_res, finest_res, compile=compile)
        self.cond_dim, self.out_dim = cond_dim, out_dim
        self.enc_in = nn.Linear(self.encoding.out_dim, hidden)
        self.cond_in = nn.Linear(cond_dim, hidden, bias=False) if cond_dim else None
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 1))
        self.out = nn.Linear(hidden, out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x01: torch.Tensor, cond: torch.Tensor | None, n_frames: int) -> torch.Tensor:
        h = self.enc_in(self.encoding(x01))[None]  # [1,N,H]
        if self.cond_in is not None and cond is not None:
            h = h + self.cond_in(cond)[:, None]  # [F,N,H]
        h = torch.relu(h.expand(n_frames, *h.shape[1:]))
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return self.out(h)
