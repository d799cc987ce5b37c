"""Tri-plane field / renderer: condition modes, region attention, optimiser groups, training beats the baseline."""

import functools

import pytest
import torch

from lipspace.utils.errors import LipspaceError
from lipspace.renderers.fields.triplane import TriPlaneField
from lipspace.renderers.triplane import TriPlaneRenderer

FIELD = functools.partial(TriPlaneField, n_levels=4, log2_table=10, finest_res=64, hidden=16, sigma_layers=2)


def _rays(n=32):
    torch.manual_seed(1)
    o = torch.tensor([[0.0, 0.0, -3.0]]).repeat(n, 1)
    d = torch.nn.functional.normalize(torch.randn(n, 3) * 0.2 + torch.tensor([0, 0, 1.0]), dim=-1)
    return o, d, torch.full((n,), 2.0), torch.full((n,), 4.0), torch.rand(n, 3)


@pytest.mark.parametrize("mode", ["concat", "attention"])
def test_condition_changes_the_render_in_both_modes(mode):
    torch.manual_seed(0)
    r = TriPlaneRenderer(functools.partial(FIELD, cond_mode=mode), cond_dim=6, n_samples=16, occupancy=None)
    r.set_scene(torch.zeros(3), 1.0)
    with torch.no_grad():
        for p in r.parameters():
            p.normal_(0, 0.5)
    o, d, near, far, bg = _rays()
    a = r(o, d, near, far, torch.zeros(32, 6), bg)["rgb"]
    b = r(o, d, near, far, torch.ones(32, 6), bg)["rgb"]
    assert a.shape == (32, 3) and (a - b).abs().max() > 1e-3


def test_concat_per_ray_term_equals_per_point_concatenation():
    torch.manual_seed(0)
    f = FIELD(cond_dim=5)
    x, c, ray_idx = torch.rand(40, 3), torch.randn(4, 5), torch.randint(0, 4, (40,))
    enc = f.encode(x)
    h, _ = f._trunk(enc, c, ray_idx)
    w = torch.cat([f.sigma_in.weight, f.cond_in.weight], 1)
    ref = torch.cat([enc, c[ray_idx]], 1) @ w.t() + f.sigma_in.bias
    torch.testing.assert_close(h, f.sigma_rest(torch.relu(ref)))


def test_regions_gate_their_columns_and_are_rendered():
    regions = [("lip", 0, 4), ("exp", 4, 6)]
    r = TriPlaneRenderer(FIELD, cond_dim=8, n_samples=16, occupancy=None, regions=regions)
    r.set_scene(torch.zeros(3), 1.0)
    o, d, near, far, bg = _rays()
    out = r(o, d, near, far, torch.randn(32, 8), bg)
    assert out["region_att"].shape == (32, 2)
    assert (out["region_att"] >= 0).all() and (out["region_att"] <= out["acc"][:, None] + 1e-5).all()
    # the region gates read the point's encoding: their gradient reaches the gate network
    out["region_att"].sum().backward()
    assert r.field.region_gate[0].weight.grad.abs().sum() > 0


def test_hash_tables_get_their_own_rate_and_the_conditioner_joins_the_rest():
    from lipspace.conditioners.expression import ExpressionConditioner
    from lipspace.model.system import TalkingHeadSystem

    cond = ExpressionConditioner(n_frames=5, inputs={"expr": 3}, latent_dim=2)
    renderer = functools.partial(TriPlaneRenderer, FIELD, n_samples=8, lr_grid=1e-2)
    system = TalkingHeadSystem(cond, renderer, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3))
    groups = system.param_groups()
    assert [g.get("lr") for g in groups] == [1e-2, 1e-3]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in system.parameters())
    assert any(p is system.renderer.field.encoding.grid.table for p in groups[0]["params"])


def test_scene_box_must_be_set():
    r = TriPlaneRenderer(FIELD, cond_dim=2, n_samples=8)
    o, d, near, far, bg = _rays(4)
    with pytest.raises(LipspaceError, match="scene box is not set"):
        r(o, d, near, far, torch.zeros(4, 2), bg)


@pytest.mark.slow
def test_trains_on_the_synthetic_clip_and_beats_the_mean_frame(tmp_path):
    from lipspace.utils.config import compose_train
    from lipspace.tasks.evaluate import evaluate
    from lipspace.tasks.train import train

    out = tmp_path / "run"
    cfg = compose_train(["renderer=triplane", "budget=tiny", "trainer.max_steps=300", "logger=csv",
                         "trainer.enable_progress_bar=false"], out)
    train(cfg, out)
    df = evaluate(out, videos=False, max_heldout=0)
    row = df[df.eval_set == "test_tail"].iloc[0]
    assert row.psnr > row.baseline_mean_frame_psnr + 2.0, (row.psnr, row.baseline_mean_frame_psnr)
