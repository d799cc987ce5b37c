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


def test_audio_regressor_learns_alongside_and_drives_by_audio():
    c = ExpressionConditioner(n_frames=8, inputs={"expr": 53, "audio": 80},
                              audio={"backend": "mel", "window": 16}, smooth_window=0)
    audio = torch.randn(8, 16, 80)
    expr = torch.rand(8, 53)
    c.train()
    c({"expr": expr, "audio": audio}, torch.arange(8))
    reg = c.regularizer(torch.arange(8))
    assert reg > 0 and c._aux is None  # the auxiliary loss is consumed once
    opt = torch.optim.Adam(c.audio_map.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        opt.zero_grad()
        c({"expr": expr, "audio": audio}, torch.arange(8))
        loss = c._aux
        first = first if first is not None else float(loss)
        c.regularizer(torch.arange(8)).backward()
        opt.step()
    assert float(loss) < 0.2 * first
    c.eval()
    seq = {"expr": torch.zeros(8, 53), "audio": audio}
    assert torch.equal(c.prepare_sequence(seq)["expr"], seq["expr"])  # tracked expressions by default
    with c.driving_by_audio():
        pred = c.prepare_sequence(seq)["expr"]
    assert torch.allclose(pred, c.predict_expr(audio)) and not torch.allclose(pred, seq["expr"])


def test_driving_by_audio_without_a_regressor_is_clear():
    with pytest.raises(LipspaceError, match="no audio -> expression regressor"):
        with ExpressionConditioner(n_frames=4).driving_by_audio():
            pass
    with pytest.raises(LipspaceError, match="reads 'expr' \\(and 'audio'"):
        ExpressionConditioner(n_frames=4, inputs={"expr": 53}, audio={"backend": "mel"})


def test_lipnerf_preset_trains_and_is_evaluated_driven_by_audio(tiny_dataset, tmp_path):
    import numpy as np

    from lipspace.config import compose_train
    from lipspace.tasks.evaluate import evaluate
    from lipspace.tasks.train import train

    out = tmp_path / "run"
    cfg = compose_train(["experiment=lipnerf", "data=dir", f"data.root={tiny_dataset}", "debug=fast", "logger=csv",
                         "conditioner.audio.window=8"], out)
    train(cfg, out, {"conditioner": "expression", "renderer": "mlp"})
    df = evaluate(out, videos=False)
    rows = df[df.eval_set == "heldout/utt_00"]
    assert sorted(rows.driver) == ["audio", "oracle_inputs"]
    audio_row = rows[rows.driver == "audio"].iloc[0]
    assert np.isfinite(audio_row.psnr) and audio_row.expr_mse >= 0
