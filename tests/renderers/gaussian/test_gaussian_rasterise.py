"""Tile rasteriser: alpha compositing on hand-computed cases, independence of input order, agreement with the
dense (untiled) reference in values and gradients, gradients through projection + rasterisation, and the gsplat
backend (agreement only where CUDA and gsplat exist; a clear error elsewhere)."""

import math

import pytest
import torch

from lipspace.renderers.gaussian.gsplat_backend import gsplat_available, rasterise_gsplat
from lipspace.renderers.gaussian.projection import project_gaussians
from lipspace.renderers.gaussian.rasterise import _CompositeTiles, rasterise, rasterise_dense
from lipspace.utils.errors import LipspaceError


def _splats(means2d, var, depths, opac, dtype=torch.float64):
    """F=1 camera of isotropic 2-D splats of variance ``var`` px^2."""
    n = len(means2d)
    cov = var * torch.eye(2, dtype=dtype).expand(1, n, 2, 2)
    return (torch.tensor(means2d, dtype=dtype)[None], cov, torch.tensor(depths, dtype=dtype)[None],
            torch.tensor(opac, dtype=dtype), torch.ones(1, n, dtype=torch.bool))


def test_one_opaque_gaussian_over_the_background():
    means2d, cov, depths, opac, vis = _splats([[20.5, 10.5]], 4.0, [2.0], [1.0])
    colour = torch.tensor([[0.2, 0.4, 0.6]], dtype=torch.float64)
    bg = torch.full((1, 24, 40, 3), 0.5, dtype=torch.float64)
    out = rasterise(means2d, cov, depths, colour, opac, vis, (24, 40), bg)
    assert out["rgb"].shape == (1, 24, 40, 3) and out["alpha"].shape == out["depth"].shape == (1, 24, 40)
    # at the mean alpha = min(0.99, 1): 0.99 c + 0.01 bg; depth map 0.99 z
    assert torch.allclose(out["rgb"][0, 10, 20], 0.99 * colour[0] + 0.01 * 0.5)
    assert torch.allclose(out["alpha"][0, 10, 20], torch.tensor(0.99, dtype=torch.float64))
    assert torch.allclose(out["depth"][0, 10, 20], torch.tensor(0.99 * 2.0, dtype=torch.float64))
    # one pixel to the right: alpha = exp(-0.5 / 4)
    a = math.exp(-0.5 * 1 / 4.0)
    assert torch.allclose(out["rgb"][0, 10, 21], a * colour[0] + (1 - a) * 0.5)
    # far away (alpha < 1/255): the background exactly, alpha 0
    assert torch.equal(out["rgb"][0, 0, 0], bg[0, 0, 0]) and out["alpha"][0, 0, 0] == 0
    assert torch.equal(out["rgb"][0, 23, 39], bg[0, 23, 39])


def test_two_gaussians_composite_front_to_back_whatever_the_input_order():
    # two splats on the same pixel centre, opacities 0.6 (front, red) and 0.5 (back, green)
    means2d, cov, _, opac, vis = _splats([[8.5, 8.5], [8.5, 8.5]], 2.0, [1.0, 3.0], [0.6, 0.5])
    col = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64)
    bg = torch.zeros(1, 16, 16, 3, dtype=torch.float64)
    bg[..., 2] = 1.0
    expected = 0.6 * col[0] + 0.4 * 0.5 * col[1] + 0.4 * 0.5 * bg[0, 0, 0]
    for depths, c, o in [([1.0, 3.0], col, opac), ([3.0, 1.0], col.flip(0), opac.flip(0))]:  # same scene, reordered
        out = rasterise(means2d, cov, torch.tensor([depths], dtype=torch.float64), c, o, vis, (16, 16), bg)
        assert torch.allclose(out["rgb"][0, 8, 8], expected)
        assert torch.allclose(out["depth"][0, 8, 8], torch.tensor(0.6 * 1.0 + 0.4 * 0.5 * 3.0, dtype=torch.float64))
    # the depths swapped: green in front
    out = rasterise(means2d, cov, torch.tensor([[3.0, 1.0]], dtype=torch.float64), col, opac, vis, (16, 16), bg)
    assert torch.allclose(out["rgb"][0, 8, 8], 0.5 * col[1] + 0.5 * 0.6 * col[0] + 0.5 * 0.4 * bg[0, 0, 0])


def _random_scene(n=80, f=2, hw=(37, 45), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([1.6, 1.4, 1.0], dtype=dtype)
    log_scales = torch.log(0.02 + 0.12 * torch.rand(n, 3, generator=g, dtype=dtype))
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    colours = torch.rand(n, 3, generator=g, dtype=dtype)
    opac = 0.05 + 0.95 * torch.rand(n, generator=g, dtype=dtype)
    pose = torch.eye(4, dtype=dtype).repeat(f, 1, 1)
    pose[:, 2, 3] = 3.0
    pose[1, 0, 3] = 0.2  # the second camera shifted
    k = torch.tensor([[hw[1], 1.05 * hw[1], hw[1] / 2, hw[0] / 2]], dtype=dtype).repeat(f, 1)
    bg = torch.rand(f, *hw, 3, generator=g, dtype=dtype)
    return [means, log_scales, quats, colours, opac], pose, k, bg


def _render(params, pose, k, bg, fn):
    means, log_scales, quats, colours, opac = params
    hw = tuple(bg.shape[1:3])
    p = project_gaussians(means, log_scales, quats, pose, k, hw=hw)
    return fn(p.means2d, p.cov2d, p.depths, colours, opac, p.visible, hw, bg)


# a small image (groups of few tiles: native cumprod / cumsum) and a larger one (the CPU loop over K)
SCENES = {"small": dict(n=80, hw=(37, 45)), "large": dict(n=400, hw=(70, 90))}


@pytest.mark.parametrize("scene", SCENES)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_tiled_equals_the_dense_reference(dtype, tol, scene):
    params, pose, k, bg = _random_scene(dtype=dtype, **SCENES[scene])
    tiled = _render(params, pose, k, bg, rasterise)
    dense = _render(params, pose, k, bg, rasterise_dense)
    for key in ("rgb", "alpha", "depth"):
        assert (tiled[key] - dense[key]).abs().max() < tol, key
    assert (tiled["alpha"] > 0.5).any() and (tiled["alpha"] == 0).any()  # the scene covers some pixels, not all


@pytest.mark.parametrize("scene", SCENES)
def test_gradients_reach_every_attribute_and_match_the_dense_reference(scene):
    params, pose, k, bg = _random_scene(**SCENES[scene])
    grads = []
    for fn in (rasterise, rasterise_dense):
        leaves = [p.clone().requires_grad_(True) for p in params]
        out = _render(leaves, pose, k, bg, fn)
        (out["rgb"].square().sum() + out["depth"].sum() + out["alpha"].sum()).backward()
        grads.append([p.grad for p in leaves])
    for name, g_tiled, g_dense in zip(("means", "log_scales", "quats", "colours", "opacities"), *grads):
        assert torch.isfinite(g_tiled).all() and g_tiled.abs().sum() > 0, name
        assert torch.allclose(g_tiled, g_dense, atol=1e-9, rtol=1e-7), name


def test_gradients_reach_the_2d_inputs():
    params, pose, k, bg = _random_scene(dtype=torch.float32)
    means, log_scales, quats, colours, opac = params
    p = project_gaussians(means, log_scales, quats, pose, k)
    m2, cov = p.means2d.detach().requires_grad_(), p.cov2d.detach().requires_grad_()
    col, op = colours.clone().requires_grad_(), opac.clone().requires_grad_()
    out = rasterise(m2, cov, p.depths, col, op, p.visible, tuple(bg.shape[1:3]), bg)
    out["rgb"].mean().backward()
    for t in (m2, cov, col, op):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_composite_backward_passes_gradcheck():
    g = torch.Generator().manual_seed(1)
    b, k, t = 2, 6, 4
    args = [-2 * torch.rand(b, k, t, generator=g, dtype=torch.float64), -torch.rand(b, k, t, generator=g,
                                                                                   dtype=torch.float64),
            0.3 * torch.randn(b, k, t, generator=g, dtype=torch.float64),
            torch.randn(b, k, t, generator=g, dtype=torch.float64),
            torch.rand(b, k, 4, generator=g, dtype=torch.float64)]
    assert torch.autograd.gradcheck(_CompositeTiles.apply, [a.requires_grad_() for a in args])


def test_no_visible_gaussian_renders_the_background():
    params, pose, k, bg = _random_scene(dtype=torch.float32)
    pose = pose.clone()
    pose[:, 2, 3] = -5.0  # everything behind the camera
    out = _render(params, pose, k, bg, rasterise)
    assert torch.equal(out["rgb"], bg) and (out["alpha"] == 0).all()


@pytest.mark.skipif(gsplat_available(), reason="gsplat and CUDA are here")
def test_gsplat_backend_says_how_to_get_it():
    params, pose, k, bg = _random_scene(dtype=torch.float32)
    means, log_scales, quats, colours, opac = params
    with pytest.raises(LipspaceError, match="gsplat"):
        rasterise_gsplat(means, log_scales, quats, colours, opac, pose, k, tuple(bg.shape[1:3]), bg)


@pytest.mark.skipif(not gsplat_available(), reason="needs CUDA and the gsplat package")
def test_gsplat_backend_agrees_with_the_torch_path():
    params, pose, k, bg = _random_scene(dtype=torch.float32)
    params, pose, k, bg = [p.cuda() for p in params], pose.cuda(), k.cuda(), bg.cuda()
    ours = _render(params, pose, k, bg, rasterise)
    means, log_scales, quats, colours, opac = params
    theirs = rasterise_gsplat(means, log_scales, quats, colours, opac, pose, k, tuple(bg.shape[1:3]), bg)
    for key in ("rgb", "alpha", "depth"):
        assert (ours[key] - theirs[key]).abs().mean() < 2e-3, key
        assert (ours[key] - theirs[key]).abs().max() < 5e-2, key


def test_the_cpu_loop_covers_the_large_scene(monkeypatch):
    import lipspace.renderers.gaussian.rasterise as mod

    params, pose, k, bg = _random_scene(dtype=torch.float32, **SCENES["large"])
    seen, orig = [], mod._loop_ok
    monkeypatch.setattr(mod, "_loop_ok", lambda x: seen.append(orig(x)) or orig(x))
    _render(params, pose, k, bg, rasterise)
    assert any(seen) and not all(seen)  # both paths ran in the large scene's groups
