"""Hash encoding vs a brute-force per-point reference (Instant-NGP formulation), index ranges, collisions,
gradients, tri-plane layout."""

import itertools
import math
import os
import shutil

import pytest
import torch

from lipspace.utils.errors import LipspaceError
from lipspace.renderers.hashgrid import PRIMES, HashGrid, TriPlaneHash, level_resolutions


def reference(grid: HashGrid, x: torch.Tensor, g: int = 0) -> torch.Tensor:
    """Per point, per level, per corner in Python integers (uint32 hash arithmetic), float64 interpolation."""
    d, table = grid.in_dim, grid.table.detach().double()
    per_grid = sum(grid.sizes)
    out = []
    for p in x.double().tolist():
        feats = []
        for level, n in enumerate(grid.resolutions):
            pos = [min(max(v, 0.0), 1.0) * n for v in p]
            cell = [min(math.floor(v), n - 1) for v in pos]
            frac = [v - c for v, c in zip(pos, cell)]
            acc = torch.zeros(grid.n_features, dtype=torch.float64)
            for bits in itertools.product((0, 1), repeat=d):
                c = [ci + b for ci, b in zip(cell, bits)]
                if grid.hashed[level]:
                    h = 0
                    for ci, prime in zip(c, PRIMES):
                        h ^= (ci * prime) & 0xFFFFFFFF
                    row = h % (1 << grid.log2_table)
                else:
                    row = sum(ci * (n + 1) ** i for i, ci in enumerate(c))
                    assert row < grid.sizes[level]
                w = math.prod(f if b else 1 - f for f, b in zip(frac, bits))
                acc += w * table[g * per_grid + sum(grid.sizes[:level]) + row]
            feats.append(acc)
        out.append(torch.cat(feats))
    return torch.stack(out)


@pytest.mark.parametrize("d", [2, 3])
def test_matches_reference_between_and_at_vertices(d):
    torch.manual_seed(0)
    grid = HashGrid(d, n_levels=6, n_features=2, log2_table=8, base_res=3, finest_res=300)
    with torch.no_grad():
        grid.table.normal_()  # large values so interpolation errors show
    assert any(grid.hashed) and not all(grid.hashed)
    x = torch.rand(40, d)
    n = grid.resolutions[2]
    x[:5] = torch.randint(0, n + 1, (5, d)).float() / n  # exactly on level-2 vertices (and the boundary)
    x[5] = 1.0
    x[6] = 0.0
    got = grid(x).double()
    # float32 x * N_l rounds by ~N_l * 6e-8 (1e-5 at N=300) in position; the table values are ~1
    torch.testing.assert_close(got, reference(grid, x), rtol=1e-4, atol=1e-4)


def test_at_a_vertex_the_feature_is_the_table_entry():
    grid = HashGrid(3, n_levels=1, n_features=3, log2_table=12, base_res=8, finest_res=8)
    with torch.no_grad():
        grid.table.normal_()
    v = torch.tensor([[2, 5, 7]])
    out = grid(v.float() / 8)
    row = 2 + 5 * 9 + 7 * 81
    torch.testing.assert_close(out[0], grid.table[row].detach())


def test_indices_stay_in_range_and_fine_levels_collide():
    grid = HashGrid(3, n_levels=8, n_features=2, log2_table=10, base_res=4, finest_res=512, n_grids=2)
    x = torch.rand(4000, 2, 3)
    idx, w = grid.indices_and_weights(x)
    assert int(idx.min()) >= 0 and int(idx.max()) < grid.table.shape[0]
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
    per_grid = sum(grid.sizes)
    assert int(idx[:, : grid.n_levels].max()) < per_grid <= int(idx[:, grid.n_levels:].min())  # grids apart
    finest = idx[:, grid.n_levels - 1].reshape(-1)
    # 32000 corner lookups of distinct vertices into 1024 slots: the hash must collide (and fill most slots)
    assert finest.unique().numel() > 0.9 * 1024
    coarse = HashGrid(3, n_levels=1, n_features=1, log2_table=10, base_res=4, finest_res=4)
    assert not coarse.hashed[0]  # 5^3 = 125 vertices fit: dense, one entry per vertex, no collision


def test_gradients_reach_the_touched_table_rows_only():
    torch.manual_seed(0)
    grid = HashGrid(3, n_levels=4, n_features=2, log2_table=12, base_res=4, finest_res=64)
    x = torch.rand(64, 3)
    grid(x).square().sum().backward()
    g = grid.table.grad
    idx, _ = grid.indices_and_weights(x[:, None])
    touched = torch.zeros(g.shape[0], dtype=torch.bool)
    touched[idx.reshape(-1).long()] = True
    assert g[~touched].abs().sum() == 0 and g[touched].abs().sum() > 0
    # matches autograd through a plain gather
    grid.table.grad = None
    idx, w = grid.indices_and_weights(x[:, None])
    plain = (grid.table[idx.long()] * w[..., None]).sum(2).reshape(64, -1)
    plain.square().sum().backward()
    torch.testing.assert_close(g, grid.table.grad)


def test_triplane_layout_and_resolutions():
    tri = TriPlaneHash(n_levels=3, n_features=1, log2_table=10, base_res=4, finest_res=32)
    assert level_resolutions(3, 4, 32) == [4, 11, 32]
    x = torch.rand(10, 3)
    out = tri(x)
    assert out.shape == (10, 9)
    yz = x[:, [1, 2]]
    torch.testing.assert_close(out[:, 3:6].double(), reference(tri.grid, yz, g=1), rtol=1e-5, atol=1e-6)


def test_bad_shapes_are_clear():
    with pytest.raises(LipspaceError, match="in_dim must be 2 or 3"):
        HashGrid(4)
    with pytest.raises(LipspaceError, match=r"expects points \[P, 2, 3\]"):
        HashGrid(3, n_grids=2, n_levels=2, log2_table=8)(torch.rand(5, 3))
    with pytest.raises(LipspaceError, match="TriPlaneHash expects"):
        TriPlaneHash(n_levels=2, log2_table=8)(torch.rand(5, 2))


def inductor_cxx() -> str | None:
    """The C++ compiler torch.compile's inductor would use on CPU (its cpp.cxx search: $CXX, then g++), or None."""
    from torch._inductor import config

    names = config.cpp.cxx if isinstance(config.cpp.cxx, (list, tuple)) else (config.cpp.cxx,)
    for name in names:
        name = os.environ.get("CXX") if name is None else name
        found = shutil.which(name) if name else None
        if found:
            return found
    return None


def test_compiled_path_skips_only_without_a_compiler(monkeypatch, tmp_path):
    """The compiled-path test skips when inductor has no C++ compiler, and only then: an error of the compiled
    path with a compiler present is a failure, not a skip (the default compile_encoding: auto depends on it)."""
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert inductor_cxx() is None
    fake = tmp_path / "g++"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert inductor_cxx() == str(fake)


@pytest.mark.parametrize("make", [
    lambda c: HashGrid(3, n_levels=5, n_features=2, log2_table=10, base_res=4, finest_res=256, compile=c),
    lambda c: TriPlaneHash(n_levels=6, n_features=1, log2_table=8, base_res=4, finest_res=128, compile=c),
], ids=["3d-F2", "triplane-F1"])
def test_compiled_path_matches_the_eager_one(make):
    """The fused compiled path: the same features bit for bit, the same table gradients up to summation order."""
    torch.manual_seed(0)
    eager, fast = make(False), make(True)
    fast.load_state_dict(eager.state_dict())
    x = torch.rand(300, 3) * 1.2 - 0.1  # some points outside [0, 1]: clamped by both
    if inductor_cxx() is None:  # no C++ toolchain: the optional fast path cannot exist here, say so
        pytest.skip("torch.compile unavailable here: no C++ compiler for inductor ($CXX, g++) on PATH")
    got = fast(x)  # with a compiler, any error of the compiled path (the default compile_encoding: auto) fails
    assert torch.equal(got, eager(x))
    for n in (0, 1, 2):  # tiny batches take the eager path or the compiled one; same features either way
        assert torch.equal(fast(x[:n]), eager(x[:n]))
    go = torch.randn_like(got)
    grads = []
    for m in (eager, fast):
        (m(x) * go).sum().backward()
        grads.append(next(m.parameters()).grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_auto_compile_falls_back_to_eager_with_a_warning_and_true_fails_clearly():
    grid = HashGrid(2, n_levels=3, n_features=1, log2_table=6, base_res=4, finest_res=32, compile="auto")
    ref = HashGrid(2, n_levels=3, n_features=1, log2_table=6, base_res=4, finest_res=32)
    ref.load_state_dict(grid.state_dict())

    def broken(*a, **k):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    grid._fast = (broken, broken)
    x = torch.rand(50, 2)
    with pytest.warns(UserWarning, match="torch.compile unavailable"):
        out = grid(x)
    assert torch.equal(out, ref(x)) and grid._fast == ()
    strict = HashGrid(2, n_levels=3, n_features=1, log2_table=6, base_res=4, finest_res=32, compile=True)
    strict._fast = (broken, broken)
    with pytest.raises(LipspaceError, match=r"compiled encoding failed.*compile_encoding=false.*g\+\+"):
        strict(x)
    with pytest.raises(LipspaceError, match="compile must be"):
        HashGrid(2, compile="yes")


def test_a_grid_with_the_compiled_path_pickles():
    """torch.save of a whole module and spawn-based DDP pickle it; compiled functions themselves do not pickle."""
    import pickle

    grid = TriPlaneHash(n_levels=3, n_features=1, log2_table=6, base_res=4, finest_res=32, compile="auto")
    x = torch.rand(20, 3)
    out = grid(x)
    copy = pickle.loads(pickle.dumps(grid))
    assert bool(copy.grid._fast) == bool(grid.grid._fast) and torch.equal(copy(x), out)
    eager = pickle.loads(pickle.dumps(TriPlaneHash(n_levels=3, n_features=1, log2_table=6, base_res=4, finest_res=32)))
    assert eager.grid._fast == ()


@pytest.mark.parametrize("make", [lambda: HashGrid(3, 4, 2, 10, 4, 64), lambda: TriPlaneHash(4, 2, 10, 4, 64)])
def test_points_that_require_grad_get_the_interpolations_gradient(make):
    """torso=deform moves the points a tri-plane field reads: their gradient is d(sum_c w_c(x) t_c)/dx, the same as
    autograd through a plain-ops reference; the table's gradient is unchanged by asking for it."""
    torch.manual_seed(0)
    enc = make()
    with torch.no_grad():
        next(enc.parameters()).uniform_(-1, 1)
    grid = enc if isinstance(enc, HashGrid) else enc.grid
    x = torch.rand(64, 3) * 0.9 + 0.05
    up = torch.randn(64, enc.out_dim)
    xa = x.clone().requires_grad_()
    (enc(xa) * up).sum().backward()
    grad_table, grad_x = grid.table.grad.clone(), xa.grad
    grid.table.grad = None
    (enc(x) * up).sum().backward()  # points without grad: the table's gradient is the same
    assert torch.allclose(grid.table.grad, grad_table, atol=1e-6)
    xr = x.clone().requires_grad_()  # reference: the same interpolation by autograd-tracked ops
    pts = xr[:, None, :] if isinstance(enc, HashGrid) else xr[:, enc.plane_dims]
    idx, w = grid.indices_and_weights(pts)
    ref = (w[..., None] * grid.table[idx]).sum(-2).reshape(len(x), -1)
    (ref * up).sum().backward()
    assert grad_x is not None and float(grad_x.abs().max()) > 0
    assert torch.allclose(grad_x, xr.grad, atol=1e-5, rtol=1e-4)
