"""GaussianRenderer's region attention (supports_regions: SyncTalk's lip / upper-face codes gated per Gaussian by
its tri-plane encoding, as TalkingGaussian's face branch): built and declared with regions and exactly as before
without them; the gates follow the position and gate the condition's region columns; ``region_att`` is the
composited per-Gaussian gate magnitude (against the dense reference rasteriser); images batches carry each pixel's
parsing class and the system's masking loss works on them."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from lipspace.conditioners.base import Conditioner
from lipspace.data.clip import load_clip
from lipspace.data.sampling import frame_cameras
from lipspace.model.system import TalkingHeadSystem
from lipspace.renderers.fields.region_attention import RegionAttention
from lipspace.renderers.gaussian import GaussianRenderer
from lipspace.renderers.gaussian.deform import DeformationField
from lipspace.renderers.gaussian.projection import project_gaussians
from lipspace.renderers.gaussian.rasterise import rasterise_dense

SMALL = dict(n_surface=60, n_fill=30, n_mouth=12, deform={"hidden": 16, "n_levels": 4, "log2_table": 10},
             mouth_deform={"hidden": 8, "n_levels": 2, "log2_table": 8})
REGIONS = [("exp", 4, 6), ("lip", 0, 4)]  # unsorted on purpose: kept sorted by column
FIELD = dict(hidden=16, n_levels=4, log2_table=10)


@pytest.fixture
def clip(tiny_dataset):
    return load_clip(tiny_dataset)


class TwoRegions(Conditioner):
    """A stand-in conditioner declaring SyncTalk-like regions: lip columns -> class 3, exp columns -> class 5."""

    name = "two_regions"

    def __init__(self, dim=7):
        super().__init__({"code": dim})
        self.dim = dim
        self.regions = {"lip": (slice(0, 4), (3,)), "exp": (slice(4, 6), (5,))}

    @property
    def raw_dim(self):
        return self.dim

    def encode(self, inputs, frame_idx):
        return inputs["code"]


def test_regions_are_built_and_declared(clip):
    r = GaussianRenderer(cond_dim=7, regions=REGIONS, **SMALL)
    assert GaussianRenderer.supports_regions and r.regions == (("lip", 0, 4), ("exp", 4, 6))
    assert isinstance(r.face_field.region_att, RegionAttention) and r.face_field.region_att.names == ("lip", "exp")
    assert r.mouth_field.region_att is None  # the mouth branch reads the condition ungated (TalkingGaussian's)
    r.setup_scene(clip)
    mlp = {id(p) for p in r.param_groups(1e-3)[-1]["params"]}
    assert all(id(p) in mlp for p in r.face_field.region_att.parameters())
    with pytest.raises(ValueError, match="overlap"):
        GaussianRenderer(cond_dim=7, regions=[("a", 0, 4), ("b", 3, 6)], **SMALL)
    # the system builds it from a partial with the conditioner's regions
    system = TalkingHeadSystem(TwoRegions(), functools.partial(GaussianRenderer, **SMALL), optimizer=None)
    assert [n for n, _, _ in system.renderer.regions] == ["lip", "exp"]


def test_without_regions_the_renderer_is_the_plain_one(clip):
    torch.manual_seed(0)
    a = GaussianRenderer(cond_dim=7, **SMALL)
    torch.manual_seed(0)
    b = GaussianRenderer(cond_dim=7, regions=REGIONS, **SMALL)
    assert a.regions == () and a.face_field.region_att is None
    assert not any("region" in k for k in a.state_dict())
    # the regions only add the attention, created last in the face field: its other parameters draw the same values
    sa, sb = a.face_field.state_dict(), b.face_field.state_dict()
    assert set(sb) - set(sa) and all(k.startswith("region_att.") for k in set(sb) - set(sa))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    a.setup_scene(clip)
    out = a.render(frame_cameras(clip, [0], downscale=2), torch.randn(1, 7))
    assert "region_att" not in out


def _fields(gate=None, seed=0):
    """A plain face field and the same field with REGIONS (same weights), random last layer and hash tables; gates
    saturated at ``gate`` (1 or 0) when given."""
    torch.manual_seed(seed)
    plain = DeformationField(7, 10, **FIELD)
    torch.manual_seed(seed)
    gated = DeformationField(7, 10, **FIELD, regions=REGIONS)
    with torch.no_grad():
        for f in (plain, gated):
            torch.manual_seed(seed + 1)
            f.out.weight.normal_()
            f.encoding.grid.table.normal_()
        if gate is not None:
            gated.region_att.out_layer.weight.zero_()
            gated.region_att.out_layer.bias.fill_(60.0 if gate else -60.0)
    return plain, gated


def test_gates_follow_the_position_and_gate_the_condition():
    x01 = torch.rand(50, 3, generator=torch.Generator().manual_seed(0))
    cond = torch.randn(3, 7, generator=torch.Generator().manual_seed(1))
    plain, gated = _fields()
    off, mags = gated(x01, cond, 3)
    assert off.shape == (3, 50, 10) and mags.shape == (50, 2) and ((mags > 0) & (mags < 1)).all()
    assert mags.std(0).min() > 1e-3  # the gates differ from Gaussian to Gaussian (they follow the position)
    # ... and are those of RegionAttention on the field's encoding: the mean of each region's channel gates
    enc = gated.encoding(x01)
    gates = torch.sigmoid(gated.region_att.out_layer(torch.relu(gated.region_att.hidden_layer(enc))))
    assert torch.allclose(mags, torch.stack([gates[:, :4].mean(-1), gates[:, 4:].mean(-1)], -1))
    # the offsets change with each region's columns of the condition, and those columns are read through the gates
    for cols in (slice(0, 4), slice(4, 6), slice(6, 7)):
        c2 = cond.clone()
        c2[:, cols] += 1.0
        assert not torch.allclose(gated(x01, c2, 3)[0], off)
    h = torch.relu(plain.enc_in(enc)[None] + cond[:, None, 6:] @ plain.cond_in.weight[:, 6:].t()
                   + (cond[:, None, :6] * gates) @ plain.cond_in.weight[:, :6].t())  # c_r * a_r(x), the rest per frame
    expected = plain.out(torch.relu(plain.hidden[0](h)))
    assert torch.allclose(off, expected, atol=1e-5)
    # gates saturated at 1: the plain field; at 0: the plain field with the region columns zeroed
    plain, open_ = _fields(gate=1)
    assert torch.allclose(open_(x01, cond, 3)[0], plain(x01, cond, 3), atol=1e-5)
    plain, shut = _fields(gate=0)
    zeroed = cond.clone()
    zeroed[:, :6] = 0
    assert torch.allclose(shut(x01, cond, 3)[0], plain(x01, zeroed, 3), atol=1e-5)
    assert torch.allclose(shut(x01, cond, 3)[1], torch.zeros(50, 2))


def _known_scene(regions=REGIONS):
    """Ten Gaussians (three in the mouth branch) in front of a 20 x 24 camera at the head-space origin."""
    torch.manual_seed(0)
    r = GaussianRenderer(cond_dim=7, regions=regions, **SMALL)
    g = torch.Generator().manual_seed(3)
    n = 10
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.6, 0.5, 0.4]) + torch.tensor([0.0, 0.0, 2.0])
    r.scene_center.copy_(torch.tensor([0.0, 0.0, 2.0]))
    r.scene_radius.fill_(0.5)
    is_mouth = torch.zeros(n, dtype=torch.bool)
    is_mouth[[2, 5, 7]] = True
    r.set_gaussians(means, torch.full((n, 3), math.log(0.06)), torch.rand(n, 3, generator=g), is_mouth, opacity=0.7)
    with torch.no_grad():
        r.face_field.encoding.grid.table.normal_(generator=g)
        r.face_field.region_att.out_layer.weight.mul_(20.0)  # gates spread over (0, 1)
    h, w = 20, 24
    batch = {"pose": torch.eye(4).expand(2, 4, 4).clone(), "intrinsics": torch.tensor([[30.0, 30.0, 12.0, 10.0]] * 2),
             "bg": torch.rand(2, h, w, 3, generator=g), "hw": (h, w)}
    return r, batch


def test_region_att_is_the_composited_gate_magnitude():
    r, batch = _known_scene()
    cond = torch.randn(2, 7, generator=torch.Generator().manual_seed(4))
    out = r.render(batch, cond)
    assert out["rgb"].shape == (2, 20, 24, 3) and out["region_att"].shape == (2, 20, 24, 2)
    means, log_scales, quats, mags = r.deformed(cond, 2, gates=True)
    assert mags.shape == (10, 2) and (mags[r.is_mouth] == 0).all() and (mags[~r.is_mouth] > 0).all()
    assert mags[~r.is_mouth].std(0).min() > 0.02
    p = project_gaussians(means, log_scales, quats, batch["pose"], batch["intrinsics"], hw=(20, 24), near=r.near)
    opac = torch.sigmoid(r.opacity_logits)
    ref = rasterise_dense(p.means2d, p.cov2d, p.depths, mags, opac, p.visible, (20, 24))
    # the scene covers the image
    assert float(ref["alpha"].detach().max()) > 0.5 and float(ref["rgb"].detach().max()) > 0.3
    assert torch.allclose(out["region_att"], ref["rgb"], atol=1e-5)
    assert torch.allclose(out["acc"], ref["alpha"], atol=1e-5)
    assert (out["region_att"] <= out["acc"][..., None] + 1e-5).all()
    # the colour is untouched by the extra channels
    rgb = rasterise_dense(p.means2d, p.cov2d, p.depths, torch.sigmoid(r.colour_logits), opac, p.visible, (20, 24),
                          batch["bg"])["rgb"]
    assert torch.allclose(out["rgb"], rgb, atol=1e-5)
    # gradients reach the gates' MLP and the geometry through the composite
    out["region_att"].sum().backward()
    assert r.face_field.region_att.out_layer.weight.grad.abs().sum() > 0 and r.opacity_logits.grad.abs().sum() > 0
    # render_frame: the colour only
    frame = {k: (v[:1] if torch.is_tensor(v) else v) for k, v in batch.items()}
    with torch.no_grad():
        assert torch.allclose(r.render_frame(frame, cond[0]), out["rgb"][0].detach().clamp(0, 1), atol=1e-6)


def test_frame_cameras_carry_the_parsing_class(clip):
    full = frame_cameras(clip, [0, 3])
    assert full["ray_class"].dtype == torch.int64 and full["ray_class"].shape == full["target"].shape[:3]
    assert torch.equal(full["ray_class"], clip.parsing[torch.tensor([0, 3])].long())
    h, w = clip.hw
    parsing = torch.zeros(clip.n_frames, h, w, dtype=torch.uint8)
    parsing[0, 0:2, 0:2] = torch.tensor([[3, 3], [5, 0]], dtype=torch.uint8)  # majority 3
    parsing[0, 0:2, 2:4] = torch.tensor([[5, 3], [5, 3]], dtype=torch.uint8)  # tie 3 / 5: the lowest, 3
    parsing[0, 2:4, 0:2] = torch.tensor([[7, 7], [7, 1]], dtype=torch.uint8)  # majority 7
    clip.parsing = parsing
    half = frame_cameras(clip, [0], downscale=2)
    assert half["ray_class"].shape == (1, h // 2, w // 2)
    assert half["ray_class"][0, 0, 0] == 3 and half["ray_class"][0, 0, 1] == 3 and half["ray_class"][0, 1, 0] == 7
    assert half["ray_class"][0, 1, 1] == 0


def test_masking_loss_on_an_images_batch(clip):
    torch.manual_seed(0)
    system = TalkingHeadSystem(TwoRegions(), functools.partial(GaussianRenderer, **SMALL), optimizer=None,
                               region_att_weight=0.1)
    r = system.renderer
    r.setup_scene(clip)
    h, w = clip.hw
    batch = {"frame_idx": torch.tensor([0, 1]), "inputs": {"code": torch.randn(2, 7)},
             **frame_cameras(clip, [0, 1], downscale=2)}
    parsing = batch["ray_class"]
    parsing[:, : h // 4] = 3  # top half: lips, bottom half: eyes (classes of the stand-in's regions)
    parsing[:, h // 4:] = 5
    out = r.render(batch, system.conditions(batch))
    assert out["region_att"].shape == (2, h // 2, w // 2, 2)
    outside = system.region_outside(batch)
    assert outside.shape == (2 * (h // 2) * (w // 2), 2)
    # frame-major rows, as region_att flattens: lip is outside on the eyes' pixels and exp on the lips'
    assert torch.equal(outside.reshape(2, h // 2, w // 2, 2)[..., 0], (parsing != 3).float())
    assert torch.equal(outside.reshape(2, h // 2, w // 2, 2)[..., 1], (parsing != 5).float())
    loss = system.region_loss(out, outside, len(outside))
    expected = 0.1 * (out["region_att"] * outside.reshape(*out["region_att"].shape)).sum(-1).mean()
    assert torch.isfinite(loss) and float(loss) > 0 and torch.allclose(loss, expected)
    loss.backward()
    assert r.face_field.region_att.out_layer.weight.grad.abs().sum() > 0
    # the training step adds it (and logs the regions) on an images batch
    for p in system.parameters():
        p.grad = None
    with pytest.warns(UserWarning, match="log"):
        total = system.training_step(batch, 0)
    with torch.no_grad():
        out = r.render(batch, system.conditions(batch))
    photometric = F.mse_loss(out["rgb"], batch["target"]) + system.conditioner.regularizer(batch["frame_idx"])
    assert torch.allclose(total.detach(), photometric + system.region_loss(out, outside, len(outside)), atol=1e-6)
    total.backward()
    assert r.face_field.region_att.hidden_layer.weight.grad.abs().sum() > 0
