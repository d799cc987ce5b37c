"""The renderer contract: what every renderer declares and may provide. The system, the tasks and the data module
call these members; they never probe a renderer for what it supports."""

from __future__ import annotations

import abc
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import ClassVar

import torch
from torch import nn

from lipspace.utils.errors import LipspaceError

Outputs = dict[str, torch.Tensor]
ChunkLoss = Callable[[Outputs, slice], torch.Tensor]
BATCH_KINDS = ("rays", "images")


class Renderer(nn.Module, abc.ABC):
    """Base of every renderer. Two families, as threestudio splits them: :class:`VolumeRenderer` (rays marched
    through a field) and :class:`Rasteriser` (whole cameras drawn at once, e.g. Gaussian splatting).

    Construction: ``Renderer(cond_dim=..., **config)`` (the system builds it from a partial at the conditioner's
    width); a renderer with ``supports_regions`` also takes ``regions`` (see below).

    Declared by every renderer (class attributes, read by the system and the data module):

    - ``batch_kind``: which training batches the data module makes for it.
      ``"rays"`` (default): random pixels of a few frames, flat per-ray tensors ``rays_o, rays_d [R,3], near, far
      [R], bg, target [R,3], ray_class [R]``, ``ray_frame [R]`` (the ray's frame in the batch) and ``pose [F,4,4]``
      (each frame's head -> camera pose; a whole frame, ``frame_rays``, carries its ``pose [4,4]``); the condition
      passed to :meth:`render` is one per ray, ``cond [R,C]``.
      ``"images"``: whole frames with their cameras, ``pose [F,4,4]`` (head -> camera), ``intrinsics [F,4]`` (fx, fy,
      cx, cy at the batch's resolution), ``target, bg [F,h,w,3]``, ``ray_class [F,h,w]`` (each pixel's parsing
      class), ``hw``; the condition is one per frame, ``cond [F,C]``.
      Both carry ``frame_idx [F]`` and the conditioner ``inputs``.
    - ``supports_fused_backward``: it implements :meth:`forward_backward` (ray renderers only); the system then
      trains with manual optimisation when ``model.train_chunk_rays`` is set.
    - ``supports_regions``: it implements region attention (SyncTalk's facial-aware masking): it takes
      ``regions=[(name, start, stop)]`` (column ranges of the condition) at construction, keeps them, sorted, in
      ``self.regions`` and adds ``region_att`` (and ``region_att_coarse``) [R, n_regions] to its outputs ([F,h,w,
      n_regions] for "images").
    - ``supports_semantic``: it implements SSP-NeRF's implicit portrait parsing (ray renderers only): built with a
      field of ``semantic_classes`` K > 0 it sets ``self.semantic_classes = K`` and adds ``semantic`` (and
      ``semantic_coarse``) [R, K] logits, composited with the colour's weights, to its outputs (the system's
      cross-entropy against ``ray_class``, ``model.semantic_weight``), and :meth:`render_parsing` draws the class map
      of a whole frame. ``self.semantic_classes`` is 0 when the branch is off (always, without the declaration).
    - ``supports_ddp``: its parameters keep their shapes during training, so DDP can bucket and all-reduce them
      (default). False (Gaussian densification resizes them; each rank would densify differently): one process
      only, and the train task refuses a multi-process trainer (``trainer=ddp``) before building anything.

    Required: :meth:`render` (training) and :meth:`render_frame` (validation). Optional, with no-op defaults:
    :meth:`param_groups` (nerfstudio's ``get_param_groups``), :meth:`on_train_step` (the one per-step hook, as
    threestudio's ``Updateable`` / nerfstudio's training callbacks: occupancy refresh, densify / prune),
    :meth:`setup_scene` (scene bounds from the dataset, before training or loading a checkpoint), :meth:`bind_optimizer`
    (the system's optimiser, for renderers that resize their parameters).
    """

    batch_kind: ClassVar[str] = "rays"
    supports_fused_backward: ClassVar[bool] = False
    supports_regions: ClassVar[bool] = False
    supports_semantic: ClassVar[bool] = False
    supports_ddp: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.batch_kind not in BATCH_KINDS:
            raise TypeError(f"{cls.__name__}.batch_kind={cls.batch_kind!r}: one of {BATCH_KINDS}")
        if cls.supports_fused_backward and cls.batch_kind != "rays":
            raise TypeError(f"{cls.__name__}: supports_fused_backward splits a batch into ray chunks; "
                            "it needs batch_kind='rays'")
        if cls.supports_semantic and cls.batch_kind != "rays":
            raise TypeError(f"{cls.__name__}: supports_semantic renders one class per ray of a ray batch "
                            "(batch['ray_class']); it needs batch_kind='rays'")

    def __init__(self, cond_dim: int):
        super().__init__()
        self.cond_dim = cond_dim
        self.regions: tuple[tuple[str, int, int], ...] = ()
        self.semantic_classes = 0  # parsing classes of the semantic branch (supports_semantic); 0 = off

    def declare_regions(self, regions) -> tuple[tuple[str, int, int], ...]:
        """Keep ``regions`` (``[(name, start, stop)]`` or ``{name: slice}``) checked and sorted by column in
        ``self.regions`` and return them; ``()`` for none. For renderers with ``supports_regions``."""
        if not regions:
            self.regions = ()
            return self.regions
        if not self.supports_regions:
            raise LipspaceError(f"{type(self).__name__} does not implement region attention (supports_regions "
                                "is False); build it without regions")
        from lipspace.renderers.fields.region_attention import normalise_regions

        self.regions = tuple(normalise_regions(regions, self.cond_dim))
        return self.regions

    # -- required -----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def render(self, batch: dict, cond: torch.Tensor) -> Outputs:
        """Training render of one batch of this renderer's ``batch_kind`` under ``cond`` (one row per ray for
        "rays", per frame for "images"). Returns at least ``rgb`` shaped like ``batch["target"]``; may add
        ``rgb_coarse`` (same shape, joins the loss at ``model.coarse_loss_weight``), ``region_att`` and ``acc``
        (the opacity of each ray / pixel: with it the system stops a run that draws nothing, model.dead_field_steps;
        every lipspace renderer returns it)."""

    @abc.abstractmethod
    def render_frame(self, frame: dict, cond: torch.Tensor) -> torch.Tensor:
        """Render one whole frame (validation, evaluation) under one condition ``cond [C]`` -> image [h,w,3] in
        [0, 1]. ``frame`` is what the data module makes for one frame of this batch kind: ``frame_rays`` for
        "rays", ``frame_cameras`` of one frame for "images"."""

    def render_parsing(self, frame: dict, cond: torch.Tensor) -> torch.Tensor:
        """The parsing map of one whole frame (as :meth:`render_frame` takes it): the argmax class [h, w] (int64) of the
        rendered semantic logits. Renderers with ``supports_semantic`` built with ``semantic_classes`` > 0."""
        raise LipspaceError(f"{type(self).__name__} renders no parsing classes (supports_semantic is False)")

    # -- optional, no-op defaults ----------------------------------------------------------------------------
    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser groups of this renderer's parameters (``{"params": [...], "lr": ...}``), for parts that train
        at their own rate; the system adds the conditioner's parameters to the last group. A group may carry
        ``start_step``: its parameters first train at that step (a later training stage) and their rate decays from
        there, over the rest of the run, by the schedule's overall factor. ``[]`` (default): every parameter at
        ``lr``."""
        return []

    def part_opacity(self, out: Outputs, batch: dict) -> dict[str, torch.Tensor]:
        """The opacity of each separately modelled part over the pixels that part must draw, from a training
        :meth:`render`'s ``out`` of ``batch``: ``{name: opacity of those rays / pixels [k]}`` (e.g. a torso NeRF's
        over the torso-class rays). The system logs each one's mean (``train/opacity_<name>``) and stops a run in
        which a part has drawn nothing there for ``model.dead_field_steps`` steps, as it does for ``acc``. Default:
        {} (no part beyond the renderer's own ``acc``)."""
        return {}

    def on_train_step(self, step: int) -> None:
        """Called by the system before every training step with the global step (step-dependent behaviour:
        occupancy refresh, coarse-to-fine, densify / prune). Default: nothing."""

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Called by the system once its optimiser is built (``configure_optimizers``; on resume before the
        optimiser's state is restored): a renderer whose parameters change size during training (Gaussian
        densification and pruning) keeps it to resize the optimiser's state with them. Default: nothing."""

    def setup_scene(self, clip) -> None:
        """Called once the dataset (a :class:`lipspace.data.clip.Clip`) is loaded, before training or loading a
        checkpoint: take what the renderer needs from the scene (bounds, a point cloud). Default: nothing."""

    def forward_backward(self, rays_o, rays_d, near, far, cond, bg, loss_fn: ChunkLoss, chunk_rays: int | None = None,
                         no_sync: Callable[[], AbstractContextManager] | None = None) -> Outputs:
        """Fused training step body for renderers with ``supports_fused_backward``: forward + backward over chunks
        of rays with ``loss_fn(out, slice) -> that chunk's share of the batch loss``, accumulating ``.grad``;
        returns the detached outputs of all rays plus ``loss``. See NeRFRenderer.forward_backward."""
        raise NotImplementedError(f"{type(self).__name__} has no fused forward_backward "
                                  "(supports_fused_backward is False)")


class VolumeRenderer(Renderer):
    """Ray renderers (``batch_kind="rays"``): ``forward(rays_o, rays_d, near, far, cond, bg)`` over flat rays and
    ``render_chunked`` (same arguments, no grad, bounded memory) for whole frames; :meth:`render` and
    :meth:`render_frame` are built on those two."""

    batch_kind: ClassVar[str] = "rays"
    eval_chunk_rays: int = 4096  # rays per chunk of render_chunked

    @abc.abstractmethod
    def forward(self, rays_o, rays_d, near, far, cond, bg) -> Outputs:
        """rays_o / rays_d [R,3] (unit d), near / far [R], cond [R,C], bg [R,3] -> rgb [R,3], depth, acc [R], ..."""

    def render_chunked(self, rays_o, rays_d, near, far, cond, bg, *per_ray) -> Outputs:
        """:meth:`forward` without grad in chunks of ``self.eval_chunk_rays`` rays; ``per_ray``: further per-ray
        tensors a wrapper's forward takes after ``bg`` (e.g. each ray's pose), chunked alike."""
        n, step = rays_o.shape[0], self.eval_chunk_rays
        with torch.no_grad():
            chunks = [self(rays_o[s:s + step], rays_d[s:s + step], near[s:s + step], far[s:s + step],
                           None if cond is None else cond[s:s + step], bg[s:s + step],
                           *(t[s:s + step] for t in per_ray)) for s in range(0, n, step)]
        return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}

    def render(self, batch: dict, cond: torch.Tensor) -> Outputs:
        return self(batch["rays_o"], batch["rays_d"], batch["near"], batch["far"], cond, batch["bg"])

    def _render_whole(self, frame: dict, cond: torch.Tensor) -> Outputs:
        device = cond.device
        n = frame["rays_o"].shape[0]
        return self.render_chunked(frame["rays_o"].to(device), frame["rays_d"].to(device), frame["near"].to(device),
                                   frame["far"].to(device), cond[None].expand(n, -1), frame["bg"].to(device))

    def field_affine(self) -> tuple[torch.Tensor, float]:
        """Where the points this renderer hands its field lie: ``field_x = scale * head_x + offset`` -> (offset [3],
        scale), valid after :meth:`setup_scene`. Default: head space itself. A wrapper that works on the field's
        points (torso=deform's field wrapper) maps head-space geometry through it."""
        return torch.zeros(3), 1.0

    @torch.no_grad()
    def render_frame(self, frame: dict, cond: torch.Tensor) -> torch.Tensor:
        h, w = frame["hw"]
        return self._render_whole(frame, cond)["rgb"].clamp(0, 1).reshape(h, w, 3)

    @torch.no_grad()
    def render_parsing(self, frame: dict, cond: torch.Tensor) -> torch.Tensor:
        if not self.semantic_classes:
            raise LipspaceError(f"{type(self).__name__} was built without the parsing branch: set "
                                "renderer.field.semantic_classes (e.g. 10, the PARSING_CLASSES)")
        h, w = frame["hw"]
        return self._render_whole(frame, cond)["semantic"].argmax(-1).reshape(h, w)


class Rasteriser(Renderer):
    """Renderers that draw whole images from a camera (Gaussian splatting: lipspace.renderers.gaussian):
    ``batch_kind="images"``, one condition per frame."""

    batch_kind: ClassVar[str] = "images"
