"""SSP-NeRF's unified portrait NeRF with its torso deformation module (Liu et al. 2022, sec. 3.4) and structured 3-D
latent codes (sec. 3.3), as a wrapper of any ray renderer whose field is wrapped by SceneField (torso=deform).

One NeRF, in head space, models the whole portrait (head, neck, torso: data.bounds=bounds, nothing pasted). The
torso does not move rigidly with the head, so before the field reads a sample point ``x`` the deformation module
moves it to where that part of the torso sits in the canonical frame,

    x' = x + g(x) F(gamma_10(x), gamma_4(t), p_h(t), p_c(t))

with ``t`` the frame's time in the clip (in [0, 1], positionally encoded with 4 frequencies as the paper), ``p_h`` the
frame's head pose (three Euler angles relative to the clip's mean rotation and the translation, standardised over the
clip) and ``p_c`` a learnt code per frame (zeros at start; frames never trained on, e.g. a held-out tail, keep
zeros). F is a small MLP whose last layer starts at zero (the identity), its output bounded by ``max_offset`` head
units (tanh). ``g`` is our choice, not the paper's: a gate that is exactly 0 inside the head's sphere (the dataset's
``head_bounds``: head and neck, which follow the head pose exactly) and rises to 1 (smoothstep) over ``gate_width`` of
its radius outside it (the network runs only where g > 0: measured 3.2x the training time of deform=false when it
ran on every point), so that the per-frame inputs (t, p_c) cannot move the face and carry a frame's mouth shape past
the conditioner (an audio-driven render has no such frame). ``gate=false`` deforms every point.

With ``latent_codes`` > 0, the field also reads SSP-NeRF's structured latent codes at the moved point
(lipspace.renderers.structured_codes: point-based interpolation of codes on the fitted 3DMM's vertices).
``deform=false`` keeps the unified NeRF without the module (SSP-NeRF's "w/o deformation" ablation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from lipspace.renderers.base import Outputs, Renderer, VolumeRenderer
from lipspace.renderers.encodings import PositionalEncoding
from lipspace.renderers.fields.scene import SCENE_COLUMNS, SceneField
from lipspace.renderers.structured_codes import StructuredCodes
from lipspace.renderers.torso import POSE_FEATURES, pose_normalisation, standardised_pose, wrapped_param_groups
from lipspace.utils.errors import LipspaceError


class SceneDeformation(nn.Module):
    """The deformation F and the structured codes, working on the field's points: ``(x [...,3] in the field's
    coordinates, columns [..., SCENE_COLUMNS]) -> (x', point features [..., code_dim] or None)``."""

    def __init__(self, deform: bool = True, hidden: int = 64, n_layers: int = 4, pos_freqs: int = 10,
                 time_freqs: int = 4, frame_code: int = 8, max_offset: float = 0.5, gate: bool = True,
                 gate_width: float = 0.1, latent_codes: int = 0, code_neighbours: int = 8, code_spread: float = 2.0):
        super().__init__()
        self.deform, self.gate, self.gate_width, self.max_offset = bool(deform), bool(gate), gate_width, max_offset
        self.frame_code, self.code_dim = int(frame_code) if deform else 0, int(latent_codes)
        self.pos_enc, self.time_enc = PositionalEncoding(3, pos_freqs), PositionalEncoding(1, time_freqs)
        self.net = None
        if self.deform:
            width = self.pos_enc.out_dim + self.time_enc.out_dim + POSE_FEATURES + self.frame_code
            layers: list[nn.Module] = []
            for i in range(n_layers - 1):
                layers += [nn.Linear(width if i == 0 else hidden, hidden), nn.ReLU(inplace=True)]
            layers.append(nn.Linear(hidden if n_layers > 1 else width, 3))
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
            self.net = nn.Sequential(*layers)
        self.codes = StructuredCodes(self.code_dim, code_neighbours, code_spread) if self.code_dim else None
        self.frame_codes = nn.Parameter(torch.zeros(0, self.frame_code))
        for name, value in (("n_frames", torch.zeros(())), ("offset", torch.zeros(3)), ("scale", torch.ones(())),
                            ("head_center", torch.zeros(3)), ("head_radius", torch.zeros(()))):
            self.register_buffer(name, value)

    def set_scene(self, n_frames: int, head_sphere, affine, face_points: torch.Tensor | None) -> None:
        """The clip's frame count (time and frame codes), its head sphere (head space), the field's coordinates
        (``field_x = scale * head_x + offset``) and the anchors of the structured codes (``face_points`` [N,P,3])."""
        dev = self.scale.device
        self.n_frames.fill_(float(n_frames))
        self.head_center.copy_(torch.as_tensor(head_sphere[0], dtype=torch.float32))
        self.head_radius.fill_(float(head_sphere[1]))
        self.offset.copy_(torch.as_tensor(affine[0], dtype=torch.float32))
        self.scale.fill_(float(affine[1]))
        if self.frame_code and len(self.frame_codes) != n_frames:
            self.frame_codes = nn.Parameter(torch.zeros(n_frames, self.frame_code, device=dev))
        if self.codes is not None:
            if face_points is None:
                raise LipspaceError("torso.composite.latent_codes > 0 needs the dataset's face_points track (the "
                                    "fitted 3DMM's vertices): re-run lipspace-prep (or lipspace-synth) with this "
                                    "version, or set torso.composite.latent_codes=0")
            self.codes.set_anchors(face_points.float().mean(0), torch.Generator().manual_seed(0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        codes = state_dict.get(f"{prefix}frame_codes")
        if codes is not None and codes.shape != self.frame_codes.shape:
            self.frame_codes = nn.Parameter(torch.empty_like(codes, device=self.scale.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def gate_weight(self, x_head: torch.Tensor) -> torch.Tensor:
        """g(x) [...]: 0 inside the head's sphere, smoothstep to 1 over ``gate_width`` of its radius outside it."""
        outside = (x_head - self.head_center).norm(dim=-1) - self.head_radius
        t = (outside / (self.gate_width * self.head_radius)).clamp(0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)

    def offsets(self, x_head: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """The deformation g(x) Delta x [..., 3] (head units) at head-space points under their scene columns; with
        the gate, the network runs only on the points outside the head's sphere (the others do not move)."""
        shape = x_head.shape
        x_head, columns = x_head.reshape(-1, 3), columns.reshape(-1, columns.shape[-1])
        if not self.gate:
            return self._delta(x_head, columns).reshape(shape)
        g = self.gate_weight(x_head)
        moved = torch.nonzero(g > 0).squeeze(1)
        delta = x_head.new_zeros(x_head.shape)
        if len(moved):
            part = self._delta(x_head.index_select(0, moved), columns.index_select(0, moved))
            delta = delta.index_copy(0, moved, part * g.index_select(0, moved)[:, None])
        return delta.reshape(shape)

    def _delta(self, x_head: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        frame = columns[:, 0].round().long().clamp(0, max(int(self.n_frames) - 1, 0))
        t = frame.float() / max(float(self.n_frames) - 1, 1.0)
        parts = [self.pos_enc(x_head), self.time_enc(t[:, None]), columns[:, 1:]]
        if self.frame_code:
            parts.append(self.frame_codes[frame])
        return self.max_offset * torch.tanh(self.net(torch.cat(parts, -1)))

    def moving(self, x: torch.Tensor) -> torch.Tensor | None:
        """Indices of the points [N,3] (the field's coordinates) the module may move (outside the head's sphere);
        None when it may move any (no gate) or none can move (no deformation network): nothing to split."""
        if self.net is None or not self.gate:
            return None
        return torch.nonzero(self.gate_weight((x.reshape(-1, 3) - self.offset) / float(self.scale)) > 0).squeeze(1)

    def forward(self, x: torch.Tensor, columns: torch.Tensor):
        scale = float(self.scale)
        x_head = (x - self.offset) / scale
        if self.net is not None:
            x_head = x_head + self.offsets(x_head, columns)
            x = x_head * scale + self.offset
        return x, None if self.codes is None else self.codes(x_head)


class TorsoDeform(VolumeRenderer):
    """A head ray renderer whose field is a :class:`SceneField` (built here at the conditioner's width +
    SCENE_COLUMNS), the scene module attached to its fields, the scene columns (frame, standardised head pose)
    appended to every ray's condition. Declarations: the head's region attention and parsing branch pass through;
    ``param_groups``, ``on_train_step``: the head's, the scene module's parameters joining the last group (or at
    their own ``lr``)."""

    supports_regions: ClassVar[bool] = True
    supports_semantic: ClassVar[bool] = True

    def __init__(self, head: Callable[..., VolumeRenderer] | VolumeRenderer, cond_dim: int, lr: float | None = None,
                 regions=None, **scene):
        """``head``: the head renderer's partial (its ``field`` wrapped by SceneField: model.build.build_renderer
        does it for torso=deform); ``scene``: SceneDeformation's options; ``lr``: their learning rate (None: the
        head's last group's)."""
        super().__init__(cond_dim)
        if isinstance(head, Renderer):
            raise LipspaceError("TorsoDeform builds its head renderer (a partial) at the widened condition")
        kwargs = {"regions": regions} if regions else {}
        head = head(cond_dim=cond_dim + SCENE_COLUMNS, **kwargs)
        if not isinstance(head, VolumeRenderer):
            raise LipspaceError(f"torso=deform wraps ray renderers (VolumeRenderer); {type(head).__name__} draws "
                                "whole images")
        fields = [m for m in head.modules() if isinstance(m, SceneField)]
        if not fields:
            raise LipspaceError("torso=deform: the head renderer's field is not a SceneField (build it through "
                                "lipspace.model.build.build_renderer, which wraps renderer.field)")
        self.head, self.scene, self.lr = head, SceneDeformation(**scene), lr
        for f in fields:
            f.attach(self.scene)
        self.regions, self.semantic_classes = head.regions, head.semantic_classes
        self.eval_chunk_rays = head.eval_chunk_rays
        self.register_buffer("pose_rot", torch.eye(3))
        self.register_buffer("pose_mean", torch.zeros(POSE_FEATURES))
        self.register_buffer("pose_scale", torch.ones(POSE_FEATURES))

    def setup_scene(self, clip) -> None:
        self.head.setup_scene(clip)
        center, radius = clip.sphere("bounds")
        rot, mean, scale = pose_normalisation(clip.pose.float(), float(radius))
        self.pose_rot.copy_(rot)
        self.pose_mean.copy_(mean)
        self.pose_scale.copy_(scale)
        self.scene.set_scene(clip.n_frames, clip.sphere("head_bounds"), self.head.field_affine(), clip.face_points)

    def param_groups(self, lr: float) -> list[dict]:
        return wrapped_param_groups(self.head, list(self.scene.parameters()), self.lr, lr)

    def on_train_step(self, step: int) -> None:
        self.head.on_train_step(step)

    def columns(self, frame: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """[R, SCENE_COLUMNS]: each ray's frame index and standardised head pose (head -> camera ``pose`` [R,4,4])."""
        pose_feats = standardised_pose(pose.float(), self.pose_rot, self.pose_mean, self.pose_scale)
        return torch.cat([frame.to(pose_feats).reshape(-1, 1), pose_feats], -1)

    def forward(self, rays_o, rays_d, near, far, cond, bg, frame=None, pose=None) -> Outputs:
        """As every ray renderer, plus each ray's frame index ``frame`` [R] and head -> camera ``pose`` [R,4,4]."""
        if frame is None or pose is None:
            raise LipspaceError("TorsoDeform needs each ray's frame and head pose (batch['frame_idx'], batch['pose'])")
        scene = self.columns(frame, pose)
        cond = scene if cond is None else torch.cat([cond, scene], -1)
        return self.head(rays_o, rays_d, near, far, cond, bg)

    def render(self, batch: dict, cond: torch.Tensor) -> Outputs:
        rf = batch["ray_frame"]
        return self(batch["rays_o"], batch["rays_d"], batch["near"], batch["far"], cond, batch["bg"],
                    batch["frame_idx"][rf], batch["pose"][rf])

    def _render_whole(self, frame: dict, cond: torch.Tensor) -> Outputs:
        device = cond.device
        n = frame["rays_o"].shape[0]
        pose = frame["pose"].to(device).reshape(-1, 4, 4)[:1].expand(n, 4, 4)
        idx = torch.as_tensor(frame["frame"], device=device).reshape(1).expand(n)
        return self.render_chunked(frame["rays_o"].to(device), frame["rays_d"].to(device), frame["near"].to(device),
                                   frame["far"].to(device), cond[None].expand(n, -1), frame["bg"].to(device), idx,
                                   pose)
