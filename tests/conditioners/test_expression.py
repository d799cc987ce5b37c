import numpy as np
import pytest
import torch

from lipspace.conditioners.expression import ExpressionConditioner
from lipspace.errors import LipspaceError


def test_dims_without_and_with_projection():
    c = ExpressionConditioner(n_frames=10)
    assert c.out_dim == 53 + 32
    out = c({"expr": torch.zeros(3, 53)}, torch.tensor([0, 1, 2]))
    assert out.shape == (3, 85)
    p = ExpressionConditioner(n_frames=10, out_dim=16)
    assert p({"expr": torch.zeros(2, 53)}, None).shape == (2, 16) and p.out_dim == 16


def test_unseen_frames_use_mean_of_trained_latents():
    c = ExpressionConditioner(n_frames=6, latent_dim=4)
    c.train()
    c({"expr": torch.zeros(2, 53)}, torch.tensor([1, 3]))
    c.eval()
    expected = c.latents.weight[[1, 3]].mean(0)
    out = c({"expr": torch.zeros(1, 53)}, torch.tensor([5]))  # frame 5 never trained
    assert torch.allclose(out[0, 53:], expected)
    trained = c({"expr": torch.zeros(1, 53)}, torch.tensor([3]))
    assert torch.allclose(trained[0, 53:], c.latents.weight[3])
    driven = c({"expr": torch.zeros(1, 53)}, None)
    assert torch.allclose(driven[0, 53:], expected)


def test_latent_regulariser_value():
    c = ExpressionConditioner(n_frames=4, latent_dim=2, latent_reg=0.01)
    with torch.no_grad():
        c.latents.weight.copy_(torch.tensor([[3.0, 4.0], [0, 0], [1, 0], [0, 0]]))
    reg = c.regularizer(torch.tensor([0, 2]))
    assert torch.isclose(reg, torch.tensor(0.01 * (25 + 1) / 2))


def test_savgol_smoothing_keeps_quadratics_and_removes_jitter():
    c = ExpressionConditioner(n_frames=4)
    t = torch.arange(20, dtype=torch.float32)[:, None]
    quad = (0.01 * t**2).expand(20, 53).contiguous()
    assert torch.allclose(c.prepare_sequence({"expr": quad})["expr"], quad, atol=1e-4)
    noisy = quad + 0.1 * torch.from_numpy(np.random.default_rng(0).standard_normal((20, 53))).float()
    smoothed = c.prepare_sequence({"expr": noisy})["expr"]
    assert (smoothed - quad).abs().mean() < (noisy - quad).abs().mean()


def test_wrong_input_dim_is_one_clear_error():
    c = ExpressionConditioner(n_frames=4)
    with pytest.raises(LipspaceError, match="input 'expr' has dim 79, declared 53"):
        c({"expr": torch.zeros(1, 79)}, None)


def test_bad_smoothing_config():
    with pytest.raises(LipspaceError, match="smooth_window=4"):
        ExpressionConditioner(n_frames=4, smooth_window=4)
