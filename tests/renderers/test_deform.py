"""torso=deform (SSP-NeRF's unified NeRF with its torso deformation module and structured 3-D latent codes): the
deformation starts as the identity and never moves the head's sphere, the scene columns reach the field split off the
condition in both field layouts, the codes interpolate and fade, and the wrapper keeps the head's declarations."""

import functools

import pytest
import torch
from torch import nn

from lipspace.renderers import NeRFRenderer
from lipspace.renderers.deform import SceneDeformation, TorsoDeform
from lipspace.renderers.fields.scene import SCENE_COLUMNS, SceneField
from lipspace.renderers.structured_codes import StructuredCodes
from lipspace.utils.errors import LipspaceError


class RecordingField(nn.Module):
    """Colour = the point's x coordinate, density 1; remembers what it was given."""

    semantic_classes = 0
    hidden = 8

    def __init__(self, cond_dim, point_features=0):
        super().__init__()
        self.cond_dim, self.point_features = cond_dim, point_features
        self.seen = {}

    def forward(self, x, d, c, *ray_idx, point_feats=None):
        self.seen = {"x": x, "c": c, "ray_idx": ray_idx, "point_feats": point_feats}
        return x[..., :1].expand(*x.shape[:-1], 3), torch.ones(x.shape[:-1])


def _scene(**kw):
    scene = SceneDeformation(**kw)
    scene.set_scene(10, (torch.zeros(3), 1.0), (torch.zeros(3), 1.0), None)
    return scene


def test_deformation_starts_as_identity_and_spares_the_head_sphere():
    torch.manual_seed(0)
    scene = _scene()
    x = torch.randn(50, 3) * 2
    cols = torch.cat([torch.randint(0, 10, (50, 1)).float(), torch.randn(50, 6)], -1)
    moved, feats = scene(x, cols)
    assert feats is None and torch.equal(moved, x)  # zero last layer: the identity at start
    nn.init.normal_(scene.net[-1].weight, std=5.0)  # a trained-looking deformation
    delta = scene.offsets(x, cols).detach()
    assert float(delta.abs().max()) <= scene.max_offset
    inside = x.norm(dim=-1) < 1.0
    outside = x.norm(dim=-1) > 1.0 + scene.gate_width
    assert float(delta[inside].abs().max()) == 0.0  # the head's sphere never moves
    assert float(delta[outside].norm(dim=-1).mean()) > 0.1 * scene.max_offset
    ungated = _scene(gate=False)
    ungated.net.load_state_dict(scene.net.state_dict())
    assert float(ungated.offsets(x, cols).detach()[inside].norm(dim=-1).mean()) > 0.1 * scene.max_offset


def test_deformation_works_in_the_fields_coordinates():
    scene = SceneDeformation()
    scene.set_scene(10, (torch.zeros(3), 1.0), (torch.full((3,), 0.5), 0.25), None)  # x01 = x / 4 + 0.5
    nn.init.normal_(scene.net[-1].weight, std=5.0)
    x_head = torch.tensor([[0.0, 2.5, 0.0]])
    cols = torch.zeros(1, SCENE_COLUMNS)
    moved01, _ = scene(x_head / 4 + 0.5, cols)
    assert torch.allclose(moved01, (x_head + scene.offsets(x_head, cols)) / 4 + 0.5, atol=1e-6)


@pytest.mark.parametrize("layout", ["mlp", "triplane"])
def test_scene_field_splits_the_scene_columns_off_in_both_layouts(layout):
    field = SceneField(RecordingField, cond_dim=4 + SCENE_COLUMNS)
    assert field.inner.cond_dim == 4 and field.hidden == 8
    with pytest.raises(LipspaceError, match="no scene module"):
        field(torch.zeros(2, 3, 3), torch.zeros(2, 3), torch.zeros(2, 4 + SCENE_COLUMNS))
    field.attach(_scene(gate=False))  # one call for every point (the split: the test below)
    c = torch.randn(2, 4 + SCENE_COLUMNS)
    if layout == "mlp":
        rgb, sigma = field(torch.randn(2, 5, 3), torch.zeros(2, 3), c)
        assert rgb.shape == (2, 5, 3)
    else:
        ray_idx = torch.tensor([0, 0, 1])
        field(torch.rand(3, 3), torch.zeros(2, 3), c, ray_idx)
        assert torch.equal(field.inner.seen["ray_idx"][0], ray_idx)
    assert torch.equal(field.inner.seen["c"], c[:, :4])
    with pytest.raises(LipspaceError, match="point_features"):
        SceneField(RecordingField, cond_dim=4 + SCENE_COLUMNS, point_features=3).attach(_scene())


def test_structured_codes_interpolate_near_anchors_and_fade_far_away():
    codes = StructuredCodes(dim=2, neighbours=2, spread=0.25)
    codes.set_anchors(torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 1.0, 0]]))
    with torch.no_grad():
        codes.codes.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    f = codes(torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [5.0, 5.0, 5.0]]))
    assert torch.allclose(f[0], torch.tensor([1.0, 0.0]), atol=1e-3)  # at an anchor: its code
    assert torch.allclose(f[1], torch.tensor([0.0, 1.0]), atol=1e-3)
    assert float(f[2].abs().max()) < 1e-6  # far from the face: nothing
    x = torch.tensor([[0.3, 0.2, 0.0]], requires_grad=True)
    codes(x).sum().backward()
    assert codes.codes.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    fresh = StructuredCodes(dim=2, neighbours=2, spread=0.25)  # a checkpoint brings anchors and codes
    fresh.load_state_dict(codes.state_dict())
    assert torch.equal(fresh(x.detach()), codes(x.detach()))


@pytest.mark.parametrize("k", [1, 8])
def test_structured_codes_cpu_tree_finds_the_exhaustive_searchs_neighbours(k):
    """The CPU k-d tree against all distances + top-k (the device path), on 512 random anchors: the same
    neighbour sets and features; a checkpoint's anchors replace the tree built for the old ones."""
    g = torch.Generator().manual_seed(0)
    codes, other = StructuredCodes(dim=4, neighbours=k), StructuredCodes(dim=4, neighbours=k)
    codes.set_anchors(torch.randn(512, 3, generator=g) * 0.3, generator=g)
    other.set_anchors(torch.randn(300, 3, generator=g) * 0.3 + 0.5, generator=g)
    pts = torch.randn(5000, 3, generator=g) * 0.5

    def exhaustive(c):
        idx = torch.cdist(pts, c.anchors).topk(k, dim=1, largest=False).indices
        d2 = (pts[:, None] - c.anchors[idx]).square().sum(-1)
        return idx, torch.einsum("nk,nkc->nc", torch.exp(-0.5 * d2 / float(c.sigma) ** 2), c.codes[idx])

    for c in (codes, other):
        idx, feats = exhaustive(c)
        assert torch.equal(c.nearest(pts, k).sort(1).values, idx.sort(1).values)
        assert torch.allclose(c(pts), feats, atol=1e-6)
    codes.load_state_dict(other.state_dict())  # its tree was built for the 512 anchors
    assert torch.equal(codes.nearest(pts, k).sort(1).values, exhaustive(other)[0].sort(1).values)


def _torso_deform(cond_dim=3, **scene):
    field = functools.partial(SceneField, RecordingField)
    head = functools.partial(NeRFRenderer, field=field, n_coarse=4, n_fine=0, perturb=False)
    return TorsoDeform(head, cond_dim=cond_dim, **scene)


def test_torso_deform_appends_frame_and_pose_and_keeps_declarations():
    r = _torso_deform()
    poses = torch.eye(4).expand(10, 4, 4).clone()
    poses[:, 0, 3] = torch.linspace(-0.1, 0.1, 10)

    class Clip:
        n_frames, pose, face_points = 10, poses, None

        def sphere(self, key):
            return torch.zeros(3), 1.0 if key == "head_bounds" else 2.0

    r.setup_scene(Clip())
    assert r.head.cond_dim == 3 + SCENE_COLUMNS and r.scene.frame_codes.shape == (10, 8)
    batch = {"rays_o": torch.zeros(4, 3) - torch.tensor([0, 0, 3.0]), "rays_d": torch.tensor([[0, 0, 1.0]] * 4),
             "near": torch.full((4,), 1.0), "far": torch.full((4,), 5.0), "bg": torch.zeros(4, 3),
             "ray_frame": torch.tensor([0, 0, 1, 1]), "frame_idx": torch.tensor([7, 2]), "pose": poses[[7, 2]]}
    cond = torch.randn(4, 3)
    r.render(batch, cond)
    seen = r.head.coarse.inner.seen
    assert torch.equal(seen["c"], cond)  # the conditioner's columns reach the field unchanged
    cols = r.columns(torch.tensor([7, 7, 2, 2]), poses[[7, 7, 2, 2]])
    assert torch.equal(cols[:, 0], torch.tensor([7.0, 7, 2, 2]))
    assert cols[0, 4] > 0 > cols[2, 4]  # standardised translation: frame 7 right of the mean, frame 2 left
    with pytest.raises(LipspaceError, match="frame and head pose"):
        r(batch["rays_o"], batch["rays_d"], batch["near"], batch["far"], cond, batch["bg"])
    scene_params = {id(p) for p in r.scene.parameters()}
    assert scene_params and r.param_groups(1e-3) == []  # a head without groups: every parameter at the one rate
    assert {id(p) for p in r.parameters()} >= scene_params


def test_torso_deform_needs_a_wrapped_field_and_build_says_which_renderers_have_one():
    from omegaconf import OmegaConf

    from lipspace.model.build import build_renderer

    head = functools.partial(NeRFRenderer, field=RecordingField, n_coarse=4, n_fine=0)
    with pytest.raises(LipspaceError, match="not a SceneField"):
        TorsoDeform(head, cond_dim=3)
    cfg = OmegaConf.create({"renderer": {"_target_": "tests.renderers.test_deform.RecordingField", "_partial_": True},
                            "torso": {"kind": "deform", "field_wrapper": {"_target_": "x"}, "composite": None}})
    with pytest.raises(LipspaceError, match="has no `field`"):
        build_renderer(cfg)


def test_tri_plane_layout_splits_moving_points_with_the_same_result():
    """The points the module may move (outside the head's sphere) go through the field apart from the others (whose
    positions need no gradient: the hash encoding's fast path); the outputs are those of one call."""
    from lipspace.renderers.fields.triplane import TriPlaneField

    torch.manual_seed(0)
    field = SceneField(functools.partial(TriPlaneField, n_levels=4, log2_table=10, finest_res=64, hidden=16),
                       cond_dim=2 + SCENE_COLUMNS)
    scene = SceneDeformation(hidden=16, n_layers=2)
    scene.set_scene(10, (torch.zeros(3), 0.5), (torch.full((3,), 0.5), 0.5), None)  # x01 = x / 2 + 0.5
    nn.init.normal_(scene.net[-1].weight, std=1.0)
    field.attach(scene)
    x01, ray_idx = torch.rand(200, 3), torch.randint(0, 4, (200,))
    c = torch.cat([torch.randn(4, 2), torch.randint(0, 10, (4, 1)).float(), torch.randn(4, 6)], -1)
    moved = scene.moving(x01)
    assert 0 < len(moved) < len(x01)
    split = field(x01, torch.zeros(4, 3), c, ray_idx)
    whole = field._call(x01, torch.zeros(4, 3), c[:, :2], c[:, 2:].index_select(0, ray_idx), ray_idx)
    for a, b in zip(split, whole):
        assert torch.allclose(a, b, atol=1e-6)
    split[1].sum().backward()
    assert scene.net[-1].weight.grad.abs().sum() > 0  # the moved points' positions carry the gradient


def test_deformation_learns_a_pose_dependent_torso_shift():
    """The torso deformation module, trained alone, moves a canonical torso (a soft ball below the head) to where the
    frame's head pose puts it: the density error falls to a small part of the undeformed one's. (End to end on the
    synthetic head, the unified NeRF's held-out torso pixels: README, experiments/ssp_ablation.)"""
    torch.manual_seed(0)
    scene = SceneDeformation(hidden=32, n_layers=3, pos_freqs=2, frame_code=0)
    scene.set_scene(10, (torch.zeros(3), 0.6), (torch.zeros(3), 1.0), None)
    centre = torch.tensor([0.0, 1.5, 0.0])

    def density(x):
        return torch.sigmoid(20 * (0.4 - (x - centre).norm(dim=-1)))

    def batch(n=512):
        pose = torch.randn(n, 6)
        cols = torch.cat([torch.zeros(n, 1), pose], -1)
        x = centre + torch.randn(n, 3) * 0.4
        shift = torch.stack([0.15 * pose[:, 0], torch.zeros(n), 0.1 * pose[:, 3]], -1)  # yaw and x move it
        return x, cols, density(x - shift)  # the ball of this frame sits at centre + shift

    x, cols, target = batch(2048)
    before = float((density(scene(x, cols)[0]) - target).square().mean().detach())
    opt = torch.optim.Adam(scene.parameters(), lr=3e-3)
    for _ in range(400):
        xb, cb, tb = batch()
        loss = (density(scene(xb, cb)[0]) - tb).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = float((density(scene(x, cols)[0]) - target).square().detach().mean())
    assert after < 0.05 * before, (before, after)  # measured: 0.0306 -> 0.000085
