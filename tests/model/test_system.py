"""The chunked training step (manual optimisation) gives the gradients of the plain one; both learn. The
conditioner's own learning rate; a field that draws nothing stops training with what to change."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from lipspace.conditioners.expression import ExpressionConditioner
from lipspace.renderers.fields.mlp import MLPField
from lipspace.renderers.nerf import NeRFRenderer, mse_chunk_loss
from lipspace.model.system import TalkingHeadSystem
from lipspace.utils.errors import LipspaceError


def _system(chunk):
    torch.manual_seed(0)
    cond = ExpressionConditioner(n_frames=4, latent_dim=4)
    renderer = partial(NeRFRenderer, field=partial(MLPField, hidden=16, n_layers=3, skips=(1,)), n_coarse=8, n_fine=8)
    return TalkingHeadSystem(cond, renderer, partial(torch.optim.Adam, lr=1e-3), train_chunk_rays=chunk)


def _batch(n=24):
    g = torch.Generator().manual_seed(1)
    return {"frame_idx": torch.tensor([0, 2]), "inputs": {"expr": torch.rand(2, 53, generator=g)},
            "ray_frame": torch.arange(n) % 2, "rays_o": torch.tensor([0.0, 0, -3]).expand(n, 3),
            "rays_d": F.normalize(torch.randn(n, 3, generator=g) * 0.2 + torch.tensor([0.0, 0, 1]), dim=-1),
            "near": torch.full((n,), 2.0), "far": torch.full((n,), 4.0), "target": torch.rand(n, 3, generator=g),
            "bg": torch.rand(n, 3, generator=g)}


def test_chunked_gradients_equal_full_batch_gradients():
    plain, chunked = _system(None), _system(5)
    assert plain.automatic_optimization and not chunked.automatic_optimization
    chunked.load_state_dict(plain.state_dict())
    for s in (plain, chunked):
        s.renderer.eval()  # deterministic sampling; gradients still flow
        s.conditioner.train()
    b = _batch()
    cond = plain.conditions(b)
    out = plain.renderer(b["rays_o"], b["rays_d"], b["near"], b["far"], cond, b["bg"])
    loss = F.mse_loss(out["rgb"], b["target"]) + F.mse_loss(out["rgb_coarse"], b["target"])
    (loss + plain.conditioner.regularizer(b["frame_idx"])).backward()
    cond = chunked.conditions(b)
    reg = chunked.conditioner.regularizer(b["frame_idx"])
    photometric = mse_chunk_loss(b["target"], 1.0)
    n = b["target"].shape[0]
    res = chunked.renderer.forward_backward(b["rays_o"], b["rays_d"], b["near"], b["far"], cond, b["bg"],
                                            lambda o, sl: photometric(o, sl) + (reg if sl.stop == n else 0.0), 5)
    assert torch.allclose(res["loss"], loss.detach(), atol=1e-6)
    for (name, p), q in zip(plain.named_parameters(), chunked.parameters()):
        assert p.grad is not None and q.grad is not None, name
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), name


def test_conditioner_lr_gives_the_conditioner_a_group_of_its_own():
    default = _system(None)
    assert len(default.param_groups()) == 1  # one group, as before (resumable one-group checkpoints)
    torch.manual_seed(0)
    own = TalkingHeadSystem(ExpressionConditioner(n_frames=4, latent_dim=4),
                            partial(NeRFRenderer, field=partial(MLPField, hidden=16, n_layers=3, skips=(1,)),
                                    n_coarse=8, n_fine=8),
                            partial(torch.optim.Adam, lr=1e-3), conditioner_lr=1e-4)
    groups = own.param_groups()
    assert groups[-1]["lr"] == 1e-4
    assert {id(p) for p in groups[-1]["params"]} == {id(p) for p in own.conditioner.parameters()}
    every = [id(p) for g in groups for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in own.parameters())  # each parameter in exactly one group
    opt = torch.optim.Adam(groups, lr=1e-3)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-4]
    with pytest.raises(LipspaceError, match="conditioner_lr"):
        TalkingHeadSystem(ExpressionConditioner(n_frames=4, latent_dim=4), partial(NeRFRenderer, field=MLPField),
                          None, conditioner_lr=0.0)


def test_a_dead_field_stops_training_with_what_to_change():
    torch.manual_seed(0)
    system = TalkingHeadSystem(ExpressionConditioner(n_frames=4, latent_dim=4),
                               partial(NeRFRenderer, field=partial(MLPField, hidden=16, n_layers=3, skips=(1,),
                                                                   density_activation="softplus"),
                                       n_coarse=8, n_fine=8),
                               partial(torch.optim.Adam, lr=1e-3), train_chunk_rays=None, dead_field_steps=3)
    b = _batch()
    system.training_step(b, 0)  # alive at init: draws something, the count stays 0
    assert system._dead_steps == {"": 0}
    with torch.no_grad():
        for field in (system.renderer.coarse, system.renderer.fine):  # density 0 at every point: softplus(-1000)
            field.head.bias[0] = -1000.0
    system.training_step(b, 1)
    system.training_step(b, 2)
    with pytest.raises(LipspaceError, match="drawn nothing.*model.conditioner_lr.*dead_field_steps=0"):
        system.training_step(b, 3)
    off = TalkingHeadSystem(system.conditioner, system.renderer, None, train_chunk_rays=None, dead_field_steps=0)
    for i in range(5):  # the check off: the same dead field trains on
        off.training_step(b, i)


def test_a_dead_torso_stops_training_and_its_opacity_is_logged():
    """A part the renderer models separately (AD-NeRF's torso NeRF) is checked over its own pixels: a torso whose
    density is 0 stops the run naming the torso's rate, while the head alone draws; its opacity is logged."""
    from lipspace.renderers.torso import TorsoComposite

    torch.manual_seed(0)
    small = partial(MLPField, hidden=8, n_layers=2, skips=(), pos_freqs=2, dir_freqs=1, density_activation="softplus")
    torso = partial(TorsoComposite, head=partial(NeRFRenderer, field=small, n_coarse=4, n_fine=4), torso_field=small,
                    n_samples=4, head_stage=0.5, total_steps=10)
    system = TalkingHeadSystem(ExpressionConditioner(n_frames=4, latent_dim=4), torso,
                               partial(torch.optim.Adam, lr=1e-3), train_chunk_rays=None, dead_field_steps=3)
    logged = {}
    system.log_dict = lambda d, **kw: logged.update({k: float(torch.as_tensor(v).detach()) for k, v in d.items()})
    pose = torch.eye(4)
    pose[2, 3] = 3.0  # the camera 3 units in front of the head's origin
    b = _batch() | {"pose": torch.stack([pose, pose]), "rays_o": torch.zeros(24, 3),
                    "ray_class": torch.tensor([9, 0, 2] * 8), "near": torch.full((24,), 2.0)}
    system.renderer.set_scene(b["pose"], torch.tensor([0.0, 0.0, 3.0]), 1.0)
    system.renderer.train().on_train_step(2)  # the head stage: no torso drawn, nothing to check or log
    system.training_step(b, 0)
    assert "train/opacity_torso" not in logged and "torso" not in system._dead_steps
    system.renderer.on_train_step(6)  # the torso stage
    system.training_step(b, 1)
    assert logged["train/opacity_torso"] > 0.01 and system._dead_steps["torso"] == 0
    with torch.no_grad():
        system.renderer.torso.head.bias[0] = -1000.0  # the torso's density 0 everywhere
    system.training_step(b, 2)
    assert logged["train/opacity_torso"] < 1e-6 and system._dead_steps["torso"] == 1
    system.training_step(b, 3)
    with pytest.raises(LipspaceError, match="torso part has drawn nothing.*torso.composite.lr"):
        system.training_step(b, 4)
    assert system._dead_steps[""] == 0  # the head itself still draws: only the torso is dead


def test_a_group_with_a_start_step_decays_over_its_own_steps():
    from lipspace.model.system import exponential_decay

    whole, late = exponential_decay(0.1, 0, 100), exponential_decay(0.1, 60, 100)
    assert whole(0) == 1.0 and whole(50) == pytest.approx(0.1 ** 0.5) and whole(100) == whole(500) == pytest.approx(0.1)
    assert late(0) == late(60) == 1.0 and late(80) == pytest.approx(0.1 ** 0.5) and late(100) == pytest.approx(0.1)
    # in the optimiser: the torso group of a staged TorsoComposite keeps its rate through the head stage
    from lipspace.renderers.torso import TorsoComposite

    small = partial(MLPField, hidden=8, n_layers=2, skips=(), pos_freqs=2, dir_freqs=1)
    torso = partial(TorsoComposite, head=partial(NeRFRenderer, field=small, n_coarse=4, n_fine=4), torso_field=small,
                    n_samples=4, head_stage=0.5, total_steps=10, lr=5e-4)
    system = TalkingHeadSystem(ExpressionConditioner(n_frames=4, latent_dim=4), torso,
                               partial(torch.optim.Adam, lr=1e-3), lr_final=1e-4)
    system.trainer = type("T", (), {"max_steps": 10})()
    conf = system.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    for _ in range(5):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-4, 1e-3 * 0.1 ** 0.5])
