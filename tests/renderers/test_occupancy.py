"""The occupancy grid keeps occupied space and empties the rest; the tri-plane renderer skips only empty space."""

import functools

import torch

from lipspace.renderers.fields.triplane import TriPlaneField
from lipspace.renderers.occupancy import OccupancyGrid
from lipspace.renderers.triplane import TriPlaneRenderer


def sphere_density(pts, center=torch.tensor([0.2, -0.1, 0.0]), r=0.5):
    return torch.where((pts - center).norm(dim=-1) < r, torch.full_like(pts[:, 0], 20.0), torch.zeros_like(pts[:, 0]))


def test_grid_keeps_a_known_sphere_and_empties_the_rest():
    grid = OccupancyGrid(center=[0, 0, 0], half_size=1.0, resolution=32, explore_fraction=0.1)
    assert grid.occupied_fraction == 1.0  # before any update nothing is culled
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        grid.update(sphere_density, generator=g)
    inside = torch.randn(20000, 3)
    inside = inside / inside.norm(dim=-1, keepdim=True) * torch.rand(20000, 1) ** (1 / 3) * 0.5
    inside = inside + torch.tensor([0.2, -0.1, 0.0])
    assert grid.occupied(inside).all(), "occupied space was culled"
    far = torch.rand(20000, 3) * 2 - 1
    far = far[(far - torch.tensor([0.2, -0.1, 0.0])).norm(dim=-1) > 0.5 + 3 * 2 / 32]
    assert not grid.occupied(far).any()
    frac = grid.occupied_fraction
    assert 0.05 < frac < 0.2  # sphere volume 0.52 of a box of 8 (6.5 %) plus a dilated shell
    assert not grid.occupied(torch.tensor([[3.0, 0, 0]])).any()  # outside the box


def test_a_spatially_uniform_density_below_the_threshold_keeps_every_cell():
    """Early in training a field's density can be the same everywhere and below the threshold; the grid must not
    empty itself then (it did: no sample was evaluated again and training stopped with a no-grad loss)."""
    for level in (0.02, 0.0):
        grid = OccupancyGrid(center=[0, 0, 0], half_size=1.0, resolution=16, threshold=0.05)
        grid.update(lambda pts: torch.full_like(pts[:, 0], level), generator=torch.Generator().manual_seed(0))
        assert grid.occupied_fraction == 1.0, level
    grid = OccupancyGrid(center=[0, 0, 0], half_size=1.0, resolution=16, threshold=0.05)
    grid.update(sphere_density, generator=torch.Generator().manual_seed(0))  # structure: empty space is culled
    assert grid.occupied_fraction < 0.5


def test_grid_follows_a_moving_density():
    grid = OccupancyGrid(center=[0, 0, 0], half_size=1.0, resolution=16, explore_fraction=0.5, decay=0.5)
    g = torch.Generator().manual_seed(0)
    grid.update(sphere_density, generator=g)
    moved = functools.partial(sphere_density, center=torch.tensor([-0.4, 0.3, 0.2]), r=0.4)
    for _ in range(12):
        grid.update(moved, generator=g)
    p = torch.tensor([[-0.4, 0.3, 0.2]])
    assert grid.occupied(p).all()  # new matter was found by exploration
    assert not grid.occupied(torch.tensor([[0.55, -0.1, 0.0]])).any()  # old matter decayed away


def _renderer(occupancy):
    torch.manual_seed(0)
    field = functools.partial(TriPlaneField, n_levels=4, log2_table=10, finest_res=64, hidden=16, sigma_layers=2)
    r = TriPlaneRenderer(field, cond_dim=4, n_samples=24, occupancy=occupancy)
    r.set_scene(torch.zeros(3), 1.0)
    return r


def test_renderer_skips_only_empty_space():
    rays_o = torch.tensor([[0.0, 0.0, -3.0]]).repeat(64, 1) + torch.randn(64, 3) * 0.1
    rays_d = torch.nn.functional.normalize(torch.randn(64, 3) * 0.2 + torch.tensor([0, 0, 1.0]), dim=-1)
    near, far = torch.full((64,), 2.0), torch.full((64,), 4.0)
    cond, bg = torch.randn(64, 4), torch.rand(64, 3)
    full = _renderer({"enabled": False}).eval()
    culled = _renderer({"resolution": 16})
    culled.load_state_dict(full.state_dict(), strict=False)
    culled.train()
    culled._recent_cond = cond[:2]
    culled.on_train_step(0)  # first update: every cell measured with the untrained field
    culled.eval()
    a, b = full(rays_o, rays_d, near, far, cond, bg), culled(rays_o, rays_d, near, far, cond, bg)
    assert b["kept_fraction"][0] <= a["kept_fraction"][0]
    # an untrained softplus field has density ~0.69 everywhere: nothing is empty, nothing may be culled
    torch.testing.assert_close(a["rgb"], b["rgb"])
    out = culled.render_chunked(rays_o, rays_d, near, far, cond, bg)
    assert out["rgb"].shape == (64, 3) and torch.isfinite(out["rgb"]).all()


def test_renderer_state_dict_round_trip_builds_the_grid():
    r = _renderer({"resolution": 8})
    r.grid.mask.zero_()
    r.grid.mask[0, 0, 0] = True
    fresh = TriPlaneRenderer(functools.partial(TriPlaneField, n_levels=4, log2_table=10, finest_res=64, hidden=16,
                                               sigma_layers=2), cond_dim=4, n_samples=24, occupancy={"resolution": 8})
    fresh.load_state_dict(r.state_dict())
    assert fresh.grid is not None and int(fresh.grid.mask.sum()) == 1 and float(fresh.scene_half) == 1.0


def test_unconditioned_renderer_updates_its_grid():
    field = functools.partial(TriPlaneField, n_levels=4, log2_table=10, finest_res=64, hidden=16, sigma_layers=2)
    r = TriPlaneRenderer(field, cond_dim=0, n_samples=8, occupancy={"resolution": 8}).train()
    r.set_scene(torch.zeros(3), 1.0)
    rays_o = torch.tensor([[0.0, 0.0, -3.0]]).repeat(4, 1)
    rays_d = torch.tensor([[0.0, 0.0, 1.0]]).repeat(4, 1)
    r(rays_o, rays_d, torch.full((4,), 2.0), torch.full((4,), 4.0), None, torch.zeros(4, 3))
    r.on_train_step(0)
    assert int(r.grid.n_updates) == 1
