"""GP-VAE pieces on known small cases: the Cauchy kernel, the GP KL against torch.distributions, prior samples,
generation length, and a fit that lowers the loss."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from lipspace.conditioners.gpvae import PoseBlinkGPVAE, cauchy_kernel, gp_kl, sample_gp
from lipspace.conditioners.landmark_ae import single_thread
from lipspace.utils.errors import LipspaceError


def test_cauchy_kernel_values():
    k = cauchy_kernel(torch.arange(4.0), length_scale=2.0, sigma=1.5)
    assert torch.allclose(torch.diagonal(k), torch.full((4,), 2.25))
    assert torch.isclose(k[0, 2], torch.tensor(2.25 / (1 + 1.0)))  # (2/2)^2 = 1
    assert torch.allclose(k, k.T)


def test_gp_kl_matches_torch_distributions():
    torch.manual_seed(0)
    t, lat = 6, 2
    kern = cauchy_kernel(torch.arange(t, dtype=torch.float64), 3.0)
    mu = torch.randn(1, t, lat, dtype=torch.float64)
    log_var = torch.randn(1, t, lat, dtype=torch.float64) * 0.3
    ours = gp_kl(mu, log_var, kern, jitter=0.0)
    ref = sum(kl_divergence(MultivariateNormal(mu[0, :, c], torch.diag(log_var[0, :, c].exp())),
                            MultivariateNormal(torch.zeros(t, dtype=torch.float64), kern)) for c in range(lat))
    assert torch.isclose(ours, ref, rtol=1e-6)


def test_gp_kl_is_zero_when_posterior_is_the_white_prior():
    kern = torch.eye(5) * 2.0  # a kernel with no correlation
    mu, log_var = torch.zeros(3, 5, 4), torch.full((3, 5, 4), float(torch.log(torch.tensor(2.0))))
    assert abs(float(gp_kl(mu, log_var, kern, jitter=0.0))) < 1e-5
    with pytest.raises(LipspaceError, match="sequence length 4 differs"):
        gp_kl(torch.zeros(1, 4, 1), torch.zeros(1, 4, 1), kern)


def test_prior_samples_have_the_kernel_correlation():
    g = torch.Generator().manual_seed(0)
    z = sample_gp(4000, 3, 1, length_scale=2.0, generator=g)[..., 0]
    corr = torch.corrcoef(z.T)
    assert abs(float(corr[0, 1]) - 1 / (1 + 0.25)) < 0.04 and abs(float(corr[0, 2]) - 0.5) < 0.04


def test_generate_length_and_fit_lowers_the_loss():
    torch.manual_seed(0)
    m = PoseBlinkGPVAE(y_dim=3, audio_dim=5, latent_dim=2, model_dim=16, layers=1, heads=2, length_scale=5.0)
    t = torch.arange(24.0)
    a = torch.stack([torch.sin(t / 3), torch.cos(t / 5), torch.sin(t / 7), t / 24, torch.ones(24)], -1)[None]
    y = torch.stack([torch.sin(t / 6), 0.5 * torch.cos(t / 4), (t % 10 == 0).float()], -1)[None]
    a, y = a.repeat(4, 1, 1), y.repeat(4, 1, 1)
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    first = None
    with single_thread():  # 100 steps of a tiny transformer: 4 s on one thread, up to 140 s on 2 loaded cores
        for _ in range(100):
            opt.zero_grad()
            out = m.loss(y, a)
            out["loss"].backward()
            opt.step()
            first = first if first is not None else out["recon"].item()
    assert out["recon"].item() < 0.3 * first
    gen = m.generate(a[:2, :20], y[:2, 0], generator=torch.Generator().manual_seed(1))
    assert gen.shape == (2, 20, 3) and torch.isfinite(gen).all()
    with pytest.raises(LipspaceError, match=r"audio must be \[B, T, 5\]"):
        m.generate(a[:, :, :4], y[:, 0])


def test_fit_trains_on_consecutive_windows_of_the_given_frames():
    from lipspace.conditioners.gpvae import consecutive_starts, fit_gpvae

    frames = torch.tensor([0, 1, 2, 3, 10, 11, 12, 20])
    assert consecutive_starts(frames, 3) == [0, 1, 10]
    assert consecutive_starts(frames, 5) == []
    torch.manual_seed(0)
    m = PoseBlinkGPVAE(y_dim=2, audio_dim=3, latent_dim=2, model_dim=8, layers=1, heads=2)
    y, a = torch.randn(30, 2), torch.randn(30, 3)
    out = fit_gpvae(m, y, a, frames, seq=3, steps=3, batch=2)
    assert set(out) == {"loss", "recon", "kl"}
    with pytest.raises(LipspaceError, match="no run of 5 consecutive frames"):
        fit_gpvae(m, y, a, frames, seq=5, steps=1, batch=2)
