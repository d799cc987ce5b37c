"""TalkingGaussian's grid-based motion fields: per-Gaussian offsets from a tri-plane hash encoding of the canonical
position and the frame's condition, through a small MLP.

One field per branch: the face branch predicts offsets of position, log-scale and rotation (3 + 3 + 4 = 10); the
inside-mouth branch, a smaller field, predicts a position offset only (3), as TalkingGaussian's mouth branch (a
translation of the teeth / tongue Gaussians driven by the speech). The last layer starts at zero, so training starts
from the canonical Gaussians.

The first layer is split (it is linear): W [enc; c] = W_enc enc + W_c c, so the encoding's part runs once per
Gaussian and the condition's once per frame, broadcast to [F, N, hidden].

Region attention (``regions=[(name, start, stop)]``, column ranges of c: SyncTalk's lip / upper-face codes; as
TalkingGaussian's face branch gates its audio and expression features, after ER-NeRF): each region's columns are
gated per Gaussian by a_r(x) = sigmoid(MLP_r(enc(x))) of the Gaussian's tri-plane encoding
(fields/region_attention.py's :class:`RegionAttention`), so the first layer reads W_c (c * keep) per frame plus
W_cr (c_r * a_r(x)) per (frame, Gaussian); forward then also returns each region's gate magnitude per Gaussian
(the mean of its channels' gates) [N, n_regions]. The gates depend on the position only; what they gate is the
frame's condition. Built without regions the field is exactly the plain one (the attention is created last, so
the other parameters draw the same initial values).
"""

from __future__ import annotations

import torch
from torch import nn

from lipspace.renderers.fields.linear import TorchLinearOps
from lipspace.renderers.fields.region_attention import RegionAttention
from lipspace.renderers.hashgrid import TriPlaneHash


class DeformationField(nn.Module):
    """x01 [N,3] (canonical positions normalised to [0,1]^3), cond [F,C] -> offsets [F,N,out_dim] (and, with
    regions, the gate magnitudes [N, n_regions])."""

    def __init__(self, cond_dim: int, out_dim: int, hidden: int = 64, layers: int = 2, n_levels: int = 12,
                 n_features: int = 1, log2_table: int = 14, base_res: int = 16, finest_res: int = 256,
                 compile: bool | str = False, regions=None, region_att_hidden: int = 32):
        super().__init__()
        self.encoding = TriPlaneHash(n_levels, n_features, log2_table, base_res, finest_res, compile=compile)
        self.cond_dim, self.out_dim = cond_dim, out_dim
        self.enc_in = nn.Linear(self.encoding.out_dim, hidden)
        self.cond_in = nn.Linear(cond_dim, hidden, bias=False) if cond_dim else None
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 1))
        self.out = nn.Linear(hidden, out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # Created last, so a field without regions draws exactly the initial weights it drew before.
        self.region_att = (RegionAttention(regions, cond_dim, self.encoding.out_dim, region_att_hidden)
                           if regions else None)

    def forward(self, x01: torch.Tensor, cond: torch.Tensor | None, n_frames: int):
        enc = self.encoding(x01)
        h = self.enc_in(enc)[None]  # [1,N,H]
        att, mags = self.region_att, None
        if att is not None:
            gates = att.gates(TorchLinearOps, enc)  # [N,D] in (0,1): a_r(x) of every region's columns
            mags = att.magnitudes(TorchLinearOps, gates)  # [N,n_regions]
        if self.cond_in is not None and cond is not None:
            if att is None:
                h = h + self.cond_in(cond)[:, None]  # [F,N,H]
            else:
                w_r = self.cond_in.weight[:, att.cols]  # [H,D]
                h = h + ((cond[:, att.cols][:, None] * gates) @ w_r.t())  # [F,N,H]: c_r * a_r(x) per Gaussian
                if att.has_ray_part:  # the other columns: once per frame
                    h = h + self.cond_in(att.ray_part(cond))[:, None]
        h = torch.relu(h.expand(n_frames, *h.shape[1:]))
        for layer in self.hidden:
            h = torch.relu(layer(h))
        out = self.out(h)
        return out if att is None else (out, mags)
