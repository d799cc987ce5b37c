"""GaussianRenderer: initialisation from a clip (face points or the bounds sphere; the mouth branch's points), the
two deformation branches, rendering shapes, per-group learning rates, and densification / pruning / opacity reset
keeping parameters, parameter groups and Adam's per-row state consistent (and checkpoints loadable)."""

import math

import pytest
import torch

from lipspace.data.clip import load_clip
from lipspace.data.sampling import frame_cameras
from lipspace.renderers.gaussian import GaussianRenderer
from lipspace.renderers.gaussian.init import init_points
from lipspace.renderers.gaussian.renderer import LR_SCALE, PARAMS
from lipspace.utils.errors import LipspaceError

SMALL = dict(n_surface=60, n_fill=30, n_mouth=12, deform={"hidden": 16, "n_levels": 4, "log2_table": 10},
             mouth_deform={"hidden": 8, "n_levels": 2, "log2_table": 8})


@pytest.fixture
def clip(tiny_dataset):
    return load_clip(tiny_dataset)


def _face_points(n_frames=5, opening=(0.0, 0.1, 0.2, 0.05, 0.15)):
    """A fake face: 68 landmarks on the sphere's front (z = -1, facing the camera at -z), inner lips 60-67 on an
    ellipse around (0, 0.4, -0.9) opening by ``opening``, then 100 grid points."""
    g = torch.Generator().manual_seed(0)
    pts = torch.zeros(n_frames, 168, 3)
    pts[:, :68] = torch.rand(68, 3, generator=g) * torch.tensor([1.0, 1.0, 0.1]) - torch.tensor([0.5, 0.5, 1.0])
    ang = torch.linspace(0, 2 * math.pi, 9)[:8]
    for f in range(n_frames):
        pts[f, 60:68] = torch.stack([0.2 * torch.cos(ang), 0.4 + (0.02 + opening[f]) * torch.sin(ang),
                                     torch.full((8,), -0.9)], -1)
    pts[:, 68:] = torch.rand(100, 3, generator=g) - torch.tensor([0.5, 0.5, 1.0])
    return pts


def test_init_points_from_face_points_and_the_mouth_cavity(clip):
    clip.face_points = _face_points()
    pts, is_mouth = init_points(clip, n_surface=300, n_fill=50, n_mouth=200, mouth_depth=0.3)
    assert pts.shape == (550, 3) and is_mouth.sum() == 200 and not is_mouth[:350].any()
    assert torch.allclose(pts[:168], clip.face_points.mean(0))  # the face points themselves come first
    center, radius = clip.sphere("head_bounds")
    assert ((pts[300:350] - center).norm(dim=-1) <= radius + 1e-5).all()  # fill: inside the sphere
    mouth = pts[is_mouth]
    lips = clip.face_points[:, 60:68].reshape(-1, 3)
    lip_c = lips.mean(0)
    inward = torch.nn.functional.normalize(center - lip_c, dim=0)
    depth = (mouth - lip_c) @ inward
    lip_depth = ((lips - lip_c) @ inward).abs().max()  # the lip ring is not flat across the inward direction
    assert (depth >= -lip_depth).all() and (depth <= 0.3 * radius + lip_depth).all()  # behind the lips
    assert depth.mean() > 0.1 * radius
    lateral = (mouth - lip_c) - depth[:, None] * inward
    assert (lateral[:, 0].abs() <= 0.2 + 1e-5).all()  # within the lips' width
    assert lateral[:, 1].abs().max() > 0.1  # reaches the widest opening (0.22 of frame 2)


def test_init_points_without_face_points_fill_the_sphere(clip, monkeypatch):
    monkeypatch.setattr(clip, "face_points", None)  # a dataset prepared before the track existed
    pts, is_mouth = init_points(clip, n_surface=100, n_fill=50, n_mouth=40)
    center, radius = clip.sphere("head_bounds")
    assert ((pts[~is_mouth] - center).norm(dim=-1) <= radius + 1e-5).all()
    # the fallback mouth box: in front of the centre, towards the camera (the camera is at -z of head space here)
    assert (pts[is_mouth][:, 2] < center[2]).all() and (pts[is_mouth][:, 1] > center[1]).all()


def test_renders_batches_and_frames(clip):
    r = GaussianRenderer(cond_dim=3, **SMALL)
    with pytest.raises(LipspaceError, match="setup_scene"):
        r.render(frame_cameras(clip, [0, 1]), torch.zeros(2, 3))
    r.setup_scene(clip)
    assert r.n_gaussians == 102 and int(r.is_mouth.sum()) == 12
    batch = frame_cameras(clip, [0, 1, 2])
    out = {k: v.detach() for k, v in r.render(batch, torch.randn(3, 3)).items()}
    h, w = clip.hw
    assert out["rgb"].shape == (3, h, w, 3) and out["acc"].shape == out["depth"].shape == (3, h, w)
    assert 0 <= float(out["acc"].min()) and float(out["acc"].max()) <= 1 and float(out["acc"].max()) > 0
    img = r.render_frame(frame_cameras(clip, [4], downscale=2), torch.randn(3))
    assert img.shape == (h // 2, w // 2, 3) and 0 <= float(img.min()) and float(img.max()) <= 1
    with pytest.raises(LipspaceError, match="cond_dim=3"):
        r.render(batch, torch.zeros(3, 5))


def test_deformation_branches(clip):
    r = GaussianRenderer(cond_dim=3, **SMALL)
    r.setup_scene(clip)
    cond = torch.randn(2, 3)
    means, log_scales, quats = r.deformed(cond, 2)
    assert torch.equal(means, r.means.expand(2, -1, -1))  # the last layers start at zero: canonical Gaussians
    with torch.no_grad():
        r.mouth_field.out.weight.normal_()
        r.face_field.out.bias[3:] = 0.5  # the face branch: scales and rotations only
    means, log_scales, quats = r.deformed(cond, 2)
    m = r.is_mouth
    assert not torch.allclose(means[0, m], means[1, m])  # mouth centres move with the condition
    assert torch.equal(log_scales[:, m], r.log_scales[m].expand(2, -1, -1))  # mouth: position only
    assert torch.equal(means[:, ~m], r.means[~m].expand(2, -1, -1))
    assert torch.allclose(log_scales[:, ~m], r.log_scales[~m] + 0.5)


def test_param_groups_cover_every_parameter_once_at_their_rates(clip):
    from lipspace.conditioners.expression import ExpressionConditioner
    from lipspace.model.system import TalkingHeadSystem
    import functools

    r = GaussianRenderer(cond_dim=2, **SMALL)
    r.setup_scene(clip)
    groups = r.param_groups(1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in r.parameters()}
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["means"] == pytest.approx(1e-3 * LR_SCALE["means"] * clip.sphere("head_bounds")[1])
    assert lrs["opacity_logits"] == pytest.approx(1e-3 * LR_SCALE["opacity_logits"]) and groups[-1]["name"] == "mlp"
    cond = ExpressionConditioner(n_frames=5, inputs={"expr": 3}, latent_dim=2)
    system = TalkingHeadSystem(cond, r, optimizer=functools.partial(torch.optim.Adam, lr=1e-3))
    sys_groups = system.param_groups()
    assert any(p is next(cond.parameters()) for p in sys_groups[-1]["params"])  # the conditioner joins the MLPs


def _train_step(r, opt, clip, cond_dim=3):
    batch = frame_cameras(clip, [0, 1])
    out = r.render(batch, torch.ones(2, cond_dim))
    opt.zero_grad()
    ((out["rgb"] - batch["target"]) ** 2).mean().backward()
    opt.step()


def test_densify_and_prune_keep_parameters_and_adam_state_consistent(clip):
    torch.manual_seed(0)
    r = GaussianRenderer(cond_dim=3, **SMALL, densify={"start": 10, "every": 10, "grad_threshold": 1.0,
                                                       "percent_dense": 0.05, "reset_opacity_every": 0})
    r.setup_scene(clip)
    r.train()
    opt = torch.optim.Adam(r.param_groups(1e-3))
    r.bind_optimizer(opt)
    _train_step(r, opt, clip)
    n = r.n_gaussians
    params_before = [g["params"] for g in opt.param_groups]
    # mark each row's Adam state with its row index, and pick who clones (small), splits (large), is pruned
    for name in PARAMS:
        p = getattr(r, name)
        for key in ("exp_avg", "exp_avg_sq"):
            opt.state[p][key] = torch.arange(n, dtype=torch.float32).reshape(-1, *[1] * (p.dim() - 1)).expand_as(
                p).clone() + 1
    with torch.no_grad():
        clone_rows, split_rows, prune_rows = [0, 1, 2], [3, 4], [5, 6, 7]
        r.log_scales[clone_rows] = math.log(0.01)
        r.log_scales[split_rows] = math.log(0.1)
        r.opacity_logits[prune_rows] = -10.0
        r.opacity_logits[clone_rows + split_rows] = 0.0
    r.stats.grad.zero_()
    r.stats.count.fill_(1)
    r.stats.grad[clone_rows + split_rows] = 5.0
    old_means, old_scales = r.means.detach().clone(), r.log_scales.detach().clone()
    old_mouth = r.is_mouth.clone()
    r.on_train_step(10)
    assert r.last_densify["cloned"] == 3 and r.last_densify["split"] == 2
    n_new = n + 3 + 2 - 3  # +3 clones, +4 children -2 parents, -3 pruned
    assert r.n_gaussians == n_new and r.is_mouth.shape == (n_new,) and r.stats.grad.shape == (n_new,)
    for name in PARAMS:
        p = getattr(r, name)
        assert p.shape[0] == n_new and p.grad is None
        for key in ("exp_avg", "exp_avg_sq"):
            assert opt.state[p][key].shape == p.shape
    assert [g["params"] for g in opt.param_groups] == params_before  # the same parameter objects, same groups
    kept = [i for i in range(n) if i not in split_rows + prune_rows]
    n_kept = len(kept)
    assert torch.equal(r.means[:n_kept], old_means[kept])  # kept rows, in order
    assert torch.equal(r.is_mouth[:n_kept], old_mouth[kept])
    for name in PARAMS:  # kept rows keep their state (their old index + 1), new rows start at zero
        st = opt.state[getattr(r, name)]["exp_avg"]
        assert torch.equal(st[:n_kept].reshape(n_kept, -1)[:, 0], torch.tensor(kept, dtype=torch.float32) + 1)
        assert (st[n_kept:] == 0).all()
    new_means, new_scales = r.means[n_kept:], r.log_scales[n_kept:]
    assert torch.equal(new_means[:3], old_means[clone_rows])  # clones: exact copies
    children = new_means[3:].reshape(2, 2, 3)
    assert ((children - old_means[split_rows][:, None]).norm(dim=-1) < 0.5).all()
    assert torch.allclose(new_scales[3:], old_scales[split_rows].repeat_interleave(2, 0) - math.log(1.6))
    _train_step(r, opt, clip)  # Adam steps on the resized parameters
    assert all(torch.isfinite(getattr(r, name)).all() for name in PARAMS)


def test_opacity_reset_and_an_unbound_optimiser(clip):
    r = GaussianRenderer(cond_dim=3, **SMALL, densify={"start": 5, "every": 5, "reset_opacity_every": 7})
    r.setup_scene(clip)
    r.train()
    opt = torch.optim.Adam(r.param_groups(1e-3))
    _train_step(r, opt, clip)
    n = r.n_gaussians
    with pytest.warns(UserWarning, match="no optimiser bound"):
        r.on_train_step(5)
    assert r.n_gaussians == n
    r.bind_optimizer(opt)
    with torch.no_grad():
        r.opacity_logits[:3] = 3.0
    r.on_train_step(7)
    assert float(torch.sigmoid(r.opacity_logits).max()) <= 0.01 + 1e-6
    assert (opt.state[r.opacity_logits]["exp_avg"] == 0).all()


def test_a_densified_checkpoint_loads_into_a_fresh_renderer(clip):
    r = GaussianRenderer(cond_dim=3, **SMALL)
    r.setup_scene(clip)
    r.train()
    opt = torch.optim.Adam(r.param_groups(1e-3))
    r.bind_optimizer(opt)
    _train_step(r, opt, clip)
    r.stats.count.fill_(1)
    r.stats.grad.fill_(1.0)
    r.densify_cfg.start, r.densify_cfg.every = 1, 1
    r.on_train_step(1)
    assert r.n_gaussians != 102
    fresh = GaussianRenderer(cond_dim=3, **SMALL)
    fresh.setup_scene(clip)  # the train task's order: scene first, then the checkpoint
    fresh.load_state_dict(r.state_dict())
    assert fresh.n_gaussians == r.n_gaussians and torch.equal(fresh.is_mouth, r.is_mouth)
    frame = frame_cameras(clip, [3])
    r.eval()
    assert torch.allclose(fresh.render_frame(frame, torch.ones(3)), r.render_frame(frame, torch.ones(3)))
