"""Volume rendering and ray sampling on cases with known answers."""

import math

import pytest
import torch

from lipspace.renderers.volume import composite, sample_pdf, stratified_samples


def _rays(n, s, near=1.0, far=3.0):
    return torch.linspace(near, far, s).expand(n, s).clone()


def test_one_opaque_sample_gives_its_colour_and_depth():
    t = _rays(2, 5)
    sigma = torch.zeros(2, 5)
    sigma[:, 2] = 1e6
    rgb = torch.full((2, 5, 3), 0.3)
    rgb[:, 2] = torch.tensor([0.9, 0.1, 0.5])
    out = composite(rgb, sigma, t, bg=torch.zeros(2, 3))
    torch.testing.assert_close(out["rgb"], torch.tensor([[0.9, 0.1, 0.5]] * 2))
    torch.testing.assert_close(out["depth"], t[:, 2])
    torch.testing.assert_close(out["acc"], torch.ones(2))


def test_empty_ray_is_exactly_background():
    bg = torch.tensor([[0.2, 0.4, 0.6], [1.0, 0.0, 0.25]])
    out = composite(torch.rand(2, 8, 3), torch.zeros(2, 8), _rays(2, 8), bg)
    assert torch.equal(out["rgb"], bg)
    assert torch.equal(out["acc"], torch.zeros(2))
    assert torch.equal(out["weights"][:, -1], torch.ones(2))


def test_ray_with_near_equal_far_is_exactly_background():
    t = torch.full((3, 6), 2.0)
    bg = torch.rand(3, 3)
    out = composite(torch.rand(3, 6, 3), torch.rand(3, 6) * 100, t, bg)
    assert torch.equal(out["rgb"], bg)
    assert torch.equal(out["acc"], torch.zeros(3))


def test_weights_on_real_samples_sum_to_at_most_one():
    g = torch.Generator().manual_seed(0)
    t = torch.sort(torch.rand(64, 32, generator=g) * 4, dim=-1).values
    rgb, sigma = torch.rand(64, 32, 3, generator=g), torch.rand(64, 32, generator=g) * 5
    bg = torch.rand(64, 3, generator=g)
    out = composite(rgb, sigma, t, bg)
    w = out["weights"]
    assert (w >= 0).all()
    assert (w[:, :-1].sum(-1) <= 1 + 1e-6).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(64))  # the background takes the rest
    torch.testing.assert_close(out["acc"], w[:, :-1].sum(-1))


def test_semi_transparent_two_layers_against_hand_computation():
    # samples at t = 0, 1, 3 (last is background); sigma 0.5 over length 1, sigma 0.25 over length 2
    t = torch.tensor([[0.0, 1.0, 3.0]])
    sigma = torch.tensor([[0.5, 0.25, 123.0]])  # last sigma ignored: background has alpha 1
    rgb = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [0.7, 0.7, 0.7]]])  # last colour ignored: bg used
    bg = torch.tensor([[0, 0, 1.0]])
    a1, a2 = 1 - math.exp(-0.5), 1 - math.exp(-0.5)
    w1, w2 = a1, (1 - a1) * a2
    w_bg = (1 - a1) * (1 - a2)
    out = composite(rgb, sigma, t, bg)
    torch.testing.assert_close(out["rgb"], torch.tensor([[w1, w2, w_bg]]))
    torch.testing.assert_close(out["acc"], torch.tensor([w1 + w2]))
    torch.testing.assert_close(out["depth"], torch.tensor([w1 * 0 + w2 * 1 + w_bg * 3]))


def test_stratified_samples_sorted_in_bounds_last_at_far():
    near, far = torch.tensor([0.5, 1.0, 2.0]), torch.tensor([1.5, 4.0, 2.0])
    for perturb in (False, True):
        t = stratified_samples(near, far, 16, perturb, generator=torch.Generator().manual_seed(1))
        assert t.shape == (3, 16)
        assert (t[:, 1:] >= t[:, :-1]).all()
        assert (t >= near[:, None]).all() and (t <= far[:, None] + 1e-6).all()
        torch.testing.assert_close(t[:, -1], far)
    torch.testing.assert_close(stratified_samples(near, far, 3, False)[0], torch.tensor([0.5, 1.0, 1.5]))


def test_sample_pdf_all_mass_in_one_bin():
    bins = torch.linspace(0, 10, 11).expand(4, 11)
    weights = torch.zeros(4, 10)
    weights[:, 6] = 1.0
    for det in (True, False):
        s = sample_pdf(bins, weights, 32, deterministic=det, generator=torch.Generator().manual_seed(0))
        assert s.shape == (4, 32)
        assert ((s >= 6.0) & (s <= 7.0)).all()


def test_sample_pdf_in_range_sorted_and_follows_weights():
    g = torch.Generator().manual_seed(3)
    bins = torch.sort(torch.rand(8, 17, generator=g) * 5, dim=-1).values
    weights = torch.rand(8, 16, generator=g)
    s = sample_pdf(bins, weights, 200, deterministic=False, generator=g)
    assert (s >= bins[:, :1]).all() and (s <= bins[:, -1:]).all()
    assert (s[:, 1:] >= s[:, :-1]).all()
    # two-bin pdf with 3:1 mass -> ~3/4 of deterministic samples in the heavy bin
    s = sample_pdf(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[3.0, 1.0]]), 100, deterministic=True)
    assert (s < 1.0).sum().item() == pytest.approx(75, abs=1)


def test_sample_pdf_deterministic_is_reproducible_and_detached():
    bins = torch.linspace(0, 1, 9).expand(3, 9)
    weights = torch.rand(3, 8, requires_grad=True)
    a = sample_pdf(bins, weights, 16, deterministic=True)
    b = sample_pdf(bins, weights, 16, deterministic=True)
    assert torch.equal(a, b)
    assert not a.requires_grad
    assert (a[:, 1:] >= a[:, :-1]).all()
