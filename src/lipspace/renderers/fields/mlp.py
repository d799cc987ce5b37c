"""The vanilla conditioned NeRF MLP of AD-NeRF / LipNeRF: (x, d, per-ray c) -> (rgb, sigma)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lipspace.renderers.encodings import PositionalEncoding
from lipspace.renderers.fields.linear import linear_ops
from lipspace.renderers.fields.region_attention import RegionAttention
from lipspace.utils.errors import LipspaceError

DENSITY_ACTIVATIONS = {"relu": torch.relu, "softplus": F.softplus}


def _split_linear(out_dim: int, in_dims: Sequence[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Init one nn.Linear over the concatenated input and cut its weight into per-input column blocks.

    The split layers then start from exactly the distribution of the naive concat layer (fan-in of the
    whole concatenation), so "per-ray condition" changes the cost, never the initialisation.
    """
    full = nn.Linear(sum(in_dims), out_dim)
    return list(full.weight.detach().split(list(in_dims), dim=1)), full.bias.detach()


class MLPField(nn.Module):
    """8 linear layers (hidden 128), skip at layer 4, sigma head, view branch (hidden//2) -> rgb; AD-NeRF maths.

    Architecture = AD-NeRF's ``FaceNeRF`` (use_viewdirs): the trunk reads cat(PE(x), c); after trunk layer
    ``k`` in ``skips`` the next layer reads cat(PE(x), c, h); sigma = relu(linear(h)); the view branch
    reads cat(h, PE(d)) (no extra feature layer, as in AD-NeRF) through ``n_view_layers`` ReLU layers of
    ``view_hidden`` units (default 1 + n_layers // 4, AD-NeRF's rule), then rgb = sigmoid(linear).

    Same maths, less work: each input that is constant along a ray is projected once per ray and added
    as a per-ray bias, W [PE(x); c] + b = W_x PE(x) + (W_c c + b), and likewise W [h; PE(d)] = W_h h + W_d PE(d);
    the sigma head and the first view layer both read h, so they share one matmul. On CPU float32 the
    GEMMs run on oneDNN (``onednn=True``; see fields/linear.py), elsewhere on plain torch ops.

    ``density_activation="relu"`` is AD-NeRF's; with it about one init in four (21 of 80 seeds at widths
    32-256, measured) starts with sigma = 0 at every point, where no gradient ever reaches the density.
    "softplus" (a smooth relu) cannot die that way.

    ``regions`` (``[(name, start, stop)]`` column ranges of c, declared by a conditioner such as SyncTalk's lip /
    upper-face codes) adds ER-NeRF / SyncTalk region attention (fields/region_attention.py): each region's
    columns are gated per sample point, c_r * sigmoid(MLP_r(PE(x))), and join PE(x) as per-sample input features
    of every input layer (one matmul per layer, as before); the other columns keep the per-ray term, and a field
    without regions runs exactly the code (and initialisation) it ran before. forward then also returns the
    gates' per-region magnitude [R, S, n]. Measured cost of regions (48 gated columns, 1024 rays, 32+32 samples,
    one thread, busy 2-core machine): train step x1.2 at 8x128, x1.3-1.45 at 6x64.

    ``semantic_classes`` K > 0 adds SSP-NeRF's implicit parsing head: per-point class logits, one linear layer on the
    trunk's geometry features h (view-independent), returned last [R,S,K]; 0 (default) builds and runs the field
    exactly as without it (the head is created last, so the other weights draw the same initial values).

    ``point_features`` P > 0 adds per-point input features (SSP-NeRF's structured 3-D latent codes: a code
    interpolated at each sample point from codes anchored on 3DMM vertices): forward then requires
    ``point_feats`` [R,S,P], one feature vector per sample point, and every input layer reads cat(PE(x), f, c, [h])
    (f joins PE(x) as per-sample input features, like the gated region columns, one matmul per layer):
    W [PE(x); f; c; h] + b = W_x PE(x) + W_f f + W_h h + (W_c c + b). Gradients flow to ``point_feats`` (they come
    from learnable codes). W_f is drawn last (after the parsing head), uniform(+-1/sqrt(fan-in)) with the fan-in of
    the layer's whole concatenated input, so P = 0 (default) builds and runs the field exactly as without it and
    P > 0 draws every other weight as P = 0 does.
    """

    def __init__(
        self,
        cond_dim: int,
        hidden: int = 128,
        n_layers: int = 8,
        skips: Sequence[int] = (4,),
        pos_freqs: int = 10,
        dir_freqs: int = 4,
        view_hidden: int | None = None,
        n_view_layers: int | None = None,
        density_activation: str = "relu",
        onednn: bool = True,
        regions=None,
        region_att_hidden: int = 32,
        semantic_classes: int = 0,
        point_features: int = 0,
    ):
        super().__init__()
        if cond_dim < 0 or hidden < 1 or n_layers < 1:
            raise ValueError(
                f"MLPField needs cond_dim >= 0, hidden >= 1, n_layers >= 1; got {cond_dim}, {hidden}, {n_layers}"
            )
        if any(int(k) < 0 for k in skips):
            raise ValueError(f"MLPField skips must be trunk layer indices >= 0, got {tuple(skips)}")
        if density_activation not in DENSITY_ACTIVATIONS:
            raise ValueError(
                f"MLPField density_activation must be one of {sorted(DENSITY_ACTIVATIONS)}, got {density_activation!r}"
            )
        # Skips past the trunk are dropped, as AD-NeRF's loop does, so a 4-layer budget keeps skips=(4,).
        self.skips = tuple(int(k) for k in skips if int(k) < n_layers - 1)
        self.cond_dim = cond_dim
        self.hidden = hidden
        self.view_hidden = view_hidden or max(hidden // 2, 1)
        self.n_view_layers = n_view_layers if n_view_layers is not None else 1 + n_layers // 4
        if self.n_view_layers < 1:
            raise ValueError(f"MLPField needs n_view_layers >= 1, got {self.n_view_layers}")
        self.density_activation = density_activation
        self.onednn = onednn
        self.pos_enc = PositionalEncoding(3, pos_freqs)
        self.dir_enc = PositionalEncoding(3, dir_freqs)
        pe_dim, dir_dim = self.pos_enc.out_dim, self.dir_enc.out_dim

        # Trunk. Layers that read the input (0 and each layer after a skip) keep the PE(x) (+ h) columns;
        # their condition columns live in cond_proj and are applied once per ray.
        self.input_layers = (0,) + tuple(k + 1 for k in self.skips)
        self.trunk = nn.ModuleList()
        self.cond_proj = nn.ModuleList()
        for i in range(n_layers):
            if i in self.input_layers:
                (w_x, w_c, *w_h), bias = _split_linear(hidden, [pe_dim, cond_dim] + ([hidden] if i else []))
                layer = nn.Linear(pe_dim + (hidden if i else 0), hidden)
                layer.weight.data.copy_(torch.cat([w_x, *w_h], dim=1))  # reads cat(PE(x), h), AD-NeRF's order
                layer.bias.data.copy_(bias)
                if cond_dim:
                    self.cond_proj.append(nn.Linear(cond_dim, hidden, bias=False))
                    self.cond_proj[-1].weight.data.copy_(w_c)
            else:
                layer = nn.Linear(hidden, hidden)
            self.trunk.append(layer)

        # Shared head on h: row 0 is sigma (AD-NeRF's alpha_linear), the rest is the h-part of the first
        # view layer, whose PE(d) part is the per-ray dir_proj.
        sigma_layer = nn.Linear(hidden, 1)
        (w_h, w_d), view_bias = _split_linear(self.view_hidden, [hidden, dir_dim])
        self.head = nn.Linear(hidden, 1 + self.view_hidden)
        self.head.weight.data.copy_(torch.cat([sigma_layer.weight.detach(), w_h], dim=0))
        self.head.bias.data.copy_(torch.cat([sigma_layer.bias.detach(), view_bias]))
        self.dir_proj = nn.Linear(dir_dim, self.view_hidden, bias=False)
        self.dir_proj.weight.data.copy_(w_d)
        self.view_layers = nn.ModuleList(
            nn.Linear(self.view_hidden, self.view_hidden) for _ in range(self.n_view_layers - 1)
        )
        self.rgb_out = nn.Linear(self.view_hidden, 3)
        # Created last, so a field without regions draws exactly the initial weights it drew before.
        self.region_att = RegionAttention(regions, cond_dim, pe_dim, region_att_hidden) if regions else None
        if semantic_classes < 0:
            raise ValueError(f"MLPField semantic_classes must be >= 0 (0 = no parsing head), got {semantic_classes}")
        self.semantic_classes = int(semantic_classes)
        self.semantic = nn.Linear(hidden, self.semantic_classes) if self.semantic_classes else None
        # Per-point feature columns W_f of each input layer, created after everything else (P = 0 draws nothing).
        if point_features < 0:
            raise ValueError(f"MLPField point_features must be >= 0 (0 = none), got {point_features}")
        self.point_features = int(point_features)
        self.point_proj = None
        if self.point_features:
            self.point_proj = nn.ModuleList()
            for i in self.input_layers:
                proj = nn.Linear(self.point_features, hidden, bias=False)
                fan_in = pe_dim + self.point_features + cond_dim + (hidden if i else 0)
                nn.init.uniform_(proj.weight, -fan_in**-0.5, fan_in**-0.5)  # nn.Linear's bound for the concat
                self.point_proj.append(proj)

    def forward(
        self, x: torch.Tensor, d: torch.Tensor, c: torch.Tensor | None, point_feats: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """x [R,S,3] positions, d [R,3] unit directions, c [R,cond_dim] (, point_feats [R,S,point_features]: the
        per-point input features, required iff point_features > 0) -> rgb [R,S,3] in [0,1], sigma [R,S] >= 0
        (+ region attention magnitudes [R,S,n_regions] in (0, 1) when the field has regions)
        (+ parsing logits [R,S,semantic_classes] when semantic_classes > 0)."""
        n_rays, n_samples, _ = x.shape
        if self.cond_dim and (c is None or c.shape != (n_rays, self.cond_dim)):
            got = None if c is None else tuple(c.shape)
            raise ValueError(f"MLPField expects c of shape [{n_rays}, {self.cond_dim}], got {got}")
        n_feats = self.point_features
        if not n_feats and point_feats is not None:
            raise LipspaceError(f"MLPField built with point_features=0 takes no point_feats, got shape "
                                f"{list(point_feats.shape)}; build it with point_features=P to feed [R, S, P] features")
        if n_feats and (point_feats is None or point_feats.shape != (n_rays, n_samples, n_feats)):
            got = None if point_feats is None else list(point_feats.shape)
            raise LipspaceError(f"MLPField built with point_features={n_feats} expects point_feats of shape "
                                f"[{n_rays}, {n_samples}, {n_feats}] (one vector per point of x {list(x.shape)}), "
                                f"got {got}")
        ops = linear_ops(x, self.onednn)
        pe = ops.layout(self.pos_enc(x.reshape(-1, 3)))  # PE(x), N = R * S samples
        # Per-ray term of each input layer, [R, hidden]: W_c c once per ray instead of once per sample.
        att = self.region_att
        x_in = pe  # what the input layers' x-columns read: PE(x), [the gated region columns of c], [point features]
        if att is None:
            cond_terms = iter(proj(c) for proj in self.cond_proj)
        else:
            # Region columns are gated per sample, c_r * a_r(x): they join PE(x) as extra input features (one
            # concatenation shared by every input layer), so each input layer still makes one x-side matmul.
            gates = att.gates(ops, pe)
            x_in = ops.cat_features(pe, att.modulated(ops, gates, c))
            cond_terms = iter(proj(att.ray_part(c)) for proj in self.cond_proj)
            region_weights = iter(proj.weight[:, att.cols] for proj in self.cond_proj)
        if n_feats:
            # The point features join PE(x) (and the region columns) as per-sample input features of every input layer.
            x_in = ops.cat_features(x_in, ops.layout(point_feats.reshape(-1, n_feats)))
            point_weights = iter(proj.weight for proj in self.point_proj)

        h = None
        for i, layer in enumerate(self.trunk):
            if i not in self.input_layers:
                h = ops.linear(h, layer.weight, layer.bias, relu=True)
                continue
            # An input layer reads cat(PE(x), [c], [h]): PE(x) columns as their own matmul (PE(x) needs no
            # gradient, so no wasted input-grad columns), c as the per-ray term, h as the main matmul.
            ray_term = next(cond_terms) + layer.bias if self.cond_dim else None
            bias = None if self.cond_dim else layer.bias
            # x_in's columns: PE(x), [gated region columns of c], [point features]; w_x the matching weights.
            w_x, w_h = (layer.weight, None) if i == 0 else layer.weight.split([self.pos_enc.out_dim, self.hidden], 1)
            extra_cols = [next(region_weights)] if att is not None else []
            extra_cols += [next(point_weights)] if n_feats else []
            if extra_cols:
                w_x = torch.cat([w_x, *extra_cols], dim=1)
            if i == 0:
                h = ops.linear(x_in, w_x, bias, ray_term, relu=True)
            else:
                h = ops.linear(h, w_h, bias, ray_term, extra=ops.linear(x_in, w_x), relu=True)

        # One matmul for sigma and the first view layer; only the view columns get the per-ray PE(d) term.
        dir_term = self.dir_proj(self.dir_enc(d)) + self.head.bias[1:]
        head_term = torch.cat([self.head.bias[:1].expand(n_rays, 1), dir_term], dim=1)
        sigma_raw, v = ops.split_head(h, self.head.weight, head_term)
        sigma = DENSITY_ACTIVATIONS[self.density_activation](sigma_raw)
        for layer in self.view_layers:
            v = ops.linear(v, layer.weight, layer.bias, relu=True)
        rgb = torch.sigmoid(ops.rows(ops.linear(v, self.rgb_out.weight, self.rgb_out.bias)))
        out = (rgb.reshape(n_rays, n_samples, 3), sigma.view(n_rays, n_samples))
        if att is not None:
            out += (att.magnitudes(ops, gates).reshape(n_rays, n_samples, -1),)
        if self.semantic is not None:
            logits = ops.rows(ops.linear(h, self.semantic.weight, self.semantic.bias))
            out += (logits.reshape(n_rays, n_samples, self.semantic_classes),)
        return out
