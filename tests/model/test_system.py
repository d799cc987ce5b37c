"""The chunked training step (manual optimisation) gives the gradients of the plain one; both learn."""

from functools import partial

import torch
import torch.nn.functional as F

from lipspace.conditioners.expression import ExpressionConditioner
from lipspace.renderers.fields.mlp import MLPField
from lipspace.renderers.nerf import NeRFRenderer, mse_chunk_loss
from lipspace.model.system import TalkingHeadSystem


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
