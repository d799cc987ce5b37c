"""TalkingGaussian-style 3-D Gaussian splatting renderer (``renderer=gaussian``): canonical Gaussians deformed per
frame by the condition, projected (EWA) and rasterised by the pure-PyTorch tile rasteriser (or gsplat on CUDA).

Canonical Gaussians: centre, log-scale (3), rotation (unit quaternion, stored unnormalised), colour and opacity
(stored as logits: colour = sigmoid, opacity = sigmoid). Colour is view-independent, i.e. spherical harmonics of
degree 0 only (a talking head is seen from one camera; higher degrees would only fit lighting that the condition
does not drive). Initialised in :meth:`setup_scene` from the clip (``init.py``: face points, sphere fill, mouth
interior; 3DGS's scales; colours from the frames; opacity ``init_opacity``).

Deformation (TalkingGaussian): two branches. Face Gaussians move by a tri-plane hash + MLP field of (canonical
position, condition) -> offsets of position, log-scale and rotation (added to the quaternion, then normalised);
inside-mouth Gaussians (``is_mouth``: those initialised in the mouth cavity, see ``init.py``; their clones and split
children stay in the branch) by a smaller field predicting a position offset only.

Region attention (``supports_regions``; ``regions=[(name, start, stop)]``, e.g. SyncTalk's lip / upper-face codes,
given by the system when the conditioner declares them): the face branch gates each region's condition columns per
Gaussian by sigmoid(MLP_r(tri-plane encoding of its canonical position)) (``deform.py``, fields/region_attention.py),
as TalkingGaussian's face branch gates its audio and expression features. The mouth branch is not gated: as
TalkingGaussian's (whose audio attention there is switched off and has no attention loss), it reads the condition
directly; its Gaussians, all inside the mouth, carry gate magnitude 0. ``region_att`` [F,h,w,n_regions]: each
Gaussian's gate magnitude per region (the mean of the region's gates; 0 for mouth Gaussians) alpha-composited like
its colour (extra colour channels of the same rasterisation pass, over a background of 0), so it is at most ``acc``.
Built without regions, the renderer is exactly the plain one (same parameters, same random draws).

Training: learning rates per group (3DGS's, relative to the system's lr: :meth:`param_groups`); densification and
pruning through the step hook (:meth:`on_train_step`, ``densify.py``), which needs the optimiser:
:meth:`bind_optimizer` (called by the system once its optimiser exists); without a bound optimiser densification is
skipped with one warning. The number of Gaussians changes with densification; a checkpoint's count is restored on
load. Not for DDP (parameters that change size cannot be bucketed), and densification statistics are gathered by
the torch backend only.
"""

from __future__ import annotations

import warnings
import weakref
from typing import ClassVar

import torch
from torch import nn

from lipspace.renderers.base import Outputs, Rasteriser
from lipspace.renderers.gaussian.deform import DeformationField
from lipspace.renderers.gaussian.densify import DensifyConfig, DensifyStats, densify_and_prune, reset_opacity
from lipspace.renderers.gaussian.init import init_colours, init_log_scales, init_points
from lipspace.renderers.gaussian.projection import project_gaussians
from lipspace.renderers.gaussian.rasterise import rasterise
from lipspace.utils.errors import LipspaceError

PARAMS = ("means", "log_scales", "quats", "colour_logits", "opacity_logits")
# 3DGS's rates (position 1.6e-4 x scene extent, scaling 5e-3, rotation 1e-3, feature 2.5e-3, opacity 5e-2) and
# TalkingGaussian-like motion-field rates (hash grid 1e-2, MLP 5e-4), divided by the paper base lr 5e-4
LR_SCALE = {"means": 0.32, "log_scales": 10.0, "quats": 2.0, "colour_logits": 5.0, "opacity_logits": 100.0,
            "grid": 20.0, "mlp": 1.0}


MOUTH_DEFORM = {"hidden": 32, "layers": 2, "n_levels": 8}  # the inside-mouth branch: a smaller field


def _logit(p: float) -> float:
    return float(torch.logit(torch.tensor(p)))


class GaussianRenderer(Rasteriser):
    """See the module docstring. ``render(batch, cond [F,C])`` -> rgb [F,h,w,3], acc, depth [F,h,w] (+ region_att
    [F,h,w,n_regions] when built with regions)."""

    supports_regions: ClassVar[bool] = True
    supports_ddp: ClassVar[bool] = False  # densification resizes the parameters

    def __init__(self, cond_dim: int, n_surface: int = 4000, n_fill: int = 2000, n_mouth: int = 500,
                 mouth_depth: float = 0.3, init_opacity: float = 0.1, deform: dict | None = None,
                 mouth_deform: dict | None = None, lr_scale: dict | None = None, densify: dict | None = None,
                 backend: str = "torch", near: float = 0.01, tile: int = 16, seed: int = 0, regions=None,
                 region_att_hidden: int = 32):
        super().__init__(cond_dim)
        self.declare_regions(regions)
        if backend not in ("torch", "gsplat"):
            raise LipspaceError(f"renderer.backend={backend!r}: 'torch' (pure PyTorch) or 'gsplat' (CUDA)")
        self.n_surface, self.n_fill, self.n_mouth, self.mouth_depth = n_surface, n_fill, n_mouth, mouth_depth
        self.init_opacity, self.backend, self.near, self.tile, self.seed = init_opacity, backend, near, tile, seed
        self.lr_scale = {**LR_SCALE, **(lr_scale or {})}
        unknown = set(self.lr_scale) - set(LR_SCALE)
        if unknown:
            raise LipspaceError(f"renderer.lr_scale: unknown groups {sorted(unknown)}; groups: {sorted(LR_SCALE)}")
        self.densify_cfg = DensifyConfig(**(densify or {}))
        att = {"regions": self.regions, "region_att_hidden": region_att_hidden} if self.regions else {}
        self.face_field = DeformationField(cond_dim, 10, **(deform or {}), **att)
        self.mouth_field = DeformationField(cond_dim, 3, **{**MOUTH_DEFORM, **(mouth_deform or {})})
        for name, width in zip(PARAMS, (3, 3, 4, 3, 0)):
            self.register_parameter(name, nn.Parameter(torch.zeros(0, width) if width else torch.zeros(0)))
        self.register_buffer("is_mouth", torch.zeros(0, dtype=torch.bool))
        self.register_buffer("scene_center", torch.zeros(3))
        self.register_buffer("scene_radius", torch.zeros(()))
        self.stats = DensifyStats(0)
        self._optimizer = None  # weakref to the bound optimiser
        self._last: tuple | None = None  # (means2d, radii, visible, hw) of the last training render
        self._warned = False
        self._gen = torch.Generator().manual_seed(seed)

    # -- scene ------------------------------------------------------------------------------------------------
    def setup_scene(self, clip) -> None:
        """Scene sphere (head_bounds) and the initial Gaussians (``init.py``); a no-op for the Gaussians once
        they exist (a loaded checkpoint, or a second call)."""
        center, radius = clip.sphere("head_bounds")
        self.scene_center.copy_(center)
        self.scene_radius.fill_(radius)
        if self.means.shape[0]:
            return
        pts, is_mouth = init_points(clip, self.n_surface, self.n_fill, self.n_mouth, self.mouth_depth, self.seed)
        self.set_gaussians(pts, init_log_scales(pts), init_colours(clip, pts), is_mouth)

    @torch.no_grad()
    def set_gaussians(self, means, log_scales, colours, is_mouth, opacity: float | None = None) -> None:
        """Replace every Gaussian: centres [M,3], log-scales [M,3], colours [M,3] in (0,1), mouth flags [M];
        identity rotations, opacity ``opacity`` (default ``init_opacity``)."""
        dev = self.scene_center.device
        m = len(means)
        quats = torch.zeros(m, 4)
        quats[:, 0] = 1
        op = self.init_opacity if opacity is None else opacity
        values = (means, log_scales, quats, torch.logit(colours.clamp(0.02, 0.98)), torch.full((m,), _logit(op)))
        for name, v in zip(PARAMS, values):
            getattr(self, name).data = v.float().to(dev)
        self.is_mouth = is_mouth.to(dev)
        self.stats.reset(m, dev)

    @property
    def n_gaussians(self) -> int:
        return self.means.shape[0]

    def extra_repr(self) -> str:
        return f"gaussians={self.n_gaussians} (mouth {int(self.is_mouth.sum())}), backend={self.backend}"

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the checkpoint's Gaussian count (densification changed it): resize before loading
        for name in (*PARAMS, "is_mouth"):
            saved = state_dict.get(prefix + name)
            if saved is not None and getattr(self, name).shape != saved.shape:
                getattr(self, name).data = torch.empty_like(saved, device=self.scene_center.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.stats.reset(self.n_gaussians, self.scene_center.device)

    # -- the Gaussians of each frame --------------------------------------------------------------------------
    def deformed(self, cond: torch.Tensor | None, n_frames: int, gates: bool = False):
        """Per-frame centres, log-scales, quaternions [F,N,*] under ``cond`` [F,C]; with ``gates`` also each
        Gaussian's region gate magnitudes [N, n_regions] (0 for mouth Gaussians; None without regions)."""
        if self.n_gaussians == 0 or float(self.scene_radius) <= 0:
            raise LipspaceError("GaussianRenderer: no Gaussians yet; setup_scene(clip) initialises them from the "
                                "dataset (the train task does this)")
        x01 = ((self.means.detach() - self.scene_center) / (2 * self.scene_radius) + 0.5).clamp(0, 1)
        off = self.means.new_zeros(n_frames, self.n_gaussians, 10)
        mags = self.means.new_zeros(self.n_gaussians, len(self.regions)) if self.regions else None
        face = (~self.is_mouth).nonzero().squeeze(1)
        mouth = self.is_mouth.nonzero().squeeze(1)
        if len(face):
            f_off = self.face_field(x01[face], cond, n_frames)
            if self.regions:
                f_off, f_mags = f_off
                mags = mags.index_copy(0, face, f_mags)
            off = off.index_copy(1, face, f_off)
        if len(mouth):
            m = self.mouth_field(x01[mouth], cond, n_frames)
            off = off.index_copy(1, mouth, torch.cat([m, m.new_zeros(*m.shape[:2], 7)], -1))
        out = self.means + off[..., :3], self.log_scales + off[..., 3:6], self.quats + off[..., 6:]
        return (*out, mags) if gates else out

    def _draw(self, pose, intrinsics, hw, bg, cond) -> Outputs:
        if cond is not None and cond.shape[-1] != self.cond_dim:
            raise LipspaceError(f"GaussianRenderer built for cond_dim={self.cond_dim}, got {tuple(cond.shape)}")
        f = pose.shape[0]
        means, log_scales, quats, mags = self.deformed(cond, f, gates=True)
        colours, opac = torch.sigmoid(self.colour_logits), torch.sigmoid(self.opacity_logits)
        if mags is not None:  # the gate magnitudes ride along as extra colour channels, over a background of 0
            colours = torch.cat([colours, mags], -1)
            if bg is not None:
                bg = torch.cat([bg, bg.new_zeros(*bg.shape[:-1], mags.shape[-1])], -1)
        if self.backend == "gsplat":
            from lipspace.renderers.gaussian.gsplat_backend import rasterise_gsplat

            out = rasterise_gsplat(means, log_scales, quats, colours, opac, pose, intrinsics, hw, bg, self.near)
        else:
            p = project_gaussians(means, log_scales, quats, pose, intrinsics, hw=hw, near=self.near)
            if self.training and torch.is_grad_enabled():
                p.means2d.retain_grad()
                self._last = (p.means2d, p.radii, p.visible, hw)
            out = rasterise(p.means2d, p.cov2d, p.depths, colours, opac, p.visible, hw, bg, self.tile)
        res = {"rgb": out["rgb"], "acc": out["alpha"], "depth": out["depth"]}
        if mags is not None:
            res["rgb"], res["region_att"] = out["rgb"][..., :3], out["rgb"][..., 3:]
        return res

    def render(self, batch: dict, cond: torch.Tensor) -> Outputs:
        dev = self.means.device
        return self._draw(batch["pose"].to(dev), batch["intrinsics"].to(dev), tuple(batch["hw"]),
                          batch["bg"].to(dev), cond)

    @torch.no_grad()
    def render_frame(self, frame: dict, cond: torch.Tensor) -> torch.Tensor:
        dev = self.means.device
        pose, k = frame["pose"].to(dev).reshape(-1, 4, 4)[:1], frame["intrinsics"].to(dev).reshape(-1, 4)[:1]
        bg = frame["bg"].to(dev).reshape(1, *frame["bg"].shape[-3:])
        return self._draw(pose, k, tuple(frame["hw"]), bg, cond[None])["rgb"][0].clamp(0, 1)

    # -- optimisation -----------------------------------------------------------------------------------------
    def param_groups(self, lr: float) -> list[dict]:
        """One group per Gaussian attribute at 3DGS's rate (``lr_scale`` x lr; centres also x the scene radius),
        the hash tables at ``lr_scale.grid`` x lr, the deformation MLPs last at ``lr_scale.mlp`` x lr (the system
        adds the conditioner's parameters to that last group)."""
        s = self.lr_scale
        groups = [{"params": [self.means], "lr": lr * s["means"] * float(self.scene_radius or 1.0), "name": "means"}]
        groups += [{"params": [getattr(self, n)], "lr": lr * s[n], "name": n} for n in PARAMS[1:]]
        fields = list(self.face_field.named_parameters()) + list(self.mouth_field.named_parameters())
        groups.append({"params": [p for n, p in fields if n.endswith("table")], "lr": lr * s["grid"],
                       "name": "grid"})
        groups.append({"params": [p for n, p in fields if not n.endswith("table")], "lr": lr * s["mlp"],
                       "name": "mlp"})
        return groups

    def bind_optimizer(self, optimizer) -> None:
        """The optimiser that holds this renderer's parameters (densification re-indexes its per-row state)."""
        self._optimizer = weakref.ref(optimizer)

    @property
    def optimizer(self):
        return None if self._optimizer is None else self._optimizer()

    def on_train_step(self, step: int) -> None:
        """Gather the last step's view-space gradients, then densify / prune / reset opacity on 3DGS's schedule."""
        if self._last is not None:
            self.stats.add(*self._last)
            self._last = None
        cfg = self.densify_cfg
        if not cfg.enabled or not self.training or step <= 0 or step > cfg.stop or self.n_gaussians == 0:
            return
        densify_now = step >= cfg.start and step % cfg.every == 0
        reset_now = cfg.reset_opacity_every > 0 and step % cfg.reset_opacity_every == 0
        if not (densify_now or reset_now):
            return
        if self.optimizer is None:
            if not self._warned:
                warnings.warn("GaussianRenderer: no optimiser bound (bind_optimizer), so densification and opacity "
                              "reset are skipped; the Gaussian count stays fixed", stacklevel=2)
                self._warned = True
            return
        if densify_now:
            rows = {n: getattr(self, n) for n in PARAMS}
            rows["is_mouth"] = self.is_mouth
            self.last_densify = densify_and_prune(
                rows, self.stats, cfg, float(self.scene_radius), self.optimizer, self._gen,
                screen_prune=cfg.reset_opacity_every > 0 and step > cfg.reset_opacity_every)
        if reset_now:
            reset_opacity(self.opacity_logits, self.optimizer)

    def __getstate__(self):  # the optimiser reference and the last render do not pickle
        state = self.__dict__.copy()
        state["_optimizer"], state["_last"] = None, None
        return state
