"""Per-point input features of the fields (SSP-NeRF's structured 3-D latent codes): point_features=0 builds and runs
exactly the field it was before, P > 0 feeds [R,S,P] (MLPField) / [N,P] (TriPlaneField) features per point into the
trunk's input layers, gradients reach them, wrong shapes are clear errors, and a tiny fit shows they are used."""

import functools

import pytest
import torch
import torch.nn.functional as F

from lipspace.renderers.fields import MLPField
from lipspace.renderers.fields.triplane import TriPlaneField
from lipspace.utils.errors import LipspaceError

REGIONS = [("lip", 0, 4), ("exp", 4, 6)]
# skips=(1,): input layers 0 and 2, so the skip layer's feature columns are exercised too
MLP = functools.partial(MLPField, hidden=16, n_layers=4, skips=(1,), pos_freqs=3, dir_freqs=2,
                        density_activation="softplus")
TRI = functools.partial(TriPlaneField, n_levels=4, log2_table=10, finest_res=64, hidden=16, sigma_layers=2)

# Parameter counts of these fields computed with the code before point features existed (P = 0 must keep them).
MLP_PLAIN = functools.partial(MLPField, cond_dim=5, hidden=16, n_layers=4, pos_freqs=3, dir_freqs=2,
                              density_activation="softplus")
MLP_FULL = functools.partial(MLPField, cond_dim=6, hidden=16, n_layers=4, pos_freqs=3, dir_freqs=2,
                             density_activation="softplus", regions=REGIONS, semantic_classes=3)
TRI_PLAIN = functools.partial(TRI, cond_dim=6)
TRI_FULL = functools.partial(TRI, cond_dim=8, cond_mode="attention", regions=REGIONS, semantic_classes=3)
PARAMS_BEFORE = [(functools.partial(MLPField, cond_dim=76), 169924), (MLP_PLAIN, 1620), (MLP_FULL, 2589),
                 (functools.partial(TriPlaneField, cond_dim=76), 993013), (TRI_PLAIN, 10354), (TRI_FULL, 11152)]


def _mlp_inputs(f, n_rays=6, n_samples=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_rays, n_samples, 3, generator=g)
    d = F.normalize(torch.randn(n_rays, 3, generator=g), dim=-1)
    c = torch.randn(n_rays, f.cond_dim, generator=g) if f.cond_dim else None
    pf = torch.randn(n_rays, n_samples, f.point_features, generator=g) if f.point_features else None
    return x, d, c, pf


def _tri_inputs(f, n=40, n_rays=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g)
    d = F.normalize(torch.randn(n_rays, 3, generator=g), dim=-1)
    c = torch.randn(n_rays, f.cond_dim, generator=g) if f.cond_dim else None
    ray_idx = torch.randint(0, n_rays, (n,), generator=g)
    pf = torch.randn(n, f.point_features, generator=g) if f.point_features else None
    return x, d, c, ray_idx, pf


def _run(f, inputs):
    *args, pf = inputs
    return f(*args) if pf is None else f(*args, point_feats=pf)


def _build(make, seed=0, **kw):
    torch.manual_seed(seed)
    f = make(**kw)
    return f, torch.rand(4)  # the draw after building: same value iff building consumed the same RNG


# -- P = 0: the field of before ---------------------------------------------------------------------------------
@pytest.mark.parametrize("make,n_params", PARAMS_BEFORE)
def test_no_point_features_builds_the_field_of_before(make, n_params):
    omitted, after_a = _build(make)
    zero, after_b = _build(make, point_features=0)
    assert omitted.point_features == zero.point_features == 0
    assert sum(p.numel() for p in zero.parameters()) == n_params
    assert torch.equal(after_a, after_b)
    sa, sb = omitted.state_dict(), zero.state_dict()
    assert list(sa) == list(sb) and not any("point" in k for k in sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    inputs = (_mlp_inputs if isinstance(zero, MLPField) else _tri_inputs)(zero)
    for a, b in zip(_run(omitted, inputs), _run(zero, inputs), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("make", [MLP_PLAIN, MLP_FULL, TRI_PLAIN, TRI_FULL])
def test_point_features_draw_last_and_start_from_the_plain_field(make):
    """P > 0 adds only its own weights, drawn after the others; with zero features it is the P = 0 field."""
    plain, _ = _build(make)
    feat, _ = _build(make, point_features=4)
    assert feat.hidden == plain.hidden and feat.semantic_classes == plain.semantic_classes
    sp, sf = plain.state_dict(), feat.state_dict()
    new = [k for k in sf if k not in sp]
    assert new and all("point" in k for k in new)
    assert all(torch.equal(sp[k], sf[k]) for k in sp)
    inputs = (_mlp_inputs if isinstance(feat, MLPField) else _tri_inputs)(feat)
    zeros = (*inputs[:-1], torch.zeros_like(inputs[-1]))
    for a, b in zip(_run(plain, (*inputs[:-1], None)), _run(feat, zeros), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


# -- P > 0: used, differentiable, per point ---------------------------------------------------------------------
@pytest.mark.parametrize("regions", [None, REGIONS])
@pytest.mark.parametrize("onednn", [False, True])
def test_mlp_point_features_change_the_output_and_get_gradients(regions, onednn):
    f, _ = _build(MLP, cond_dim=6, regions=regions, point_features=4, onednn=onednn, semantic_classes=2)
    assert f.point_features == 4 and len(f.point_proj) == len(f.input_layers) == 2
    x, d, c, pf = _mlp_inputs(f, n_rays=8, n_samples=6)
    pf.requires_grad_()
    out = f(x, d, c, point_feats=pf)
    assert out[0].shape == (8, 6, 3) and out[1].shape == (8, 6) and out[-1].shape == (8, 6, 2)
    assert len(out) == (4 if regions else 3)
    sum(o.sum() for o in out).backward()
    assert pf.grad is not None and (pf.grad.abs().sum(-1) > 0).float().mean() > 0.5  # most points' do
    for name, p in f.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.no_grad():
        other = f(x, d, c, point_feats=pf + 0.05)
        # only the changed point moves: the features enter per point, in the points' layout
        one = pf.detach().clone()
        one[3, 2] += 0.05
        moved = f(x, d, c, point_feats=one)
    assert (other[0] - out[0]).abs().max() > 1e-6 and (other[1] - out[1]).abs().max() > 1e-5
    assert ((other[1] - out[1]).abs() > 0).float().mean() > 0.5  # most points' density moves (some ReLUs are dead)
    changed = ((moved[1] - out[1]).abs() > 0) | ((moved[0] - out[0]).abs() > 0).any(-1)
    assert changed[3, 2] and changed.sum() == 1


@pytest.mark.parametrize("regions", [None, REGIONS])
def test_mlp_backends_agree_with_point_features(regions):
    results = []
    for onednn in (True, False):
        f, _ = _build(MLP, cond_dim=6, regions=regions, point_features=3, onednn=onednn)
        x, d, c, pf = _mlp_inputs(f, n_rays=8, n_samples=6)
        pf.requires_grad_()
        out = f(x, d, c, point_feats=pf)
        sum(o.sum() for o in out).backward()
        results.append((out, {n: p.grad for n, p in f.named_parameters()}, pf.grad))
    (oa, ga, pa), (ob, gb, pb) = results
    for a, b in zip(oa, ob, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4)


def test_mlp_point_features_are_concatenated_to_the_position():
    """The first layer equals the naive layer over cat(PE(x), f, c): one weight matrix, the concat's maths."""
    f, _ = _build(MLP, cond_dim=5, point_features=3, skips=(), onednn=False)
    x, d, c, pf = _mlp_inputs(f)
    pe = f.pos_enc(x.reshape(-1, 3))
    w = torch.cat([f.trunk[0].weight, f.point_proj[0].weight, f.cond_proj[0].weight], dim=1)
    inp = torch.cat([pe, pf.reshape(-1, 3), c.repeat_interleave(x.shape[1], 0)], dim=1)
    h = torch.relu(inp @ w.t() + f.trunk[0].bias)
    for layer in f.trunk[1:]:
        h = torch.relu(layer(h))
    sigma = F.softplus(h @ f.head.weight[0] + f.head.bias[0])
    torch.testing.assert_close(f(x, d, c, point_feats=pf)[1].reshape(-1), sigma, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [TRI_PLAIN, TRI_FULL])
def test_triplane_point_features_change_the_output_and_get_gradients(make):
    f, _ = _build(make, point_features=4)
    assert f.point_features == 4
    x, d, c, ray_idx, pf = _tri_inputs(f)
    pf.requires_grad_()
    out = f(x, d, c, ray_idx, point_feats=pf)
    assert out[0].shape == (40, 3) and out[1].shape == (40,)
    sum(o.sum() for o in out).backward()
    assert pf.grad is not None and pf.grad.abs().sum(-1).min() > 0
    assert f.point_in.weight.grad is not None and f.point_in.weight.grad.abs().sum() > 0
    with torch.no_grad():
        other = f(x, d, c, ray_idx, point_feats=pf + 0.05)
        one = pf.detach().clone()
        one[7] += 0.05
        moved = f(x, d, c, ray_idx, point_feats=one)
    assert (other[0] - out[0]).abs().max() > 1e-6 and (other[1] - out[1]).abs().max() > 1e-5
    assert ((other[1] - out[1]).abs() > 0).float().mean() > 0.5
    changed = ((moved[1] - out[1]).abs() > 0) | ((moved[0] - out[0]).abs() > 0).any(-1)
    assert changed[7] and changed.sum() == 1
    # the occupancy update's max over conditions takes the same features: one condition -> forward's sigma
    with torch.no_grad():
        one_ray = torch.zeros_like(ray_idx)
        ref = f(x, d[:1], c[:1], one_ray, point_feats=pf)[1]
        torch.testing.assert_close(f.max_density(x, c[:1], point_feats=pf), ref)


# -- errors ------------------------------------------------------------------------------------------------------
def test_mlp_point_feature_shape_errors():
    f, _ = _build(MLP, cond_dim=5, point_features=4)
    x, d, c, pf = _mlp_inputs(f)  # x [6, 5, 3]
    with pytest.raises(LipspaceError, match=r"point_features=4 expects point_feats of shape \[6, 5, 4\].*got None"):
        f(x, d, c)
    with pytest.raises(LipspaceError, match=r"\[6, 5, 4\].*got \[6, 5, 3\]"):
        f(x, d, c, point_feats=pf[..., :3])
    with pytest.raises(LipspaceError, match=r"\[6, 5, 4\].*got \[30, 4\]"):
        f(x, d, c, point_feats=pf.reshape(30, 4))
    plain, _ = _build(MLP, cond_dim=5)
    with pytest.raises(LipspaceError, match=r"point_features=0 takes no point_feats, got shape \[6, 5, 4\]"):
        plain(x, d, c, point_feats=pf)
    with pytest.raises(ValueError, match="point_features must be >= 0"):
        MLP(cond_dim=5, point_features=-1)


def test_triplane_point_feature_shape_errors():
    f, _ = _build(TRI_PLAIN, point_features=4)
    x, d, c, ray_idx, pf = _tri_inputs(f)
    with pytest.raises(LipspaceError, match=r"point_features=4 expects point_feats of shape \[40, 4\].*got None"):
        f(x, d, c, ray_idx)
    with pytest.raises(LipspaceError, match=r"\[40, 4\].*got \[40, 3\]"):
        f(x, d, c, ray_idx, point_feats=pf[:, :3])
    with pytest.raises(LipspaceError, match=r"\[40, 4\].*got \[4, 10, 4\]"):
        f(x, d, c, ray_idx, point_feats=pf.reshape(4, 10, 4))
    with pytest.raises(LipspaceError, match=r"\[40, 4\].*got None"):
        f.max_density(x, c)
    plain, _ = _build(TRI_PLAIN)
    with pytest.raises(LipspaceError, match=r"point_features=0 takes no point_feats, got shape \[40, 4\]"):
        plain(x, d, c, ray_idx, point_feats=pf)
    with pytest.raises(LipspaceError, match="point_features must be >= 0"):
        TRI(cond_dim=6, point_features=-1)


# -- the features are used ---------------------------------------------------------------------------------------
def _fit_sigma(point_features: int, steps: int = 200) -> float:
    """Fit sigma = softplus(2 f_0 - f_1) + 0.5 f_2^2, a function of the point's features only (fresh random points
    and features every step), and return the held-out MSE."""
    torch.manual_seed(0)
    f = MLPField(cond_dim=0, hidden=32, n_layers=4, pos_freqs=4, dir_freqs=2, density_activation="softplus",
                 point_features=point_features)
    opt = torch.optim.Adam(f.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)

    def batch():
        x = torch.rand(32, 8, 3, generator=g) * 2 - 1
        d = F.normalize(torch.randn(32, 3, generator=g), dim=-1)
        feats = torch.randn(32, 8, 4, generator=g)
        target = F.softplus(2 * feats[..., 0] - feats[..., 1]) + 0.5 * feats[..., 2] ** 2
        return x, d, feats, target

    def loss_of(x, d, feats, target):
        sigma = f(x, d, None, point_feats=feats[..., :point_features] if point_features else None)[1]
        return F.mse_loss(sigma, target)

    for _ in range(steps):
        opt.zero_grad()
        loss_of(*batch()).backward()
        opt.step()
    with torch.no_grad():
        return loss_of(*batch()).item()


def test_a_field_with_point_features_fits_a_feature_dependent_density():
    with_feats, without = _fit_sigma(4), _fit_sigma(0)
    assert with_feats < 0.05 * without, (with_feats, without)  # measured ~0.005x over seeds
