"""TorsoComposite (AD-NeRF's torso NeRF under a head renderer): the compositing formula on known fields, the
camera-space rays, the torso box, the pose features and what the wrapper keeps of the head's declarations."""

import functools
import math

import pytest
import torch
from torch import nn

from lipspace.data.rays import camera_rays
from lipspace.renderers import MLPField, NeRFRenderer
from lipspace.renderers.fields.triplane import TriPlaneField
from lipspace.renderers.torso import TorsoComposite, euler_angles, rays_to_camera
from lipspace.renderers.triplane import TriPlaneRenderer
from lipspace.utils.errors import LipspaceError


class ConstField(nn.Module):
    """Colour ``rgb`` and density ``sigma`` everywhere (a known field)."""

    semantic_classes = 0
    hidden = 8

    def __init__(self, cond_dim, rgb=(1.0, 0.0, 0.0), sigma=0.0):
        super().__init__()
        self.cond_dim = cond_dim
        self.rgb, self.sigma = torch.tensor(rgb), sigma
        self.seen_cond = None

    def forward(self, x, d, c):
        assert c is not None and c.shape == (x.shape[0], self.cond_dim)
        self.seen_cond = c
        r, s = x.shape[:2]
        return self.rgb.expand(r, s, 3).clone(), torch.full((r, s), float(self.sigma))


def _rot(yaw, pitch, roll):
    cy, sy, cp, sp, cr, sr = (math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll),
                              math.sin(roll))
    rz = torch.tensor([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1.0]])
    ry = torch.tensor([[cy, 0, sy], [0, 1.0, 0], [-sy, 0, cy]])
    rx = torch.tensor([[1.0, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return rz @ ry @ rx


def _pose(yaw=0.1, pitch=-0.05, roll=0.02, t=(0.1, -0.4, 7.5)):
    p = torch.eye(4)
    p[:3, :3], p[:3, 3] = _rot(yaw, pitch, roll), torch.tensor(t)
    return p


def _composite(head_rgb, head_sigma, torso_rgb, torso_sigma, cond_dim=2):
    head = functools.partial(NeRFRenderer, field=functools.partial(ConstField, rgb=head_rgb, sigma=head_sigma),
                             n_coarse=8, n_fine=0, perturb=False)
    torso = functools.partial(ConstField, rgb=torso_rgb, sigma=torso_sigma)
    r = TorsoComposite(head, torso, cond_dim=cond_dim, n_samples=8, perturb=False)
    poses = torch.stack([_pose(), _pose(yaw=-0.1, t=(0.0, -0.5, 7.7))])
    r.set_scene(poses, torch.zeros(3), 1.5)
    return r.eval(), poses


def _rays(poses, n=6):
    u, v = torch.arange(n).float()[None].expand(len(poses), n), torch.full((len(poses), n), 3.0)
    o, d = camera_rays(poses, torch.tensor([40.0, 40.0, 3.0, 3.0]), u, v)
    return o[0], d[0]


@pytest.mark.parametrize("torso_sigma", [0.0, 0.3, 1e4])
def test_composite_formula_on_known_fields(torso_sigma):
    """C = C_head + (1 - A_head)(C_torso + (1 - A_torso) bg): an opaque head gives the head's colour; a transparent
    head the torso over the background; in between, the formula with the head's and torso's opacities."""
    bg = torch.tensor([0.0, 0.0, 1.0]).expand(6, 3)
    for head_sigma in (0.0, 0.4, 1e4):
        r, poses = _composite((1.0, 0.0, 0.0), head_sigma, (0.0, 1.0, 0.0), torso_sigma)
        o, d = _rays(poses)
        near, far = torch.full((6,), 6.5), torch.full((6,), 8.5)
        pose = poses[:1].expand(6, 4, 4)
        out = r(o, d, near, far, torch.zeros(6, 2), bg, pose)
        a_head, a_torso = out["acc"][:, None], out["torso_acc"][:, None]
        expected = a_head * torch.tensor([1.0, 0, 0]) + (1 - a_head) * (a_torso * torch.tensor([0, 1.0, 0])
                                                                         + (1 - a_torso) * bg)
        assert torch.allclose(out["rgb"], expected, atol=1e-5)
        if head_sigma == 1e4:
            assert torch.allclose(out["rgb"], torch.tensor([1.0, 0, 0]).expand(6, 3), atol=1e-5)
        if head_sigma == 0.0:
            assert torch.allclose(out["acc"], torch.zeros(6))
            torso_over_bg = a_torso * torch.tensor([0, 1.0, 0]) + (1 - a_torso) * bg
            assert torch.allclose(out["rgb"], torso_over_bg, atol=1e-6)
    # the torso's own opacity: every ray crosses its sphere (radius 1.5 about the head origin)
    if torso_sigma == 0.0:
        assert torch.allclose(out["torso_acc"], torch.zeros(6))
    if torso_sigma == 1e4:
        assert torch.allclose(out["torso_acc"], torch.ones(6))


def test_rays_to_camera_match_the_pose():
    """x_cam = R x_head + t: head-space camera rays map to rays from the camera centre along K^-1 [u, v, 1]."""
    pose = _pose(0.3, -0.2, 0.1, (0.2, -0.3, 6.0))[None]
    k = torch.tensor([50.0, 60.0, 12.0, 10.0])
    u, v = torch.tensor([[0.0, 5.0, 23.0]]), torch.tensor([[0.0, 17.0, 9.0]])
    o, d = camera_rays(pose, k, u, v)
    o_cam, d_cam = rays_to_camera(o[0], d[0], pose.expand(3, 4, 4))
    assert torch.allclose(o_cam, torch.zeros(3, 3), atol=1e-5)
    pix = torch.stack([(u[0] + 0.5 - 12.0) / 50.0, (v[0] + 0.5 - 10.0) / 60.0, torch.ones(3)], -1)
    assert torch.allclose(d_cam, pix / pix.norm(dim=-1, keepdim=True), atol=1e-6)
    t = torch.tensor([1.0, 4.5, 9.0])[:, None]
    x_head = o[0] + t * d[0]
    x_cam = x_head @ pose[0, :3, :3].T + pose[0, :3, 3]
    assert torch.allclose(x_cam, o_cam + t * d_cam, atol=1e-5)


def test_euler_angles_invert_the_rotation():
    angles = euler_angles(_rot(0.3, -0.2, 0.1))
    assert torch.allclose(angles, torch.tensor([-0.2, 0.3, 0.1]), atol=1e-6)  # pitch, yaw, roll


def test_scene_box_and_pose_features():
    r, poses = _composite((1.0, 0.0, 0.0), 0.0, (0.0, 1.0, 0.0), 0.0)
    centres = poses[:, :3, 3]  # the bounds sphere is centred on the head origin (radius 1.5)
    assert torch.allclose(r.box_lo, centres.amin(0) - 1.5) and torch.allclose(r.box_hi, centres.amax(0) + 1.5)
    assert float(r.sphere_radius) == 1.5 and torch.equal(r.sphere_center, torch.zeros(3))
    feats = r.pose_features(poses)
    assert torch.allclose(feats.mean(0), torch.zeros(6), atol=1e-5)  # standardised over the clip's frames
    assert torch.allclose(feats[:, 1].abs(), torch.ones(2) * feats[0, 1].abs())  # yaw +-0.1 about the mean
    # the torso's condition: the conditioner's code (detached) and the encoded pose
    o, d = _rays(poses)
    cond = torch.randn(6, 2, requires_grad=True)
    r.train()
    r(o, d, torch.full((6,), 6.5), torch.full((6,), 8.5), cond, torch.zeros(6, 3), poses[:1].expand(6, 4, 4))
    seen = r.torso.seen_cond
    assert seen.shape == (6, 2 + r.pose_enc.out_dim) and torch.equal(seen[:, :2], cond) and not seen.requires_grad


def test_render_takes_each_ray_frames_pose_and_needs_one():
    r, poses = _composite((1.0, 0.0, 0.0), 0.0, (0.0, 1.0, 0.0), 0.5)
    o, d = _rays(poses)
    ray_frame = torch.tensor([0, 0, 0, 1, 1, 1])
    batch = {"rays_o": o, "rays_d": d, "near": torch.full((6,), 6.5), "far": torch.full((6,), 8.5),
             "bg": torch.zeros(6, 3), "pose": poses, "ray_frame": ray_frame}
    out = r.render(batch, torch.zeros(6, 2))
    ref = r(o, d, batch["near"], batch["far"], torch.zeros(6, 2), batch["bg"], poses[ray_frame])
    assert torch.equal(out["rgb"], ref["rgb"])
    frame = {k: batch[k] for k in ("rays_o", "rays_d", "near", "far", "bg")}
    frame.update(pose=poses[1], hw=(2, 3))
    img = r.render_frame(frame, torch.zeros(2))
    ref = r(o, d, batch["near"], batch["far"], torch.zeros(6, 2), batch["bg"], poses[1].expand(6, 4, 4))
    assert torch.allclose(img.reshape(6, 3), ref["rgb"].clamp(0, 1))
    with pytest.raises(LipspaceError, match="head pose"):
        r(o, d, batch["near"], batch["far"], torch.zeros(6, 2), batch["bg"])


def test_unset_scene_is_a_clear_error():
    head = functools.partial(NeRFRenderer, field=ConstField, n_coarse=4, n_fine=0)
    r = TorsoComposite(head, ConstField, cond_dim=2)
    o, d = _rays(torch.stack([_pose()]))
    with pytest.raises(LipspaceError, match="setup_scene"):
        r(o, d, torch.ones(6), torch.ones(6) * 2, torch.zeros(6, 2), torch.zeros(6, 3), _pose().expand(6, 4, 4))


def _triplane_head(**kw):
    field = functools.partial(TriPlaneField, n_levels=2, log2_table=8, base_res=4, finest_res=8, hidden=16,
                              compile_encoding=False, **kw)
    return functools.partial(TriPlaneRenderer, field=field, n_samples=8, lr_grid=0.1, occupancy=None)


def test_declarations_param_groups_and_step_hook():
    torso = functools.partial(MLPField, hidden=16, n_layers=2, pos_freqs=2, dir_freqs=1)
    assert TorsoComposite.batch_kind == "rays" and not TorsoComposite.supports_fused_backward
    # a head with its own groups (hash tables at lr_grid): the torso joins the last one
    r = TorsoComposite(_triplane_head(semantic_classes=10), torso, cond_dim=4,
                       regions=[("lips", 0, 2), ("upper", 2, 4)])
    assert r.regions == r.head.regions == (("lips", 0, 2), ("upper", 2, 4)) and r.semantic_classes == 10
    groups = r.param_groups(1e-3)
    assert len(groups) == 2 and groups[0]["lr"] == 0.1 and groups[1]["lr"] == 1e-3
    ids = {id(p) for g in groups for p in g["params"]}
    assert ids == {id(p) for p in r.parameters()}
    assert {id(p) for p in r.torso.parameters()} <= {id(p) for p in groups[1]["params"]}
    # a head without groups: every parameter at the optimiser's rate
    head = functools.partial(NeRFRenderer, field=functools.partial(MLPField, hidden=8, n_layers=2), n_coarse=4,
                             n_fine=4)
    assert TorsoComposite(head, torso, cond_dim=4).param_groups(1e-3) == []
    # the torso at a rate of its own: its group first, the head's parameters (then the conditioner's) after it
    own = TorsoComposite(head, torso, cond_dim=4, lr=2e-3)
    groups = own.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [2e-3, 1e-3] and len(groups[0]["params"]) == len(list(own.torso.parameters()))
    assert len(groups[1]["params"]) == len(list(own.head.parameters())) and "start_step" not in groups[0]
    # ... after a head stage, its rate decays from the torso stage's first step (AD-NeRF's second run)
    staged = TorsoComposite(head, torso, cond_dim=4, lr=2e-3, head_stage=0.5, total_steps=10)
    assert staged.param_groups(1e-3)[0]["start_step"] == 5 and "start_step" not in staged.param_groups(1e-3)[1]
    steps = []
    r.head.on_train_step = steps.append
    r.on_train_step(7)
    assert steps == [7]


def test_regions_on_a_head_without_them_fail_clearly():
    class NoRegions(NeRFRenderer):
        supports_regions = False

    head = functools.partial(NoRegions, field=ConstField, n_coarse=4, n_fine=0)
    with pytest.raises(LipspaceError, match="region attention"):
        TorsoComposite(head, ConstField, cond_dim=4, regions=[("lips", 0, 2)])


def test_ad_nerf_stages_head_over_ground_truth_torso_then_torso_under_the_fixed_head():
    torch.manual_seed(0)
    head = functools.partial(NeRFRenderer, field=functools.partial(MLPField, hidden=8, n_layers=2, pos_freqs=2,
                                                                   dir_freqs=1), n_coarse=4, n_fine=4)
    torso = functools.partial(MLPField, hidden=8, n_layers=2, pos_freqs=2, dir_freqs=1)
    r = TorsoComposite(head, torso, cond_dim=2, n_samples=4, head_stage=0.5, total_steps=10)
    poses = torch.stack([_pose(), _pose(yaw=-0.1)])
    r.set_scene(poses, torch.zeros(3), 1.5)
    o, d = _rays(poses)
    batch = {"rays_o": o, "rays_d": d, "near": torch.full((6,), 6.5), "far": torch.full((6,), 8.5),
             "bg": torch.zeros(6, 3), "target": torch.rand(6, 3), "ray_class": torch.tensor([9, 9, 0, 2, 9, 0]),
             "pose": poses, "ray_frame": torch.tensor([0, 0, 0, 1, 1, 1])}
    cond = torch.zeros(6, 2)

    def grads(out):
        r.zero_grad(set_to_none=True)
        sum(out[k].square().sum() for k in ("rgb", "rgb_coarse") if k in out).backward()
        return ({p.grad is not None for p in r.head.parameters()}, {p.grad is not None for p in r.torso.parameters()})

    r.train().on_train_step(4)  # head stage: the head alone over the ground-truth torso pixels
    torch.manual_seed(1)
    out = r.render(batch, cond)
    gt_bg = torch.where(batch["ray_class"][:, None] == 9, batch["target"], batch["bg"])
    torch.manual_seed(1)
    assert torch.equal(out["rgb"], r.head(o, d, batch["near"], batch["far"], cond, gt_bg)["rgb"])
    assert grads(out) == ({True}, {False})
    r.on_train_step(5)  # torso stage: the torso under the fixed head
    r.perturb = r.head.perturb = False
    out = r.render(batch, cond)
    ref = r(o, d, batch["near"], batch["far"], cond, batch["bg"], poses[batch["ray_frame"]])
    assert torch.allclose(out["rgb"], ref["rgb"], atol=1e-6) and "rgb_coarse" not in out
    assert grads(out) == ({False}, {True})
    with pytest.raises(LipspaceError, match="total_steps"):
        TorsoComposite(head, torso, cond_dim=2, head_stage=0.5)
