"""The Renderer contract: a renderer that declares nothing optional trains on its defaults; a rasteriser (whole
images, one condition per frame) gets camera batches from the data module and trains through the LightningModule."""

from functools import partial

import lightning as L
import pytest
import torch
from torch import nn

from lipspace.conditioners.expression import ExpressionConditioner
from lipspace.data.datamodule import TalkingHeadDataModule
from lipspace.renderers.base import Rasteriser, Renderer, VolumeRenderer
from lipspace.model.system import TalkingHeadSystem
from lipspace.model.build import connect_renderer


class ConditionedColour(VolumeRenderer):
    """A ray renderer with only the required part: colour = sigmoid(linear(cond)) blended with the background by a
    learned per-ray opacity. No param groups, step hook, scene, fused backward or regions."""

    def __init__(self, cond_dim: int):
        super().__init__(cond_dim)
        self.colour = nn.Linear(cond_dim, 4)

    def forward(self, rays_o, rays_d, near, far, cond, bg):
        rgb_a = torch.sigmoid(self.colour(cond))
        a = rgb_a[:, 3:]
        return {"rgb": a * rgb_a[:, :3] + (1 - a) * bg}


class FrameColour(Rasteriser):
    """A toy image renderer: each frame is one colour, sigmoid(linear(cond)), over the frame's background, with an
    opacity image learned at the scene's size (allocated in setup_scene)."""

    def __init__(self, cond_dim: int):
        super().__init__(cond_dim)
        self.colour = nn.Linear(cond_dim, 3)
        self.opacity: nn.Parameter | None = None
        self.steps_seen: list[int] = []
        self.batch_shapes: list[tuple] = []

    def setup_scene(self, clip):
        self.opacity = nn.Parameter(torch.zeros(*clip.hw))

    def on_train_step(self, step):
        self.steps_seen.append(step)

    def _draw(self, cond, bg):  # cond [F,C], bg [F,h,w,3]
        h, w = bg.shape[1:3]
        a = torch.sigmoid(self.opacity)[None, :, :, None]
        if a.shape[1:3] != (h, w):  # a downscaled frame (validation): the opacity at that size
            a = torch.nn.functional.adaptive_avg_pool2d(a.permute(0, 3, 1, 2), (h, w)).permute(0, 2, 3, 1)
        return a * torch.sigmoid(self.colour(cond))[:, None, None, :] + (1 - a) * bg

    def render(self, batch, cond):
        assert cond.shape == (batch["frame_idx"].shape[0], self.cond_dim)  # one condition per frame
        self.batch_shapes.append((tuple(batch["target"].shape), tuple(batch["pose"].shape)))
        return {"rgb": self._draw(cond, batch["bg"])}

    @torch.no_grad()
    def render_frame(self, frame, cond):
        return self._draw(cond[None], frame["bg"].to(cond))[0].clamp(0, 1)


def _datamodule(root) -> TalkingHeadDataModule:
    dm = TalkingHeadDataModule(str(root), rays_per_batch=64, frames_per_batch=3, steps_per_epoch=6, val_frames=1)
    dm.load()
    dm.check_inputs({"expr": 53}, "expression")
    return dm


def _fit(system, dm, steps: int, tmp_path):
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=str(tmp_path))
    trainer.fit(system, datamodule=dm)
    return trainer


def test_declaration_checks():
    with pytest.raises(TypeError, match="batch_kind"):
        type("Bad", (Rasteriser,), {"batch_kind": "points"})
    with pytest.raises(TypeError, match="supports_fused_backward"):
        type("Bad", (Rasteriser,), {"supports_fused_backward": True})
    with pytest.raises(TypeError):  # render / render_frame are required
        Renderer(cond_dim=2)
    r = ConditionedColour(cond_dim=4)
    assert r.batch_kind == "rays" and not r.supports_fused_backward and not r.supports_regions and r.regions == ()
    assert r.param_groups(1e-3) == [] and r.on_train_step(3) is None and r.setup_scene(None) is None
    assert r.declare_regions(None) == ()
    with pytest.raises(Exception, match="does not implement region attention"):
        r.declare_regions([("lip", 0, 2)])
    with pytest.raises(NotImplementedError, match="supports_fused_backward"):
        r.forward_backward(None, None, None, None, None, None, None)


def test_renderer_with_only_the_required_part_trains(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    dm = _datamodule(tiny_dataset)
    system = TalkingHeadSystem(ExpressionConditioner(n_frames=dm.n_frames, latent_dim=4), partial(ConditionedColour),
                               partial(torch.optim.Adam, lr=1e-2), train_chunk_rays="auto",
                               val_image_dir=str(tmp_path / "val"))
    assert system.automatic_optimization  # no fused backward to chunk with
    connect_renderer(system.renderer, dm)
    assert dm.batch_kind == "rays"
    before = system.renderer.colour.weight.detach().clone()
    trainer = _fit(system, dm, 6, tmp_path)
    assert trainer.global_step == 6
    assert len(trainer.optimizers[0].param_groups) == 1  # param_groups() default: everything at lr
    assert not torch.equal(before, system.renderer.colour.weight)
    assert torch.isfinite(trainer.callback_metrics["train/loss"]) and "val/psnr" in trainer.callback_metrics


def test_image_renderer_trains_on_camera_batches(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    dm = _datamodule(tiny_dataset)
    system = TalkingHeadSystem(ExpressionConditioner(n_frames=dm.n_frames, latent_dim=4), partial(FrameColour),
                               partial(torch.optim.Adam, lr=5e-2), val_image_dir=str(tmp_path / "val"))
    connect_renderer(system.renderer, dm)  # the opacity image at the clip's size; whole-frame batches
    assert dm.batch_kind == "images" and system.renderer.opacity.shape == dm.clip.hw
    batch = next(iter(dm.train_dataloader()))
    loss0 = torch.nn.functional.mse_loss(system.renderer.render(batch, system.conditions(batch))["rgb"],
                                         batch["target"]).item()
    trainer = _fit(system, dm, 12, tmp_path)
    r = system.renderer
    h, w = dm.clip.hw
    assert r.batch_shapes[0] == ((3, h, w, 3), (3, 4, 4))
    assert r.steps_seen == list(range(12))  # the step hook, every step
    loss1 = torch.nn.functional.mse_loss(r.render(batch, system.conditions(batch))["rgb"], batch["target"]).item()
    assert loss1 < loss0
    assert "val/psnr" in trainer.callback_metrics and list((tmp_path / "val").glob("*.png"))


def test_image_renderer_renders_sequences_for_evaluation(tiny_dataset, tmp_path):
    """The path evaluation and rendering use (inference.render_sequence) draws whole frames through the renderer's
    own render_frame, for image renderers too."""
    from lipspace.data.sampling import frame_inputs
    from lipspace.model.inference import render_sequence

    dm = _datamodule(tiny_dataset)
    system = TalkingHeadSystem(ExpressionConditioner(n_frames=dm.n_frames, latent_dim=4), partial(FrameColour),
                               partial(torch.optim.Adam, lr=5e-2))
    connect_renderer(system.renderer, dm)
    idx = dm.split.test[:2]
    inputs = frame_inputs(dm.clip, idx, dm.inputs)
    out = list(render_sequence(system.conditioner, system.renderer, dm.clip, inputs, idx, indices=idx, downscale=2))
    h, w = dm.clip.hw
    assert [i for i, _, _ in out] == [int(i) for i in idx]
    for _, pred, target in out:
        assert pred.shape == target.shape == (h // 2, w // 2, 3)
        assert 0 <= float(pred.min()) and float(pred.max()) <= 1
