"""NeRFRenderer: outputs, eval determinism, chunked training gradients, and a small fitting run."""

import contextlib
import functools

import pytest
import torch
import torch.nn.functional as F

from lipspace.renderers import MLPField, NeRFRenderer, mse_chunk_loss


def tiny_renderer(cond_dim=4, **kwargs):
    field = functools.partial(MLPField, hidden=32, n_layers=4, pos_freqs=4, dir_freqs=2, density_activation="softplus")
    kwargs = {"n_coarse": 12, "n_fine": 12, **kwargs}
    return NeRFRenderer(field, cond_dim=cond_dim, **kwargs)


def camera_rays(n, seed=0, cond_dim=4, spread=0.3):
    """Rays from points on a sphere of radius 3 aimed near the origin, per-ray condition and background."""
    g = torch.Generator().manual_seed(seed)
    o = F.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3.0
    d = F.normalize(-o + spread * torch.randn(n, 3, generator=g), dim=-1)
    near, far = torch.full((n,), 1.5), torch.full((n,), 4.5)
    return o, d, near, far, torch.randn(n, cond_dim, generator=g), torch.rand(n, 3, generator=g)


def test_output_keys_shapes_and_field_factory():
    torch.manual_seed(0)
    r = tiny_renderer()
    assert r.coarse is not r.fine
    out = r(*camera_rays(20))
    assert set(out) == {"rgb", "rgb_coarse", "depth", "acc"}
    assert out["rgb"].shape == out["rgb_coarse"].shape == (20, 3)
    assert out["depth"].shape == out["acc"].shape == (20,)
    assert all(k.split(".")[0] in ("coarse", "fine") for k in r.state_dict())


def test_missed_rays_return_background_exactly():
    torch.manual_seed(0)
    r = tiny_renderer().eval()
    o, d, near, far, c, bg = camera_rays(8)
    out = r(o, d, near, near.clone(), c, bg)  # near == far: the ray missed the bounds
    assert torch.equal(out["rgb"], bg) and torch.equal(out["rgb_coarse"], bg)
    assert torch.equal(out["acc"], torch.zeros(8))


def test_eval_is_deterministic_and_chunked_render_matches():
    torch.manual_seed(0)
    r = tiny_renderer(eval_chunk_rays=7).eval()
    rays = camera_rays(30)
    full = r(*rays)
    chunked = r.render_chunked(*rays)
    for k in full:
        torch.testing.assert_close(chunked[k], full[k], atol=1e-6, rtol=0)
        assert not chunked[k].requires_grad


def test_forward_backward_matches_one_graph_gradients():
    torch.manual_seed(0)
    r = tiny_renderer().eval()  # no jitter, so both paths see the same samples
    o, d, near, far, c, bg = camera_rays(40)
    target = torch.rand(40, 3)
    cond_net = torch.nn.Linear(4, 4)  # stands in for a conditioner upstream of the renderer

    out = r(o, d, near, far, cond_net(c), bg)
    loss = F.mse_loss(out["rgb"], target) + F.mse_loss(out["rgb_coarse"], target)
    loss.backward()
    ref = {n: p.grad.clone() for n, p in [*r.named_parameters(), *cond_net.named_parameters()]}
    r.zero_grad()
    cond_net.zero_grad()

    res = r.forward_backward(o, d, near, far, cond_net(c), bg, mse_chunk_loss(target), chunk_rays=9)
    torch.testing.assert_close(res["loss"], loss.detach())
    torch.testing.assert_close(res["rgb"], out["rgb"].detach())
    for n, p in [*r.named_parameters(), *cond_net.named_parameters()]:
        torch.testing.assert_close(p.grad, ref[n], atol=1e-6, rtol=1e-4, msg=n)


def test_forward_backward_one_chunk_and_no_sync_on_all_but_the_last():
    torch.manual_seed(0)
    r = tiny_renderer().eval()
    o, d, near, far, c, bg = camera_rays(10)
    cond_net = torch.nn.Linear(4, 4)
    entered = []

    @contextlib.contextmanager
    def no_sync():
        entered.append(True)
        yield

    loss_fn = mse_chunk_loss(torch.rand(10, 3))
    res = r.forward_backward(o, d, near, far, cond_net(c), bg, loss_fn, chunk_rays=4, no_sync=no_sync)
    assert len(entered) == 2  # 10 rays in chunks of <= 4: three near-equal chunks, the last one syncs
    assert res["rgb"].shape == (10, 3) and cond_net.weight.grad.abs().sum() > 0
    r.zero_grad()
    cond_net.zero_grad()
    res = r.forward_backward(o, d, near, far, cond_net(c), bg, mse_chunk_loss(torch.rand(10, 3)), chunk_rays=64)
    assert res["loss"].ndim == 0 and cond_net.weight.grad.abs().sum() > 0


def test_default_train_chunk_follows_field_width():
    wide = NeRFRenderer(functools.partial(MLPField, hidden=256), cond_dim=0)
    narrow = NeRFRenderer(functools.partial(MLPField, hidden=128), cond_dim=0)
    assert narrow.train_chunk_rays == pytest.approx(2 * wide.train_chunk_rays, abs=1)
    assert NeRFRenderer(functools.partial(MLPField, hidden=64), cond_dim=0, train_chunk_rays=7).train_chunk_rays == 7


def test_training_mode_jitters_samples():
    torch.manual_seed(0)
    r = tiny_renderer().train()
    rays = camera_rays(16)
    assert not torch.equal(r(*rays)["rgb"], r(*rays)["rgb"])


def test_fitting_a_coloured_sphere_lowers_the_loss():
    torch.manual_seed(0)
    r = tiny_renderer(cond_dim=2, n_coarse=16, n_fine=16).train()
    opt = torch.optim.Adam(r.parameters(), lr=5e-3)
    o, d, near, far, _, _ = camera_rays(512, seed=1, cond_dim=2, spread=1.5)
    # ground truth: a unit sphere at the origin, red where z > 0 and green below, on a blue background
    b, c0 = (o * d).sum(-1), (o * o).sum(-1) - 1.0
    hit = b * b - c0 >= 0
    z = (o + (-b - (b * b - c0).clamp(min=0).sqrt())[:, None] * d)[:, 2]
    assert 0.2 < hit.float().mean() < 0.8  # both sphere and background are in the batch
    bg = torch.tensor([0.1, 0.2, 0.9]).expand(512, 3)
    colour = torch.where(z[:, None] > 0, torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.8, 0.2]))
    target = torch.where(hit[:, None], colour, bg)
    cond = torch.zeros(512, 2)
    losses = []
    for step in range(200):
        sl = slice((step * 64) % 512, (step * 64) % 512 + 64)
        opt.zero_grad()
        out = r.forward_backward(o[sl], d[sl], near[sl], far[sl], cond[sl], bg[sl], mse_chunk_loss(target[sl]))
        losses.append(out["loss"].item())
        opt.step()
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.2 * first, (first, last)


def test_rejects_wrong_condition_width():
    r = tiny_renderer(cond_dim=4)
    o, d, near, far, _, bg = camera_rays(3)
    with pytest.raises(ValueError, match="cond_dim=4"):
        r(o, d, near, far, torch.zeros(3, 5), bg)
