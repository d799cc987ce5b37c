"""A field wrapper for torso=deform (SSP-NeRF): the wrapped field reads each sample point moved by the torso
deformation module and, optionally, the structured 3-D latent codes at that point.

The per-ray scene information the deformation needs (the ray's frame and head pose) travels as the condition's last
``SCENE_COLUMNS`` columns, which the compositing renderer (lipspace.renderers.deform.TorsoDeform) appends: so the
head renderer (NeRFRenderer, TriPlaneRenderer) slices, chunks and gathers it per point exactly as it does the rest of
the condition, and needs to know nothing about it. The wrapper splits those columns off, asks the scene module the
compositing renderer attached (:meth:`SceneField.attach`) for the moved points and their point features, and calls
the wrapped field with the conditioner's columns only.

Both field layouts are served: MLPField's points [R,S,3] (the scene columns broadcast along each ray) and
TriPlaneField's kept points [N,3] with their ray index (the columns gathered per point).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lipspace.utils.errors import LipspaceError

SCENE_COLUMNS = 7  # the ray's frame index, then its standardised head pose (3 Euler angles + translation)


class SceneField(nn.Module):
    """``inner`` (a field factory, e.g. MLPField's partial) built at ``cond_dim - SCENE_COLUMNS`` with
    ``point_features`` (the structured codes' width; 0 = none) and the regions; its outputs are the inner field's.
    Declares the inner field's ``hidden``, ``semantic_classes`` and ``point_features``."""

    def __init__(self, inner: Callable[..., nn.Module], cond_dim: int, point_features: int = 0, regions=None):
        super().__init__()
        if cond_dim < SCENE_COLUMNS:
            raise LipspaceError(f"SceneField needs the condition's {SCENE_COLUMNS} scene columns (torso=deform's "
                                f"TorsoDeform appends them), got cond_dim={cond_dim}")
        kwargs = {"regions": regions} if regions else {}
        if point_features:
            kwargs["point_features"] = int(point_features)
        self.inner = inner(cond_dim=cond_dim - SCENE_COLUMNS, **kwargs)
        self.cond_dim = cond_dim
        self.hidden, self.semantic_classes = self.inner.hidden, self.inner.semantic_classes
        self.point_features = int(point_features)
        self._scene: tuple = ()  # the scene module, kept out of the module tree (its owner holds its parameters)

    def attach(self, scene: nn.Module) -> None:
        """The scene module ``scene(points, columns [.., SCENE_COLUMNS]) -> (moved points, point features or
        None)`` (lipspace.renderers.deform.SceneDeformation); its parameters belong to the renderer that calls
        this."""
        if bool(self.point_features) != bool(scene.code_dim):
            raise LipspaceError(f"SceneField built with point_features={self.point_features}, the scene module gives "
                                f"{scene.code_dim}: set both from torso.composite.latent_codes")
        self._scene = (scene,)

    def _scene_module(self) -> nn.Module:
        if not self._scene:
            raise LipspaceError("SceneField: no scene module attached (torso=deform's TorsoDeform attaches it; build "
                                "the renderer through lipspace.model.build.build_renderer)")
        return self._scene[0]

    def forward(self, x: torch.Tensor, d: torch.Tensor, c: torch.Tensor, *ray_idx: torch.Tensor):
        """As the inner field, with c [R, cond_dim] whose last SCENE_COLUMNS are the scene's: MLPField's layout
        ``(x [R,S,3], d, c)`` or TriPlaneField's ``(x [N,3], d, c, ray_idx [N])``."""
        c, columns = c[:, :-SCENE_COLUMNS], c[:, -SCENE_COLUMNS:]
        if not ray_idx:
            return self._call(x, d, c, columns[:, None, :].expand(*x.shape[:-1], SCENE_COLUMNS))
        ray_idx = ray_idx[0]
        moved = self._scene_module().moving(x)
        if moved is None or len(moved) in (0, len(x)):
            return self._call(x, d, c, columns.index_select(0, ray_idx), ray_idx)
        # the points the module may move need a gradient for their position, which the hash encoding computes on
        # its eager path only: the others (most: the head's sphere) go through the field separately, on its fast path
        mask = torch.ones(len(x), dtype=torch.bool, device=x.device)
        mask[moved] = False
        still = torch.nonzero(mask).squeeze(1)
        parts = [self._call(x.index_select(0, idx), d, c, columns.index_select(0, ray_idx.index_select(0, idx)),
                            ray_idx.index_select(0, idx)) for idx in (still, moved)]
        return tuple(a.new_empty((len(x), *a.shape[1:])).index_copy(0, still, a).index_copy(0, moved, b)
                     for a, b in zip(*parts))

    def _call(self, x, d, c, per_point, *ray_idx):
        """The inner field at the points moved by the scene module under their scene columns ``per_point``."""
        x, feats = self._scene_module()(x, per_point)
        extra = {} if feats is None else {"point_feats": feats}
        return self.inner(x, d, c, *ray_idx, **extra)

    def max_density(self, x01: torch.Tensor, conds: torch.Tensor | None) -> torch.Tensor:
        """TriPlaneField's occupancy query: sigma [N] at x01 [N,3], the maximum over conditions conds [K, cond_dim],
        each moving the points by its own scene columns."""
        if conds is None:
            raise LipspaceError("SceneField.max_density needs the conditions (their scene columns)")
        scene, out = self._scene_module(), None
        for row in conds:
            x, feats = scene(x01, row[-SCENE_COLUMNS:].expand(len(x01), SCENE_COLUMNS))
            s = self.inner.max_density(x, row[None, :-SCENE_COLUMNS] if self.inner.cond_dim else None, feats)
            out = s if out is None else torch.maximum(out, s)
        return out
