"""MLPField: shapes, ranges, gradients, and the per-ray condition trick against the naive per-sample concat."""

import pytest
import torch
import torch.nn.functional as F

from lipspace.renderers.fields import MLPField
from lipspace.renderers.fields.linear import onednn_usable


def _inputs(n_rays=6, n_samples=5, cond_dim=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_rays, n_samples, 3, generator=g)
    d = F.normalize(torch.randn(n_rays, 3, generator=g), dim=-1)
    c = torch.randn(n_rays, cond_dim, generator=g)
    return x, d, c


def test_shapes_dtypes_ranges():
    field = MLPField(cond_dim=7, hidden=32, n_layers=8)
    x, d, c = _inputs()
    rgb, sigma = field(x, d, c)
    assert rgb.shape == (6, 5, 3) and sigma.shape == (6, 5)
    assert rgb.dtype == sigma.dtype == torch.float32
    assert ((rgb >= 0) & (rgb <= 1)).all() and (sigma >= 0).all()
    assert field.n_view_layers == 3 and field.view_hidden == 16  # AD-NeRF: 1 + D // 4 layers of W // 2


@pytest.mark.parametrize("onednn", [False, True])
def test_gradients_reach_every_parameter_and_the_condition(onednn):
    torch.manual_seed(0)
    field = MLPField(cond_dim=7, hidden=32, n_layers=6, skips=(2,), density_activation="softplus", onednn=onednn)
    x, d, c = _inputs(n_rays=16, n_samples=8)
    c.requires_grad_()
    rgb, sigma = field(x, d, c)
    (rgb.sum() + sigma.sum()).backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert c.grad is not None and c.grad.abs().sum() > 0
    cond_params = {n for n, _ in field.named_parameters() if n.startswith("cond_proj")}
    assert cond_params == {"cond_proj.0.weight", "cond_proj.1.weight"}


def naive_forward(field: MLPField, x, d, c):
    """AD-NeRF's FaceNeRF maths written the naive way (per-sample concat), from ``field``'s own weights."""
    n_rays, n_samples, _ = x.shape
    pe = field.pos_enc(x)
    input_pts = torch.cat([pe, c[:, None].expand(n_rays, n_samples, -1)], -1)  # cat(PE(x), c) per sample
    pe_dim = pe.shape[-1]
    h, proj = input_pts, iter(field.cond_proj)
    for i, layer in enumerate(field.trunk):
        if i in field.input_layers:
            w = layer.weight
            w_full = torch.cat([w[:, :pe_dim], next(proj).weight, w[:, pe_dim:]], 1)  # columns: PE(x) | c | h
            h = torch.cat([input_pts, h], -1) if i else input_pts
            h = F.relu(F.linear(h, w_full, layer.bias))
        else:
            h = F.relu(layer(h))
    sigma = F.relu(F.linear(h, field.head.weight[:1], field.head.bias[:1]))[..., 0]
    views = field.dir_enc(d)[:, None].expand(n_rays, n_samples, -1)
    w_view = torch.cat([field.head.weight[1:], field.dir_proj.weight], 1)  # columns: h | PE(d)
    v = F.relu(F.linear(torch.cat([h, views], -1), w_view, field.head.bias[1:]))
    for layer in field.view_layers:
        v = F.relu(layer(v))
    return torch.sigmoid(field.rgb_out(v)), sigma


@pytest.mark.parametrize("onednn", [False, True])
def test_per_ray_condition_trick_equals_naive_concat(onednn):
    torch.manual_seed(1)
    for kwargs in ({"hidden": 64, "n_layers": 8}, {"hidden": 16, "n_layers": 4, "skips": (1, 2)}):
        field = MLPField(cond_dim=9, onednn=onednn, **kwargs)
        x, d, c = _inputs(n_rays=10, n_samples=12, cond_dim=9, seed=2)
        rgb, sigma = field(x, d, c)
        rgb_naive, sigma_naive = naive_forward(field, x, d, c)
        torch.testing.assert_close(rgb, rgb_naive, atol=1e-5, rtol=0)
        torch.testing.assert_close(sigma, sigma_naive, atol=1e-5, rtol=0)


def test_unconditioned_field_and_out_of_trunk_skips():
    field = MLPField(cond_dim=0, hidden=16, n_layers=4)  # default skips=(4,) lies past a 4-layer trunk
    assert field.skips == ()
    x, d, _ = _inputs()
    rgb, sigma = field(x, d, None)
    assert rgb.shape == (6, 5, 3) and sigma.shape == (6, 5)


@pytest.mark.parametrize("cond_dim", [0, 5])
def test_onednn_path_matches_torch_path_values_and_gradients(cond_dim):
    if not onednn_usable(torch.zeros(1)):
        pytest.skip("this torch build has no working oneDNN linear; the torch path is the only one")
    torch.manual_seed(3)
    fast = MLPField(cond_dim=cond_dim, hidden=48, n_layers=8, density_activation="softplus", onednn=True)
    ref = MLPField(cond_dim=cond_dim, hidden=48, n_layers=8, density_activation="softplus", onednn=False)
    ref.load_state_dict(fast.state_dict())
    x, d, c = _inputs(n_rays=12, n_samples=9, cond_dim=cond_dim, seed=4)
    grads = []
    for field in (fast, ref):
        cc = c.clone().requires_grad_()
        rgb, sigma = field(x, d, cc)
        ((rgb * torch.linspace(0, 1, 3)).sum() + sigma.square().sum()).backward()
        grads.append([rgb, sigma] + ([cc.grad] if cond_dim else []) + [p.grad for p in field.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
