"""Region attention (ER-NeRF / SyncTalk) in the MLP field and renderer, and the system's masking loss: gates on the
declared condition columns, their rendered magnitude, leakage shrinking under the loss, and no change at all for
conditioners without regions."""

import functools

import pytest
import torch
import torch.nn.functional as F

from lipspace.conditioners.base import Conditioner
from lipspace.utils.errors import LipspaceError
from lipspace.renderers import MLPField, NeRFRenderer
from lipspace.renderers.base import VolumeRenderer
from lipspace.model.system import TalkingHeadSystem

REGIONS = [("lip", 0, 4), ("exp", 4, 6)]


def field_factory(onednn=True, **kw):
    return functools.partial(MLPField, hidden=16, n_layers=4, pos_freqs=3, dir_freqs=2, density_activation="softplus",
                             onednn=onednn, **kw)


def rays(n=6, cond_dim=5, seed=3):
    g = torch.Generator().manual_seed(seed)
    o = F.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3.0
    d = F.normalize(-o + 0.3 * torch.randn(n, 3, generator=g), dim=-1)
    return o, d, torch.full((n,), 1.5), torch.full((n,), 4.5), torch.randn(n, cond_dim, generator=g), \
        torch.rand(n, 3, generator=g)


# Renders of this exact setup by the renderer before region attention existed (commit d89c5d8), both backends.
GOLDEN_RGB = [0.406407, 0.4962977, 0.6325591, 0.4763246, 0.5304316, 0.6415036, 0.4490021, 0.4893223, 0.5511512,
              0.4102993, 0.4917413, 0.5716016, 0.448858, 0.5392113, 0.5839631, 0.4333142, 0.5878633, 0.5972362]
GOLDEN_DEPTH_SUM, GOLDEN_ACC_SUM = 15.338298, 5.4238024


@pytest.mark.parametrize("onednn", [False, True])
def test_without_regions_renders_as_before(onednn):
    torch.manual_seed(0)
    r = NeRFRenderer(field_factory(onednn), cond_dim=5, n_coarse=8, n_fine=8).eval()
    assert r.regions == () and r.coarse.region_att is None
    assert not any("region" in k for k in r.state_dict())
    out = r(*rays())
    assert set(out) == {"rgb", "rgb_coarse", "depth", "acc"}
    torch.testing.assert_close(out["rgb"].flatten(), torch.tensor(GOLDEN_RGB), atol=2e-7, rtol=0)
    assert abs(out["depth"].sum().item() - GOLDEN_DEPTH_SUM) < 2e-5
    assert abs(out["acc"].sum().item() - GOLDEN_ACC_SUM) < 2e-6


def test_region_outputs_and_backends_agree():
    outs = []
    for onednn in (True, False):
        torch.manual_seed(0)
        r = NeRFRenderer(field_factory(onednn), cond_dim=6, n_coarse=8, n_fine=8, regions=REGIONS).eval()
        o, d, near, far, c, bg = rays(12, cond_dim=6)
        c.requires_grad_()
        out = r(o, d, near, far, c, bg)
        assert out["region_att"].shape == out["region_att_coarse"].shape == (12, 2)
        # magnitudes are gate means in (0, 1) weighted by the ray's opacity
        assert (out["region_att"] >= 0).all() and (out["region_att"] <= out["acc"][:, None] + 1e-6).all()
        sum(v.sum() for v in out.values()).backward()
        outs.append((out, {n: p.grad for n, p in r.named_parameters()}, c.grad))
    (a, ga, ca), (b, gb, cb) = outs
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ca, cb, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("gate,onednn", [(1.0, True), (0.0, True), (1.0, False), (0.0, False)])
def test_open_and_closed_gates_reduce_to_the_plain_field(gate, onednn):
    """Gates saturated at 1 give the plain per-ray field; at 0 the plain field with the region columns zeroed.
    Columns 6-7 belong to no region and stay on the per-ray path."""
    torch.manual_seed(0)
    plain = field_factory(onednn)(cond_dim=8)
    gated = field_factory(onednn, regions=REGIONS)(cond_dim=8)
    gated.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        gated.region_att.out_layer.weight.zero_()
        gated.region_att.out_layer.bias.fill_(60.0 if gate else -60.0)
    x = torch.randn(5, 7, 3)
    d = F.normalize(torch.randn(5, 3), dim=-1)
    c = torch.randn(5, 8)
    rgb, sigma, mags = gated(x, d, c)
    ref_rgb, ref_sigma = plain(x, d, c * torch.tensor([gate] * 6 + [1.0, 1.0]))
    torch.testing.assert_close(rgb, ref_rgb, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sigma, ref_sigma, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mags, torch.full((5, 7, 2), gate))


def test_bad_regions_fail_clearly():
    with pytest.raises(ValueError, match="overlap"):
        NeRFRenderer(field_factory(), cond_dim=6, n_coarse=8, n_fine=8, regions=[("a", 0, 4), ("b", 3, 6)])
    with pytest.raises(ValueError, match="not a non-empty part"):
        NeRFRenderer(field_factory(), cond_dim=6, n_coarse=8, n_fine=8, regions=[("a", 4, 9)])


class TwoRegions(Conditioner):
    """A stand-in conditioner declaring SyncTalk-like regions: lip columns -> class 3, exp columns -> class 5."""

    name = "two_regions"

    def __init__(self):
        super().__init__({"code": 6})
        self.regions = {"lip": (slice(0, 4), (3,)), "exp": (slice(4, 6), (5,))}

    @property
    def raw_dim(self):
        return 6

    def encode(self, inputs, frame_idx):
        return inputs["code"]


def toy_batch(n=96, seed=0):
    """Parallel rays along -z through a slab of matter in 4 frames: the left half's pixels are lips (3) and their
    colour follows the sign of the frame's lip code, the right half's are eyes (5) and follow its exp code."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g) * 1.6 - 0.8
    y = torch.rand(n, generator=g) * 1.6 - 0.8
    o = torch.stack([x, y, torch.full_like(x, 3.0)], -1)
    d = torch.tensor([0.0, 0.0, -1.0]).expand(n, 3)
    ray_frame = torch.arange(n) % 4
    lip_sign, exp_sign = torch.tensor([1.0, 1.0, -1.0, -1.0]), torch.tensor([1.0, -1.0, 1.0, -1.0])
    code = torch.cat([lip_sign[:, None].expand(4, 4), exp_sign[:, None].expand(4, 2)], 1)
    left = x < 0
    sign = torch.where(left, lip_sign[ray_frame], exp_sign[ray_frame])
    target = (0.5 + 0.3 * sign)[:, None].expand(n, 3)
    return {"rays_o": o, "rays_d": d.contiguous(), "near": torch.full((n,), 2.0), "far": torch.full((n,), 4.0),
            "bg": torch.zeros(n, 3), "target": target.contiguous(), "ray_class": torch.where(left, 3, 5),
            "inputs": {"code": code}, "frame_idx": torch.arange(4), "ray_frame": ray_frame}


def leakage(system, batch):
    """Mean rendered gate magnitude per unit opacity on rays outside / inside each region."""
    with torch.no_grad():
        out = system.renderer(batch["rays_o"], batch["rays_d"], batch["near"], batch["far"],
                              system.conditions(batch), batch["bg"])
        outside = system.region_outside(batch)
        att = out["region_att"] / out["acc"].clamp_min(1e-6)[:, None]
    return float((att * outside).sum() / outside.sum()), float((att * (1 - outside)).sum() / (1 - outside).sum())


def fit_toy(weight, steps=60):
    torch.manual_seed(0)
    renderer = functools.partial(NeRFRenderer, field_factory(), n_coarse=8, n_fine=8, perturb=False)
    system = TalkingHeadSystem(TwoRegions(), renderer, optimizer=None, region_att_weight=weight)
    batch = toy_batch()
    before = leakage(system, batch)
    opt = torch.optim.Adam(system.renderer.parameters(), lr=1e-2)
    outside = system.region_outside(batch)
    for _ in range(steps):
        opt.zero_grad()
        out = system.renderer(batch["rays_o"], batch["rays_d"], batch["near"], batch["far"],
                              system.conditions(batch), batch["bg"])
        loss = F.mse_loss(out["rgb"], batch["target"]) + system.region_loss(out, outside, len(outside))
        loss.backward()
        opt.step()
    return before, leakage(system, batch), F.mse_loss(out["rgb"], batch["target"]).item()


def test_masking_loss_shrinks_attention_outside_its_region():
    (b_out, b_in), (a_out, a_in), mse = fit_toy(0.05)
    (_, _), (n_out, n_in), mse0 = fit_toy(0.0)
    print(f"attention outside its region {b_out:.3f} -> {a_out:.3f} with the loss ({n_out:.3f} without); inside "
          f"{b_in:.3f} -> {a_in:.3f} ({n_in:.3f} without); mse {mse:.4f} ({mse0:.4f} without)")
    assert [n for n, _, _ in TalkingHeadSystem(TwoRegions(), functools.partial(
        NeRFRenderer, field_factory(), n_coarse=8, n_fine=8), optimizer=None).renderer.regions] == ["lip", "exp"]
    assert a_out < 0.5 * b_out and a_out < 0.5 * n_out
    assert a_in > 2 * a_out


def test_missing_ray_class_and_unbuilt_renderer_fail_clearly():
    torch.manual_seed(0)
    renderer = functools.partial(NeRFRenderer, field_factory(), n_coarse=8, n_fine=8)
    system = TalkingHeadSystem(TwoRegions(), renderer, optimizer=None, region_att_weight=0.1)
    batch = toy_batch(8)
    del batch["ray_class"]
    with pytest.raises(LipspaceError, match="ray_class"):
        system.region_outside(batch)
    built = NeRFRenderer(field_factory(), cond_dim=6, n_coarse=8, n_fine=8)
    with pytest.raises(LipspaceError, match="declares regions"):
        TalkingHeadSystem(TwoRegions(), built, optimizer=None)

    class NoRegions(VolumeRenderer):  # a renderer without region attention (supports_regions stays False)
        def forward(self, rays_o, rays_d, near, far, cond, bg):
            return {"rgb": bg}

    with pytest.raises(LipspaceError, match="renderer NoRegions does not implement"):
        TalkingHeadSystem(TwoRegions(), functools.partial(NoRegions), optimizer=None)
    with pytest.raises(LipspaceError, match="Renderer subclass"):  # not a Renderer: nothing to ask it
        TalkingHeadSystem(TwoRegions(), functools.partial(torch.nn.Linear, 2), optimizer=None)


def test_chunked_step_matches_one_graph_with_the_region_loss():
    torch.manual_seed(0)
    renderer = functools.partial(NeRFRenderer, field_factory(), n_coarse=8, n_fine=8, perturb=False)
    system = TalkingHeadSystem(TwoRegions(), renderer, optimizer=None, region_att_weight=0.3)
    batch = toy_batch(20)
    outside = system.region_outside(batch)
    from lipspace.renderers.nerf import mse_chunk_loss

    photometric = mse_chunk_loss(batch["target"])
    args = [batch[k] for k in ("rays_o", "rays_d", "near", "far")]
    out = system.renderer(*args, system.conditions(batch), batch["bg"])
    (photometric(out, slice(0, 20)) + system.region_loss(out, outside, 20)).backward()
    ref = {n: p.grad.clone() for n, p in system.renderer.named_parameters()}
    system.renderer.zero_grad()
    system.renderer.forward_backward(*args, system.conditions(batch), batch["bg"],
                                     lambda o, sl: photometric(o, sl) + system.region_loss(o, outside[sl], 20),
                                     chunk_rays=7)
    for n, p in system.renderer.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], atol=1e-6, rtol=1e-4)
