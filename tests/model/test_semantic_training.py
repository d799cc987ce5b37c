"""The system's semantic parts: the parsing branch learns the pixel classes (beats the majority class on held-out
frames), its loss in both training paths, the clear errors, and the per-class loss hand-over of semantic sampling."""

import functools
import tempfile
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lipspace.conditioners.expression import ExpressionConditioner
from lipspace.data.clip import load_clip, split_frames
from lipspace.data.datamodule import TalkingHeadDataModule
from lipspace.data.sampling import RayBatches, frame_rays
from lipspace.model.semantic import ClassLossMeter, SemanticBranch
from lipspace.model.system import TalkingHeadSystem
from lipspace.renderers import MLPField, NeRFRenderer
from lipspace.renderers.base import VolumeRenderer
from lipspace.utils.errors import LipspaceError
from tests.conftest import make_tiny_dataset

K = 10


def _renderer(cond_dim=0, semantic_classes=K):
    field = functools.partial(MLPField, hidden=32, n_layers=4, skips=(2,), pos_freqs=6, dir_freqs=2,
                              density_activation="softplus", semantic_classes=semantic_classes)
    return functools.partial(NeRFRenderer, field=field, n_coarse=16, n_fine=16)


def test_the_parsing_branch_renders_the_right_classes_on_held_out_frames(tiny_dataset):
    """120 steps of a 4x32 field on the synthetic disc head (background 0, face 2, mouth 4): the rendered class map
    of the held-out frames beats always answering the majority class (background, ~72 % of the pixels)."""
    torch.manual_seed(0)
    clip = load_clip(tiny_dataset)
    split = split_frames(clip, 0.1)
    r = _renderer()(cond_dim=0)
    branch = SemanticBranch(0.04, 1.0)
    opt = torch.optim.Adam(r.parameters(), lr=5e-3)
    for b in RayBatches(clip, split.train, {}, 128, 4, 0.5, 120, 0):
        out = r.render(b, None)
        loss = (F.mse_loss(out["rgb"], b["target"]) + F.mse_loss(out["rgb_coarse"], b["target"])
                + branch.loss(out, b["ray_class"], len(b["target"])))
        opt.zero_grad()
        loss.backward()
        opt.step()
    r.eval()
    for f in split.test:
        gt = clip.parsing[int(f)].long()
        pred = r.render_parsing(frame_rays(clip, int(f)), torch.zeros(0))
        majority = (gt == torch.bincount(gt.flatten()).argmax()).float().mean()
        acc = (pred == gt).float().mean()
        assert acc > majority + 0.15 and acc > 0.9, (float(acc), float(majority))
        assert (pred[gt == 2] == 2).float().mean() > 0.8  # the face is found, not only the background


class Flat(VolumeRenderer):
    def __init__(self, cond_dim):
        super().__init__(cond_dim)
        self.c = nn.Linear(max(cond_dim, 1), 3)

    def forward(self, rays_o, rays_d, near, far, cond, bg):
        return {"rgb": torch.sigmoid(self.c(cond))}


def test_clear_errors_without_the_branch():
    cond = ExpressionConditioner(n_frames=4, latent_dim=4)
    with pytest.raises(LipspaceError, match="supports_semantic"):
        TalkingHeadSystem(cond, functools.partial(Flat), None, semantic_weight=0.04)
    with pytest.raises(LipspaceError, match="renderer.field.semantic_classes=10"):
        TalkingHeadSystem(cond, _renderer(semantic_classes=0), None, semantic_weight=0.04)
    assert TalkingHeadSystem(cond, _renderer(semantic_classes=0), None).semantic is None  # off: nothing to do
    assert TalkingHeadSystem(cond, _renderer(), None).semantic.weight == 0  # head built, only its metrics logged


def test_class_loss_meter_means_shares_and_ranks():
    m = ClassLossMeter(K)
    target = torch.zeros(4, 3)
    m.update(torch.tensor([[1.0] * 3, [0.0] * 3, [0.5] * 3, [0.5] * 3]), target, torch.tensor([2, 2, 4, 0]))
    mean, share = m.summary(lambda t: 2 * t)  # two ranks with the same counts
    assert mean[2] == 0.5 and mean[4] == 0.25 and mean[0] == 0.25 and torch.isnan(mean[1])
    assert share.tolist()[:5] == [0.25, 0, 0.5, 0, 0.25]
    assert m.counts.sum() == 0  # a new epoch starts


@pytest.mark.parametrize("chunk", [None, "auto"])
def test_training_logs_the_branch_and_hands_class_losses_to_the_sampler(tmp_path, chunk):
    """Both training paths (one autograd pass, fused chunks) train with the parsing loss; under semantic sampling
    the data module's ray batches carry the first epoch's per-class losses from then on."""
    ds = make_tiny_dataset(Path(tempfile.mkdtemp()) / "ds", n=8, heldout=0)
    dm = TalkingHeadDataModule(str(ds), rays_per_batch=64, frames_per_batch=2, steps_per_epoch=3, val_frames=1,
                               sampling="semantic")
    dm.load()
    dm.check_inputs({"expr": 53}, "expression")
    torch.manual_seed(0)
    system = TalkingHeadSystem(ExpressionConditioner(n_frames=dm.n_frames, latent_dim=4), _renderer(),
                               functools.partial(torch.optim.Adam, lr=1e-3), semantic_weight=0.04,
                               train_chunk_rays=chunk)
    assert system.automatic_optimization == (chunk is None)
    head = system.renderer.fine.semantic.weight.detach().clone()
    trainer = L.Trainer(max_steps=5, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, default_root_dir=str(tmp_path))
    trainer.fit(system, datamodule=dm)
    m = trainer.callback_metrics
    logged = {"train/semantic_ce", "train/semantic_acc", "train/ray_share_face_skin", "train/class_mse_face_skin"}
    assert logged <= set(m)
    assert not torch.equal(head, system.renderer.fine.semantic.weight)
    w = dm._train.class_weights
    assert w is not None and torch.isfinite(w[[0, 2]]).all() and torch.isnan(w[1])


def test_both_components_from_the_command_line(tmp_path):
    """`lipspace-train experiment=adnerf model.semantic_weight=0.04 renderer.field.semantic_classes=10
    data.sampling=semantic` (debug=fast: two epochs of three steps, so the second samples by class)."""
    from lipspace.tasks.train import train
    from lipspace.utils.config import compose_train

    ds = make_tiny_dataset(tmp_path / "ds", n=8, heldout=0)
    run = tmp_path / "run"
    cfg = compose_train(["data=dir", f"data.root={ds}", "debug=fast", "logger=csv", "budget=tiny",
                         "trainer.enable_progress_bar=false", "experiment=adnerf", "model.semantic_weight=0.04",
                         "renderer.field.semantic_classes=10", "data.sampling=semantic"], run)
    m = train(cfg, run)
    assert m["global_step"] == 6 and 0 <= m["train/semantic_acc"] <= 1 and m["train/ray_share_face_skin"] > 0
