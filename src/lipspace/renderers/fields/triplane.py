"""ER-NeRF / SyncTalk field: a tri-plane multiresolution hash encoding of the point, small MLPs for density and
colour, the condition entering per point by concatenation or gated by attention.

    enc = TriPlaneHash(x in [0, 1]^3)                                  [N, 3 L F]
    c_x = c                     (cond_mode="concat")
        = c * sigmoid(A enc)    (cond_mode="attention": ER-NeRF's channel attention aud_ch_att(enc_x))
    regions (declared by the conditioner, e.g. SyncTalk's lip / upper-face codes): each region's columns are
        gated by their own a_r = sigmoid(MLP_r(enc)) (SyncTalk: enc_a * aud_ch_att(enc_x), enc_e * eye_att(enc_x)),
        the other columns follow cond_mode; the per-point gate magnitude of each region is returned for the
        masking loss (fields/region_attention.py, system.region_loss).
    f = point_feats             (point_features P > 0: per-point input features [N, P], e.g. SSP-NeRF's structured
                                 3-D latent codes interpolated at the point from codes anchored on 3DMM vertices)
    h = MLP_sigma([enc, f, c_x]) -> sigma = softplus / exp-activated h_0, geo = h_1..
    rgb = sigmoid(MLP_color([geo, PE(d)]))
    logits = Linear(geo)        (semantic_classes > 0: SSP-NeRF's implicit parsing head on the geometry features)

Points arrive flat ([N, 3] with the index of their ray), because the renderer only evaluates samples the
occupancy grid keeps. With ``cond_mode="concat"`` the condition's first-layer term W_c c is computed once per ray
and gathered per point (same maths, R instead of N products). Per-point features f join enc at the density MLP's
input only (the attention gates read enc alone), as their own first-layer block W_f f, drawn after every other
weight: a field with point_features=0 (default) builds and runs exactly as without them, and one with P > 0 draws
every other weight as P = 0 does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lipspace.utils.errors import LipspaceError
from lipspace.renderers.encodings import PositionalEncoding
from lipspace.renderers.hashgrid import TriPlaneHash

COND_MODES = ("concat", "attention")


def _mlp(i: int, hidden: int, o: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for k in range(layers):
        mods += [nn.Linear(i if k == 0 else hidden, o if k == layers - 1 else hidden)]
        if k < layers - 1:
            mods.append(nn.ReLU(inplace=True))
    return nn.Sequential(*mods)


class TriPlaneField(nn.Module):
    def __init__(self, cond_dim: int, n_levels: int = 14, n_features: int = 1, log2_table: int = 16,
                 base_res: int = 16, finest_res: int = 512, hidden: int = 64, sigma_layers: int = 3,
                 geo_dim: int = 15, color_layers: int = 2, dir_freqs: int = 4, cond_mode: str = "concat",
                 density_activation: str = "softplus", regions=None, region_att_hidden: int = 32,
                 compile_encoding: bool | str = False, semantic_classes: int = 0, point_features: int = 0):
        super().__init__()
        if cond_mode not in COND_MODES:
            raise LipspaceError(f"TriPlaneField cond_mode must be one of {COND_MODES}, got {cond_mode!r}")
        if density_activation not in ("softplus", "exp"):
            raise LipspaceError(f"TriPlaneField density_activation must be softplus or exp, got {density_activation!r}")
        if sigma_layers < 1 or color_layers < 1:
            raise LipspaceError("TriPlaneField needs sigma_layers >= 1 and color_layers >= 1")
        self.cond_dim, self.cond_mode, self.hidden = cond_dim, cond_mode, hidden
        self.density_activation = density_activation
        self.encoding = TriPlaneHash(n_levels, n_features, log2_table, base_res, finest_res, compile=compile_encoding)
        e = self.encoding.out_dim
        self.dir_enc = PositionalEncoding(3, dir_freqs)
        first_out = hidden if sigma_layers > 1 else 1 + geo_dim
        self.sigma_in = nn.Linear(e, first_out)
        self.cond_in = nn.Linear(cond_dim, first_out, bias=False) if cond_dim else None
        self.att = nn.Linear(e, cond_dim) if cond_dim and cond_mode == "attention" else None
        self.regions = ()
        if regions:
            from lipspace.renderers.fields.region_attention import normalise_regions

            self.regions = normalise_regions(regions, cond_dim)
            cols = torch.cat([torch.arange(a, b) for _, a, b in self.regions])
            keep = torch.ones(cond_dim, dtype=torch.bool)
            keep[cols] = False
            self.register_buffer("region_cols", cols, persistent=False)
            self.register_buffer("ray_cols", torch.nonzero(keep).squeeze(1), persistent=False)
            self.region_gate = nn.Sequential(nn.Linear(e, region_att_hidden), nn.ReLU(inplace=True),
                                             nn.Linear(region_att_hidden, len(cols)))
            self.region_sizes = [b - a for _, a, b in self.regions]
        self.sigma_rest = _mlp(hidden, hidden, 1 + geo_dim, sigma_layers - 1) if sigma_layers > 1 else None
        self.color = _mlp(geo_dim + self.dir_enc.out_dim, hidden, 3, color_layers)
        if semantic_classes < 0:
            raise LipspaceError(f"TriPlaneField semantic_classes must be >= 0 (0 = off), got {semantic_classes}")
        # created last: with the head off every other weight draws the initial values it drew before
        self.semantic_classes = int(semantic_classes)
        self.semantic = nn.Linear(geo_dim, self.semantic_classes) if self.semantic_classes else None
        if point_features < 0:
            raise LipspaceError(f"TriPlaneField point_features must be >= 0 (0 = none), got {point_features}")
        # created after everything else: with P = 0 nothing is drawn, with P > 0 the other weights draw as P = 0
        self.point_features = int(point_features)
        self.point_in = nn.Linear(self.point_features, first_out, bias=False) if self.point_features else None

    def _check_point_feats(self, point_feats: torch.Tensor | None, n: int) -> None:
        """point_feats must be [n, point_features] when the field has point features, None otherwise."""
        p = self.point_features
        if not p and point_feats is not None:
            raise LipspaceError(f"TriPlaneField built with point_features=0 takes no point_feats, got shape "
                                f"{list(point_feats.shape)}; build it with point_features=P to feed [N, P] features")
        if p and (point_feats is None or point_feats.shape != (n, p)):
            got = None if point_feats is None else list(point_feats.shape)
            raise LipspaceError(f"TriPlaneField built with point_features={p} expects point_feats of shape [{n}, {p}] "
                                f"(one vector per point of x01 [{n}, 3]), got {got}")

    def encode(self, x01: torch.Tensor) -> torch.Tensor:
        return self.encoding(x01)

    def _trunk(self, enc: torch.Tensor, c: torch.Tensor | None, ray_idx: torch.Tensor | None,
               point_feats: torch.Tensor | None = None):
        """(trunk output [N, 1 + geo], per-point region gate magnitudes [N, n_regions] or None); point_feats [N, P]
        when point_features > 0 (checked by the callers)."""
        h = self.sigma_in(enc)
        if self.point_in is not None:  # [enc, f] through the first layer: W_e enc + b + W_f f
            h = h + self.point_in(point_feats)
        mags = None
        if self.cond_in is not None:
            if c is None:
                raise LipspaceError(f"TriPlaneField built for cond_dim={self.cond_dim} got no condition")
            w = self.cond_in.weight
            if self.regions:  # region columns gated per point, the others per ray (or by cond_mode attention)
                gates = torch.sigmoid(self.region_gate(enc))
                h = h + (c[:, self.region_cols].index_select(0, ray_idx) * gates) @ w[:, self.region_cols].t()
                mags = torch.stack([g.mean(-1) for g in gates.split(self.region_sizes, -1)], -1)
                c, w = c[:, self.ray_cols], w[:, self.ray_cols]
            if c.shape[-1]:
                if self.att is None:  # concat: per-ray term, gathered per point
                    h = h + (c @ w.t()).index_select(0, ray_idx)
                else:
                    att = torch.sigmoid(self.att(enc))
                    if self.regions:
                        att = att[:, self.ray_cols]
                    h = h + (c.index_select(0, ray_idx) * att) @ w.t()
        if self.sigma_rest is not None:
            h = self.sigma_rest(F.relu(h))
        return h, mags

    def _sigma(self, raw: torch.Tensor) -> torch.Tensor:
        return F.softplus(raw) if self.density_activation == "softplus" else torch.exp(raw.clamp(max=15.0))

    def max_density(self, x01: torch.Tensor, conds: torch.Tensor | None,
                    point_feats: torch.Tensor | None = None) -> torch.Tensor:
        """sigma [N] at points x01 [N, 3], the maximum over conditions conds [K, C] (None for an unconditioned
        field): the encoding, which does not depend on the condition, is computed once (the occupancy update).
        point_feats [N, P] (required iff point_features > 0): the points' features, shared by every condition."""
        self._check_point_feats(point_feats, len(x01))
        enc = self.encode(x01)
        zeros = torch.zeros(len(x01), dtype=torch.long, device=x01.device)
        if conds is None or not self.cond_dim:
            return self._sigma(self._trunk(enc, None, zeros, point_feats)[0][:, 0])
        out = None
        for c in conds:
            s = self._sigma(self._trunk(enc, c[None], zeros, point_feats)[0][:, 0])
            out = s if out is None else torch.maximum(out, s)
        return out

    def forward(self, x01: torch.Tensor, d: torch.Tensor, c: torch.Tensor | None, ray_idx: torch.Tensor,
                point_feats: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """x01 [N, 3] in [0, 1]^3, d [R, 3] unit directions, c [R, C], ray_idx [N] (, point_feats [N, point_features]:
        the per-point input features, in x01's layout, required iff point_features > 0) -> rgb [N, 3], sigma [N]
        (+ region gate magnitudes [N, n_regions] when the field has regions) (+ parsing logits [N, semantic_classes]
        when semantic_classes > 0)."""
        if self.cond_dim and (c is None or c.shape[-1] != self.cond_dim):
            raise LipspaceError(f"TriPlaneField expects c [R, {self.cond_dim}], got "
                                f"{None if c is None else tuple(c.shape)}")
        self._check_point_feats(point_feats, len(x01))
        h, mags = self._trunk(self.encode(x01), c, ray_idx, point_feats)
        sigma = self._sigma(h[:, 0])
        dir_term = self.dir_enc(d).index_select(0, ray_idx)
        rgb = torch.sigmoid(self.color(torch.cat([h[:, 1:], dir_term], -1)))  # raw geo features, as ER-NeRF
        out = (rgb, sigma) if mags is None else (rgb, sigma, mags)
        return out if self.semantic is None else (*out, self.semantic(h[:, 1:]))
