"""The implicit parsing branch in the renderers: logits composited with the colour's weights, gradients into the
semantic head, off = the field and renderer of before, the parsing map of a whole frame, the contract's checks."""

import functools

import pytest
import torch
import torch.nn.functional as F

from lipspace.renderers import MLPField, NeRFRenderer
from lipspace.renderers.base import VolumeRenderer
from lipspace.renderers.fields.triplane import TriPlaneField
from lipspace.renderers.semantic import composite_logits
from lipspace.renderers.triplane import TriPlaneRenderer
from lipspace.utils.errors import LipspaceError

K = 10


def mlp_renderer(semantic_classes=K, onednn=True, **kw):
    field = functools.partial(MLPField, hidden=16, n_layers=3, skips=(1,), pos_freqs=4, dir_freqs=2,
                              density_activation="softplus", onednn=onednn, semantic_classes=semantic_classes)
    return NeRFRenderer(field, cond_dim=4, n_coarse=8, n_fine=8, **kw)


def triplane_renderer(semantic_classes=K):
    field = functools.partial(TriPlaneField, n_levels=2, log2_table=8, finest_res=32, hidden=16,
                              semantic_classes=semantic_classes)
    r = TriPlaneRenderer(field, cond_dim=4, n_samples=12, occupancy=None)
    r.set_scene(torch.zeros(3), 1.5)
    return r


def rays(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    o = torch.tensor([0.0, 0.0, -3.0]).expand(n, 3)
    d = F.normalize(torch.randn(n, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    cond, bg = torch.randn(n, 4, generator=g), torch.rand(n, 3, generator=g)
    return o, d, torch.full((n,), 1.6), torch.full((n,), 4.4), cond, bg


def test_composite_logits_is_the_weighted_sum():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(5, 7, generator=g)
    w = w / w.sum(1, keepdim=True)
    logits, bg = torch.randn(5, 6, K, generator=g), torch.randn(K, generator=g)
    expected = torch.stack([sum(w[r, i] * logits[r, i] for i in range(6)) + w[r, 6] * bg for r in range(5)])
    torch.testing.assert_close(composite_logits(w, logits, bg), expected)


@pytest.mark.parametrize("make", [mlp_renderer, triplane_renderer])
def test_renderer_composites_logits_with_the_colour_weights(make):
    """Constant per-point logits b (head weight 0): rendered logits = acc * b + (1 - acc) * background logits."""
    torch.manual_seed(0)
    r = make().eval()
    heads = [f.semantic for f in (r.coarse, r.fine)] if isinstance(r, NeRFRenderer) else [r.field.semantic]
    b = torch.randn(K)
    with torch.no_grad():
        for head in heads:
            head.weight.zero_()
            head.bias.copy_(b)
        r.semantic_bg.copy_(torch.randn(K))
        out = r(*rays(9))
    assert out["semantic"].shape == (9, K)
    expected = out["acc"][:, None] * b + (1 - out["acc"][:, None]) * r.semantic_bg
    torch.testing.assert_close(out["semantic"], expected, atol=1e-5, rtol=1e-5)
    if isinstance(r, NeRFRenderer):
        assert out["semantic_coarse"].shape == (9, K)


@pytest.mark.parametrize("onednn", [True, False])
def test_gradients_reach_the_semantic_heads_plain_and_fused(onednn):
    torch.manual_seed(0)
    r = mlp_renderer(onednn=onednn).eval()
    o, d, near, far, c, bg = rays(12)
    cls = torch.randint(0, K, (12,))

    def ce(out, sl=slice(None)):
        return (F.cross_entropy(out["semantic"], cls[sl], reduction="sum")
                + F.cross_entropy(out["semantic_coarse"], cls[sl], reduction="sum")) / 12

    ce(r(o, d, near, far, c, bg)).backward()
    ref = {n: p.grad.clone() for n, p in r.named_parameters() if p.grad is not None}
    for name in ("coarse.semantic.weight", "fine.semantic.weight", "semantic_bg", "coarse.trunk.0.weight"):
        assert ref[name].abs().sum() > 0, name
    r.zero_grad()
    res = r.forward_backward(o, d, near, far, c, bg, ce, chunk_rays=5)
    assert res["semantic"].shape == (12, K)
    for n, p in r.named_parameters():
        if n in ref:
            torch.testing.assert_close(p.grad, ref[n], atol=1e-6, rtol=1e-4, msg=n)


def test_triplane_gradients_reach_the_semantic_head():
    torch.manual_seed(0)
    r = triplane_renderer().train()
    out = r(*rays(8))
    F.cross_entropy(out["semantic"], torch.randint(0, K, (8,))).backward()
    assert r.field.semantic.weight.grad.abs().sum() > 0 and r.field.sigma_in.weight.grad.abs().sum() > 0


def test_off_builds_and_renders_exactly_as_before():
    """semantic_classes=0 (the default): the renderers' weights, a training render and the RNG state after them are
    those recorded at the commit before the branch existed (ee4e665; same script, same seed)."""
    torch.manual_seed(0)
    r = NeRFRenderer(functools.partial(MLPField, hidden=16, n_layers=3, skips=(1,), pos_freqs=4, dir_freqs=2),
                     cond_dim=4, n_coarse=8, n_fine=8)
    t = TriPlaneRenderer(functools.partial(TriPlaneField, n_levels=2, log2_table=8, finest_res=32, hidden=16),
                         cond_dim=4, n_samples=12, occupancy=None)
    t.set_scene(torch.zeros(3), 1.5)
    assert r.semantic_classes == t.semantic_classes == 0 and r.semantic_bg is None and t.semantic_bg is None
    recorded = [(2.041385214222828, 9.277491003274918, 0.07990807294845581),
                (7.577949443137939, 8.51152789592743, 0.8094760775566101)]
    for m, (params, rgb, rng) in zip((r, t), recorded):
        out = m.train()(*rays(6))
        assert "semantic" not in out
        assert float(sum(p.detach().double().sum() for p in m.parameters())) == pytest.approx(params, rel=1e-12)
        assert float(out["rgb"].detach().double().sum()) == pytest.approx(rgb, rel=1e-6)
        assert float(torch.rand(())) == rng


@pytest.mark.parametrize("field", [functools.partial(MLPField, cond_dim=4, hidden=16, n_layers=3, skips=(1,)),
                                   functools.partial(TriPlaneField, cond_dim=4, n_levels=2, log2_table=8,
                                                     finest_res=32, hidden=16)])
def test_the_head_is_drawn_after_every_other_weight(field):
    torch.manual_seed(0)
    off = field(semantic_classes=0).state_dict()
    torch.manual_seed(0)
    on = field(semantic_classes=K).state_dict()
    assert set(on) - set(off) == {"semantic.weight", "semantic.bias"}
    for name, v in off.items():
        assert torch.equal(v, on[name]), name


def test_render_parsing_draws_the_class_map_of_a_frame():
    torch.manual_seed(0)
    r = mlp_renderer().eval()
    o, d, near, far, _, bg = rays(12)
    frame = {"rays_o": o, "rays_d": d, "near": near, "far": far, "bg": bg, "hw": (3, 4)}
    with torch.no_grad():
        r.semantic_bg.zero_()
        r.semantic_bg[7] = 100.0  # the background sample dominates where the field is thin
        for f in (r.coarse, r.fine):
            f.semantic.bias.zero_()
    m = r.render_parsing(frame, torch.zeros(4))
    assert m.shape == (3, 4) and m.dtype == torch.long and (m == 7).all()
    with pytest.raises(LipspaceError, match="semantic_classes"):
        mlp_renderer(semantic_classes=0).render_parsing(frame, torch.zeros(4))


def test_the_contract_declares_the_branch():
    assert NeRFRenderer.supports_semantic and TriPlaneRenderer.supports_semantic
    assert not VolumeRenderer.supports_semantic
    from lipspace.renderers.base import Rasteriser

    with pytest.raises(TypeError, match="supports_semantic"):
        type("Bad", (Rasteriser,), {"supports_semantic": True, "render": None, "render_frame": None})
    with pytest.raises(ValueError, match="semantic_classes"):
        MLPField(cond_dim=0, semantic_classes=-1)
