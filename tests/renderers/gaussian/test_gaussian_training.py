"""renderer=gaussian end to end: built from its config by the system at the conditioner's width, trained on camera
batches of the tiny synthetic dataset through Lightning (densification on, the optimiser handed over by the
system's configure_optimizers), it beats the mean training frame on the held-out tail, rendered through the evaluation
path. (Measured: 200 steps, ~18 s on one busy core; held-out PSNR 38.0 dB vs the mean frame's 28.3; 1000 -> 689
Gaussians.)"""

from functools import partial

import lightning as L
import numpy as np
import torch

from lipspace.conditioners.expression import ExpressionConditioner
from lipspace.data.datamodule import TalkingHeadDataModule
from lipspace.model.build import connect_renderer
from lipspace.model.system import TalkingHeadSystem
from lipspace.renderers.gaussian import GaussianRenderer

SIZES = dict(n_surface=600, n_fill=300, n_mouth=100,
             densify={"start": 100, "every": 50, "stop": 10 ** 9, "reset_opacity_every": 0})


def test_config_builds_the_renderer(tmp_path):
    from hydra.utils import instantiate

    from lipspace.utils.config import compose_train

    cfg = compose_train(["renderer=gaussian"], tmp_path / "run")
    r = instantiate(cfg.renderer)(cond_dim=5)
    assert isinstance(r, GaussianRenderer) and r.batch_kind == "images" and r.cond_dim == 5
    assert r.densify_cfg.every == cfg.renderer.densify.every and r.lr_scale["grid"] == cfg.renderer.lr_scale.grid


def test_trains_on_camera_batches_and_beats_the_mean_frame(tiny_dataset, tmp_path):
    from lipspace.data.sampling import frame_inputs
    from lipspace.model.inference import render_sequence
    from lipspace.model.sequence_scoring import mean_frame

    torch.manual_seed(0)
    dm = TalkingHeadDataModule(str(tiny_dataset), rays_per_batch=64, frames_per_batch=3, steps_per_epoch=50,
                               val_frames=1)
    dm.load()
    dm.check_inputs({"expr": 53}, "expression")
    dm.clip.face_points = None  # the scenario measured below: Gaussians started in the sphere, not on the face grid
    system = TalkingHeadSystem(ExpressionConditioner(n_frames=dm.n_frames, latent_dim=4),
                               partial(GaussianRenderer, **SIZES), partial(torch.optim.Adam, lr=5e-3), lr_final=5e-4)
    connect_renderer(system.renderer, dm)
    assert dm.batch_kind == "images"
    n0 = system.renderer.n_gaussians
    trainer = L.Trainer(max_steps=200, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        check_val_every_n_epoch=2, default_root_dir=str(tmp_path))
    trainer.fit(system, datamodule=dm)
    r = system.renderer
    assert r.optimizer is trainer.optimizers[0] and r.last_densify["split"] + r.last_densify["cloned"] > 0
    assert r.n_gaussians != n0 and "val/psnr" in trainer.callback_metrics
    idx = dm.split.test
    baseline = mean_frame(dm.clip, dm.split.train)
    inputs = frame_inputs(dm.clip, idx, dm.inputs)
    system.eval()
    err, err_mean = [], []
    for _, pred, target in render_sequence(system.conditioner, r, dm.clip, inputs, idx, indices=idx):
        err.append(float((pred - target).square().mean()))
        err_mean.append(float((baseline - target).square().mean()))
    psnr, psnr_mean = -10 * np.log10(np.mean(err)), -10 * np.log10(np.mean(err_mean))
    assert psnr > psnr_mean + 3.0, (psnr, psnr_mean)
