"""torso=nerf (AD-NeRF's torso NeRF under the head renderer) learns the synthetic head's moving torso: on held-out
frames its torso pixels beat the static mean frame, and the results rows say torso=nerf. (Measured once, 64 px, 100
head-stage + 300 torso-stage steps: 28.3 dB vs the mean frame's 26.1 on the torso pixels.)"""

import pytest
import torch

from lipspace.data.synthetic import generate_synthetic


@pytest.fixture(scope="module")
def moving_torso(tmp_path_factory):
    # the torso follows the head's yaw and pitch fully, 0.2 s late: a static mean frame blurs it
    return generate_synthetic(tmp_path_factory.mktemp("torso") / "ds", seconds=3.0, resolution=64, seed=0,
                              heldout_utterances=1, heldout_seconds=0.4, torso_follow=1.0, torso_lag_s=0.2)


@pytest.mark.slow  # ~1 min on a busy 2-core CPU
def test_torso_nerf_beats_the_mean_frame_on_held_out_torso_pixels(moving_torso, tmp_path, monkeypatch):
    from lipspace.model.inference import render_sequence
    from lipspace.model.runs import load_run
    from lipspace.tasks.train import train
    from lipspace.utils.config import compose_train

    monkeypatch.setenv("LIPSPACE_OFFLINE", "1")
    torch.manual_seed(0)
    run = tmp_path / "run"
    overrides = ["data=dir", f"data.root={moving_torso}", "experiment=lipnerf", "renderer=triplane", "torso=nerf",
                 "trainer.max_steps=400", "torso.composite.head_stage=0.25", "data.rays_per_batch=512",
                 "data.head_fraction=0.2", "logger=csv", "trainer.enable_progress_bar=false", "data.val_frames=1",
                 "trainer.check_val_every_n_epoch=100",
                 # AD-NeRF's own staging: the torso at the head's rate under the fixed head. The preset's slower own
                 # rate with the head training on (chosen for real footage, where this one went transparent: 2026-12-06)
                 # needs more than this test's 300 torso steps here (19.4 dB vs the mean frame's 26.1; 2e-3: 22.1);
                 # it is tested on a real clip (tests/renderers/test_torso_real.py) and measured by
                 # experiments/torso_options on both
                 "torso.composite.lr=null", "torso.composite.freeze_head=true"]
    train(compose_train(overrides, run), run)
    cfg, dm, system, info = load_run(run)
    assert info["torso"] == "nerf" and list(cfg.data.gt_background_classes) == []
    clip, tail = dm.clip, dm.split.test
    mean = (clip.frames[dm.split.train].float() / 255.0).mean(0)
    inputs = {k: clip.track(k, tail) for k in system.conditioner.inputs}
    err, err_mean, n = 0.0, 0.0, 0
    for i, pred, target in render_sequence(system.conditioner, system.renderer, clip, inputs, tail, indices=tail):
        torso = clip.parsing[i] == 9
        err += float((pred - target)[torso].square().sum())
        err_mean += float((mean - target)[torso].square().sum())
        n += int(torso.sum())
    assert n > 0
    psnr = lambda e: -10 * torch.log10(torch.tensor(e / (3 * n)))  # noqa: E731
    assert psnr(err) > psnr(err_mean) + 1.0, (float(psnr(err)), float(psnr(err_mean)))
