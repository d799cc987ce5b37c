"""AD-NeRF's torso NeRF as a wrapper of any ray renderer: the head renderer composited over a second NeRF that models
the torso in camera space, composited over the background.

AD-NeRF (Guo et al. 2021, sec. 3.4) renders the torso with a second NeRF in camera space (the torso does not move with
the head), conditioned on the head pose and the audio code; a pixel's colour is the head over the torso over the
background, C = C_head + (1 - A_head) (C_torso + (1 - A_torso) bg). The head renderer already composites its samples
over a per-ray background colour, so the wrapper marches the torso along the same pixel's ray first and hands the
head ``C_torso + (1 - A_torso) bg`` as that ray's background: every output of the head (coarse pass, region attention,
parsing logits, depth, acc) keeps its meaning, and the head's colour carries the formula above.

The torso is marched in camera space: a head-space ray maps by the frame's pose (``X_cam = R X_head + t``, the
dataset schema's convention), which the ray batches carry (``pose [F,4,4]`` + ``ray_frame``; ``pose [4,4]`` of a
whole frame). Its samples lie where the ray crosses the scene's ``bounds`` sphere (head, neck and visible torso: the
same distances in head and camera space), taken in camera space and normalised to [-1, 1]^3 by the camera-space box
around that sphere over every frame's head pose (``setup_scene``); a ray that misses the sphere sees no torso. Its
condition is the head pose (the rotation relative to the clip's mean rotation as three Euler angles and the
translation, each standardised over the clip's frames, positionally encoded) and, unless ``torso_code=False``, the
conditioner's code (detached by default, so that the torso does not pull the code the head is conditioned on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from lipspace.data.rays import sphere_near_far
from lipspace.renderers.base import Outputs, Renderer, VolumeRenderer
from lipspace.renderers.encodings import PositionalEncoding
from lipspace.renderers.volume import composite_real, stratified_samples
from lipspace.utils.errors import LipspaceError

POSE_FEATURES = 6  # three Euler angles + translation


def rays_to_camera(rays_o: torch.Tensor, rays_d: torch.Tensor, pose: torch.Tensor):
    """Head-space rays [R,3] -> camera-space rays by each ray's head -> camera ``pose`` [R,4,4] (or [R,3,4]):
    ``o_cam = R o + t``, ``d_cam = R d`` (unit directions stay unit)."""
    rot, trans = pose[:, :3, :3], pose[:, :3, 3]
    return torch.einsum("rij,rj->ri", rot, rays_o) + trans, torch.einsum("rij,rj->ri", rot, rays_d)


def euler_angles(rot: torch.Tensor) -> torch.Tensor:
    """[...,3,3] rotations R = Rz(roll) Ry(yaw) Rx(pitch) -> [..., 3] (pitch, yaw, roll) in radians."""
    pitch = torch.atan2(rot[..., 2, 1], rot[..., 2, 2])
    yaw = -torch.asin(rot[..., 2, 0].clamp(-1.0, 1.0))
    roll = torch.atan2(rot[..., 1, 0], rot[..., 0, 0])
    return torch.stack([pitch, yaw, roll], -1)


def mean_rotation(rot: torch.Tensor) -> torch.Tensor:
    """The rotation nearest (Frobenius) to the mean of rotations [N,3,3]."""
    u, _, vh = torch.linalg.svd(rot.double().mean(0))
    d = torch.sign(torch.det(u @ vh))
    return (u @ torch.diag(torch.stack([d.new_ones(()), d.new_ones(()), d])) @ vh).float()


def standardised_pose(pose: torch.Tensor, rot: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """[R,6] head pose features of head -> camera ``pose`` [R,4,4]: the Euler angles of the rotation relative to
    ``rot`` (the clip's mean rotation) and the translation, minus ``mean`` over ``scale`` (pose_normalisation)."""
    rel = torch.einsum("ji,rjk->rik", rot, pose[:, :3, :3])
    return (torch.cat([euler_angles(rel), pose[:, :3, 3]], -1) - mean) / scale


def pose_normalisation(poses: torch.Tensor, radius: float):
    """(mean rotation [3,3], feature mean [6], feature spread [6]) of a clip's head -> camera ``poses`` [N,4,4], for
    :func:`standardised_pose`; spreads below 1e-3 rad / 1e-3 ``radius`` (the scene's size) count as constant."""
    rot = mean_rotation(poses[:, :3, :3])
    raw = standardised_pose(poses, rot, torch.zeros(POSE_FEATURES, device=poses.device),
                            torch.ones(POSE_FEATURES, device=poses.device))
    floor = torch.tensor([1e-3] * 3 + [1e-3 * radius] * 3, device=raw.device)
    spread = raw.std(0) if len(raw) > 1 else floor
    return rot, raw.mean(0), torch.maximum(spread, floor)


def wrapped_param_groups(head: Renderer, own: list, own_lr: float | None, lr: float, own_start: int = 0) -> list[dict]:
    """Optimiser groups of a renderer wrapping ``head`` with parameters ``own`` of its own: ``own`` at ``own_lr``
    (when set) first, then the head's groups (all its parameters at ``lr`` when it has none); with ``own_lr`` None,
    ``own`` joins the head's last group, and [] (every parameter at ``lr``) when the head has no groups. ``own_start``
    > 0 (with ``own_lr``): ``own`` first trains at that step, and its rate decays from there (the group's
    ``start_step``, Renderer.param_groups)."""
    groups = head.param_groups(lr)
    if own_lr is not None:
        first = {"params": own, "lr": own_lr} | ({"start_step": int(own_start)} if own_start else {})
        return [first, *(groups or [{"params": list(head.parameters()), "lr": lr}])]
    if not groups:
        return []
    return [*groups[:-1], {**groups[-1], "params": list(groups[-1]["params"]) + own}]


class TorsoNeRF:
    """AD-NeRF's torso NeRF around a head renderer ``self.head``: the part the ray and the image compositors share
    (a mixin of a :class:`Renderer` subclass; ``_init_torso`` in its constructor). It owns the torso field
    (``self.torso``), the head pose's encoding, the torso's sphere, camera-space box and pose normalisation (set from
    the clip by :meth:`setup_scene`), AD-NeRF's two training stages (:meth:`in_head_stage`,
    :meth:`in_frozen_torso_stage`) and :meth:`render_torso`, the torso over a background along head-space rays."""

    head_kind: ClassVar[type[Renderer]] = Renderer  # the head renderers the compositor wraps

    def _init_torso(self, head, torso_field, cond_dim: int, n_samples: int, perturb: bool, pose_freqs: int,
                    torso_code: bool, detach_code: bool, head_stage: float, total_steps: int | None,
                    head_stage_classes, freeze_head: bool, lr: float | None, regions) -> None:
        name = type(self).__name__
        if not isinstance(head, Renderer):
            head = head(cond_dim=cond_dim, regions=regions) if regions else head(cond_dim=cond_dim)
        elif regions and not head.regions:
            raise LipspaceError(f"{name}: a built head renderer must carry the regions itself")
        if not isinstance(head, self.head_kind):
            raise LipspaceError(f"{name} wraps renderers of batch_kind '{self.batch_kind}' ({self.head_kind.__name__});"
                                f" {type(head).__name__} has batch_kind '{head.batch_kind}'")
        if n_samples < 2:
            raise LipspaceError(f"{name} needs n_samples >= 2, got {n_samples}")
        self.head = head
        self.regions, self.semantic_classes = head.regions, head.semantic_classes
        self.n_samples, self.perturb = int(n_samples), perturb
        self.torso_code, self.detach_code = bool(torso_code) and cond_dim > 0, detach_code
        if not 0.0 <= head_stage < 1.0 or (head_stage > 0 and not total_steps):
            raise LipspaceError(f"{name}: head_stage={head_stage} must be in [0, 1), and > 0 needs total_steps "
                                f"(trainer.max_steps), got {total_steps}")
        self.head_steps = round(head_stage * total_steps) if head_stage > 0 else 0
        self.freeze_head, self._step, self.lr = bool(freeze_head), 0, lr
        self.register_buffer("head_stage_classes", torch.as_tensor(list(head_stage_classes), dtype=torch.long),
                             persistent=False)
        self.pose_enc = PositionalEncoding(POSE_FEATURES, pose_freqs)
        self.torso = torso_field(cond_dim=(cond_dim if self.torso_code else 0) + self.pose_enc.out_dim)
        # the torso's sphere (head space), its camera-space box and the head pose's normalisation: setup_scene
        self.register_buffer("sphere_center", torch.zeros(3))
        self.register_buffer("sphere_radius", torch.zeros(()))
        self.register_buffer("box_lo", torch.zeros(3))
        self.register_buffer("box_hi", torch.zeros(3))
        self.register_buffer("pose_rot", torch.eye(3))
        self.register_buffer("pose_mean", torch.zeros(POSE_FEATURES))
        self.register_buffer("pose_scale", torch.ones(POSE_FEATURES))

    # -- scene ----------------------------------------------------------------------------------------------------
    def setup_scene(self, clip) -> None:
        """The head's scene, then the torso's: the dataset's ``bounds`` sphere (head, neck and visible torso; head
        space), the camera-space box around it over every frame's head pose, and the head pose's normalisation."""
        self.head.setup_scene(clip)
        self.set_scene(clip.pose, *clip.sphere("bounds"))

    def set_scene(self, poses: torch.Tensor, center: torch.Tensor, radius: float) -> None:
        """The torso's sphere (``center``, ``radius``: head space), its box and the pose normalisation over head ->
        camera ``poses`` [N,4,4]."""
        poses = poses.float().to(self.box_lo.device)
        self.sphere_center.copy_(center)
        self.sphere_radius.fill_(float(radius))
        centres = torch.einsum("nij,j->ni", poses[:, :3, :3], center.to(poses)) + poses[:, :3, 3]
        self.box_lo.copy_(centres.amin(0) - radius)
        self.box_hi.copy_(centres.amax(0) + radius)
        rot, mean, scale = pose_normalisation(poses, float(radius))
        self.pose_rot.copy_(rot)
        self.pose_mean.copy_(mean)
        self.pose_scale.copy_(scale)

    def pose_features(self, pose: torch.Tensor) -> torch.Tensor:
        """[R,6] standardised head pose of head -> camera ``pose`` [R,4,4]: Euler angles of the rotation relative to
        the clip's mean rotation and the translation, each minus its clip mean over its clip spread."""
        return standardised_pose(pose, self.pose_rot, self.pose_mean, self.pose_scale)

    # -- optimisation and step hook: the head's -------------------------------------------------------------------
    def param_groups(self, lr: float) -> list[dict]:
        """The torso field at its own ``self.lr`` (when set) first, its rate decaying from the torso stage's first
        step (as AD-NeRF trains its torso: a second run from its own initial rate), then the head's groups (all its
        parameters at ``lr`` when it has none); with ``self.lr`` None the torso's parameters join the head's last
        group; [] (every parameter at ``lr``) when neither has a rate of its own."""
        return wrapped_param_groups(self.head, list(self.torso.parameters()), self.lr, lr, own_start=self.head_steps)

    def on_train_step(self, step: int) -> None:
        """The head's step hook; the step also selects AD-NeRF's stage of the next training batch."""
        self._step = int(step)
        self.head.on_train_step(step)

    def in_head_stage(self) -> bool:
        """AD-NeRF's head stage (training only): the head alone over the ground-truth torso pixels."""
        return self.training and self._step < self.head_steps

    def in_frozen_torso_stage(self) -> bool:
        """AD-NeRF's torso stage under a fixed head (training only, after a head stage, with ``freeze_head``)."""
        return self.training and bool(self.head_steps) and self.freeze_head and self._step >= self.head_steps

    def part_opacity(self, out: Outputs, batch: dict) -> dict[str, torch.Tensor]:
        """The torso's opacity (``torso_acc``) over the training rays / pixels of the torso classes
        (``head_stage_classes``): every step the torso is rendered (none in the head stage)."""
        if self.in_head_stage():
            return {}
        torso = torch.isin(batch["ray_class"].to(out["torso_acc"].device).long(), self.head_stage_classes)
        return {"torso": out["torso_acc"][torso]}

    # -- the torso ------------------------------------------------------------------------------------------------
    def render_torso(self, rays_o, rays_d, cond, bg, pose) -> Outputs:
        """The torso NeRF over ``bg`` along head-space rays of frames with head -> camera ``pose`` [R,4,4] ->
        rgb (C_torso + (1 - A_torso) bg) [R,3], acc [R]."""
        if float((self.box_hi - self.box_lo).min()) <= 0:
            raise LipspaceError(f"{type(self).__name__}: the torso box is not set (setup_scene(clip); the train task "
                                "does it)")
        near, far, _ = sphere_near_far(rays_o, rays_d, self.sphere_center, float(self.sphere_radius))
        o, d = rays_to_camera(rays_o, rays_d, pose)
        t_vals = stratified_samples(near, far, self.n_samples + 1, self.perturb and self.training)
        half = 0.5 * (self.box_hi - self.box_lo)
        pts = (o[:, None, :] + d[:, None, :] * t_vals[:, :-1, None] - (self.box_lo + half)) / half
        parts = [self.pose_enc(self.pose_features(pose))]
        if self.torso_code:
            parts.insert(0, cond.detach() if self.detach_code else cond)
        rgb, sigma, *_ = self.torso(pts, d, torch.cat(parts, -1))
        out = composite_real(rgb, sigma, t_vals, bg)
        return {"rgb": out["rgb"], "acc": out["acc"]}


class TorsoComposite(TorsoNeRF, VolumeRenderer):
    """A head ray renderer (any :class:`VolumeRenderer`, built from its partial at the conditioner's width) over
    AD-NeRF's torso NeRF (one stratified pass through a small conditioned field, e.g. MLPField) over the background.

    Declarations: region attention and the parsing branch are the head's (passed through: the regions go to the head;
    ``semantic`` logits are the head's, whose background logit covers torso and background alike); no fused backward.
    ``param_groups``, ``on_train_step`` and ``setup_scene`` forward to the head (the torso's parameters join the
    head's last group; ``setup_scene`` also sets the torso's box and pose normalisation from the clip)."""

    supports_regions: ClassVar[bool] = True
    supports_semantic: ClassVar[bool] = True
    head_kind: ClassVar[type[Renderer]] = VolumeRenderer

    def __init__(self, head: Callable[..., VolumeRenderer] | VolumeRenderer, torso_field: Callable[..., nn.Module],
                 cond_dim: int, n_samples: int = 32, perturb: bool = True, pose_freqs: int = 2,
                 torso_code: bool = True, detach_code: bool = True, head_stage: float = 0.0,
                 total_steps: int | None = None, head_stage_classes=(9,), freeze_head: bool = True,
                 lr: float | None = None, regions=None):
        """``head``: the head renderer's partial (built here with ``cond_dim`` and ``regions``) or a built one;
        ``torso_field``: builds the torso field ``torso_field(cond_dim=...)`` -> module ``(points [R,S,3] in [-1,1],
        dirs [R,3], cond [R,C]) -> (rgb, sigma)``; ``n_samples``: torso samples per ray (+ the background sample);
        ``pose_freqs``: frequencies of the head pose's positional encoding; ``torso_code``: the conditioner's code
        joins the torso's condition (``detach_code``: without a gradient back into the conditioner).

        AD-NeRF's stages: the first ``head_stage`` x ``total_steps`` training steps are its head stage, the head alone
        composited over the ground-truth pixels of ``head_stage_classes`` (9 = torso; each training ray's
        ``ray_class`` and ``target``), as torso=gt trains it; the rest is its torso stage, the torso NeRF trained under
        the head, which is fixed when ``freeze_head`` (no gradient to the head or, with ``detach_code``, the
        conditioner). ``head_stage`` 0: head and torso trained together from the first step. Rendering outside
        training is always the composite. ``lr``: the torso field's learning rate (None: the head's last group's)."""
        super().__init__(cond_dim)
        self._init_torso(head, torso_field, cond_dim, n_samples, perturb, pose_freqs, torso_code, detach_code,
                         head_stage, total_steps, head_stage_classes, freeze_head, lr, regions)
        self.eval_chunk_rays = self.head.eval_chunk_rays

    # -- rendering ------------------------------------------------------------------------------------------------
    def forward(self, rays_o, rays_d, near, far, cond, bg, pose=None) -> Outputs:
        """As every ray renderer, plus each ray's head -> camera ``pose`` [R,4,4] (required): the head's outputs, its
        colours composited over the torso over ``bg``, plus ``torso_acc`` [R] (the torso's opacity)."""
        if pose is None:
            raise LipspaceError("TorsoComposite needs each ray's head pose (batch['pose'] of the data's batches)")
        torso = self.render_torso(rays_o, rays_d, cond, bg, pose)
        out = self.head(rays_o, rays_d, near, far, cond, torso["rgb"])
        out["torso_acc"] = torso["acc"]
        return out

    def render(self, batch: dict, cond: torch.Tensor) -> Outputs:
        """A training batch, in AD-NeRF's stage of the current step (head stage, then torso stage)."""
        rays = (batch["rays_o"], batch["rays_d"], batch["near"], batch["far"], cond)
        if self.in_head_stage():  # the head over the ground-truth torso
            gt = torch.isin(batch["ray_class"].long(), self.head_stage_classes)[:, None]
            return self.head(*rays, torch.where(gt, batch["target"], batch["bg"]))
        pose = batch["pose"][batch["ray_frame"]]
        if not self.in_frozen_torso_stage():
            return self(*rays, batch["bg"], pose)
        # torso stage under the fixed head: its colours over black are its samples' part, 1 - acc what it lets through
        torso = self.render_torso(batch["rays_o"], batch["rays_d"], cond, batch["bg"], pose)
        with torch.no_grad():
            head = self.head(*rays, torch.zeros_like(batch["bg"]))
        out = {k: v for k, v in head.items() if k != "rgb_coarse"}  # the coarse pass is the head's own loss
        out["rgb"] = head["rgb"] + (1 - head["acc"])[:, None] * torso["rgb"]
        out["torso_acc"] = torso["acc"]
        return out

    def _render_whole(self, frame: dict, cond: torch.Tensor) -> Outputs:
        device = cond.device
        n = frame["rays_o"].shape[0]
        pose = frame["pose"].to(device).reshape(-1, 4, 4)[:1].expand(n, 4, 4)
        return self.render_chunked(frame["rays_o"].to(device), frame["rays_d"].to(device), frame["near"].to(device),
                                   frame["far"].to(device), cond[None].expand(n, -1), frame["bg"].to(device), pose)
