"""AD-NeRF's conditioner: AudioNet / AudioAttNet shapes and sizes, the attention switch, train + eval by audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipspace.conditioners.audio_net import AudioAttNet, AudioNet
from lipspace.conditioners.deepspeech import DeepSpeechConditioner
from lipspace.utils.errors import LipspaceError


def test_audio_net_is_ad_nerfs_for_a_16_frame_deepspeech_window():
    net = AudioNet(feat_dim=29, window=16, dim_aud=64)
    convs = [m for m in net.encoder_conv if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [(29, 32, 2), (32, 32, 2), (32, 64, 2),
                                                                             (64, 64, 2)]
    # AD-NeRF AudioNet(dim_aud=64, win_size=16) parameter count: convs + fc 64->64->64
    n = sum(p.numel() for p in net.parameters())
    expect = (29 * 32 * 3 + 32) + (32 * 32 * 3 + 32) + (32 * 64 * 3 + 64) + (64 * 64 * 3 + 64) + (64 * 64 + 64) * 2
    assert n == expect
    assert net(torch.randn(5, 16, 29)).shape == (5, 64)
    assert AudioNet(80, window=32).encoder_fc1[0].in_features == 64  # one more conv: length 1 again


def test_audio_att_net_weights_sum_to_one():
    att = AudioAttNet(dim_aud=64, seq_len=8)
    x = torch.randn(3, 8, 64)
    w = att.weights(x)
    assert w.shape == (3, 8) and torch.allclose(w.sum(1), torch.ones(3))
    assert torch.allclose(att(x), (w[..., None] * x).sum(1))


def test_attention_starts_at_the_configured_step():
    c = DeepSpeechConditioner({"audio": 80}, {"backend": "mel", "window": 16, "context": 8}, max_steps=100,
                              att_start_fraction=0.75)
    a = torch.randn(4, 8, 16, 80)
    before = c({"audio": a})
    assert torch.allclose(before, c.audio_net(a[:, 4]))  # the centre frame's code only
    c.update_step(74)
    assert not bool(c.att_on)
    c.update_step(75)
    after = c({"audio": a})
    assert bool(c.att_on) and after.shape == (4, 64) and not torch.allclose(before, after)
    # the switch is part of the state: a resumed or evaluated model keeps it
    assert "att_on" in c.state_dict()


def test_wrong_input_shapes_are_clear():
    c = DeepSpeechConditioner({"audio": 80}, {"window": 16, "context": 8})
    with pytest.raises(LipspaceError, match=r"audio input must be \[F, 8, 16, dim\]"):
        c({"audio": torch.randn(4, 4, 16, 80)})
    with pytest.raises(LipspaceError, match="reads exactly one input 'audio'"):
        DeepSpeechConditioner({"expr": 53})


def test_train_and_evaluate_driven_by_audio(tiny_dataset, tmp_path):
    from lipspace.utils.config import compose_train
    from lipspace.tasks.evaluate import evaluate
    from lipspace.tasks.train import train

    out = tmp_path / "run"
    cfg = compose_train(["data=dir", f"data.root={tiny_dataset}", "debug=fast", "logger=csv",
                         "conditioner=deepspeech", "conditioner.audio.window=8"], out)
    train(cfg, out, {"conditioner": "deepspeech", "renderer": "mlp"})
    df = evaluate(out, videos=False)
    row = df[df.eval_set == "heldout/utt_00"].iloc[0]
    assert row.driver == "audio" and np.isfinite(row.psnr)


def test_width_mismatch_fails_at_start_up(tiny_dataset, tmp_path):
    from lipspace.utils.config import compose_train
    from lipspace.tasks.train import train

    out = tmp_path / "run"
    cfg = compose_train(["data=dir", f"data.root={tiny_dataset}", "debug=fast", "logger=csv",
                         "conditioner=deepspeech", "conditioner.inputs.audio=29"], out)
    with pytest.raises(LipspaceError, match="expects audio features of width 29, but backend 'mel' gives 80"):
        train(cfg, out)


def test_prepare_standardises_audio_with_training_frames_only():
    """Raw log-mel sits around -4; unstandardised, it killed a tri-plane field's density within 16 steps (obama)."""
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    audio = rng.normal(-4.0, 2.0, (30, 8, 16, 80)).astype(np.float32)
    audio[20:] += 100.0  # held-out frames: must not enter the statistics
    c = DeepSpeechConditioner(inputs={"audio": 80}, audio={"backend": "mel", "window": 16, "context": 8})
    before = c({"audio": torch.from_numpy(audio[:4])})
    c.prepare(SimpleNamespace(tracks={"audio": audio}), np.arange(20))
    flat = audio[:20].reshape(-1, 80)
    assert np.allclose(c.a_mean.numpy(), flat.mean(0), atol=1e-4)
    assert np.allclose(c.a_std.numpy(), flat.std(0, ddof=1), rtol=1e-3)
    after = c({"audio": torch.from_numpy(audio[:4])})
    assert not torch.allclose(before, after)
    state = c.state_dict()
    assert {"a_mean", "a_std"} <= set(state)  # checkpoints carry the statistics for driving by new audio
