"""Multiresolution hash encoding (Instant-NGP, Mueller et al. 2022) in pure PyTorch, 2-D and 3-D, for one grid or
several independent grids evaluated in one call (a tri-plane is three 2-D grids).

Formulation (Instant-NGP section 3): L levels; level l has resolution N_l = floor(N_min * b^l) with
b = exp((ln N_max - ln N_min) / (L - 1)); a point x in [0, 1]^d is scaled to x N_l, its cell's 2^d corners are
looked up in the level's table of F-wide feature vectors and d-linearly interpolated. A level whose dense grid
((N_l + 1)^d vertices) fits in 2^T entries is indexed densely (one entry per vertex, no collisions); finer
levels use the spatial hash h(c) = (c_1 pi_1 xor ... xor c_d pi_d) mod 2^T with pi = (1, 2654435761, 805459861).
Tables are initialised U(-1e-4, 1e-4). The output is the concatenation of every level's F features: [P, L F]
per grid ([P, G L F] for G grids).

Speed (measured by ``benchmarks/bench_hashgrid.py``; the point of writing this rather than using nerfstudio's
torch implementation). Eager path: all levels, corners and grids are evaluated by batched tensor ops, no Python
loop over levels; index arithmetic is int32 up to the final table row (the hash's products wrap modulo 2^32
exactly as the uint32 arithmetic of the CUDA original, and only the low T bits are kept), corners are formed
separably; every level's table lives in one flat parameter, so one ``index_select`` gathers all features and one
``index_add_`` scatters their gradients (a custom autograd function that saves the indices and weights instead of
the [P, L, 2^d, F] gathered features). Compiled path (``compile=True`` / ``"auto"``, the functions in
``lipspace.renderers.hashgrid_compiled``): the same arithmetic laid out with the point index innermost, so that
torch.compile vectorises it over points, fused with the gather and the interpolation into one loop; backward
recomputes rows and weights instead of storing them. Positions get a gradient (through the interpolation weights)
when they require one, on the eager path: torso=deform learns where to move the points a field reads.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from lipspace.renderers.hashgrid_compiled import compiled_functions
from lipspace.utils.errors import LipspaceError

PRIMES = (1, 2654435761, 805459861)


def _as_int32(v: int) -> int:
    """The int32 with the same low 32 bits as ``v`` (2654435761 does not fit a signed int32)."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= (1 << 31) else v


def level_resolutions(n_levels: int, base_res: int, finest_res: int) -> list[int]:
    if n_levels < 1 or base_res < 1 or finest_res < base_res:
        raise LipspaceError(f"hash grid: need n_levels >= 1 and 1 <= base_res <= finest_res, got {n_levels}, "
                            f"{base_res}, {finest_res}")
    if n_levels == 1:
        return [int(base_res)]
    b = math.exp((math.log(finest_res) - math.log(base_res)) / (n_levels - 1))
    return [int(math.floor(base_res * b ** level)) for level in range(n_levels)]


def _corners(terms: torch.Tensor, op) -> torch.Tensor:
    """[..., d, 2] per-dimension terms -> [..., 2^d] combined by ``op`` over dimensions (dimension i is bit i)."""
    acc = terms[..., 0, :]
    for i in range(1, terms.shape[-2]):
        acc = op(terms[..., i, :, None], acc[..., None, :]).flatten(-2)
    return acc


def _packed(t: torch.Tensor) -> torch.Tensor:
    """[N, F] float32 rows as a 1-D tensor of N elements when F is 1 or 2 (2 floats = one complex64, whose
    addition is component-wise), so gathers / scatters move one 4- or 8-byte element per row: measured 2.4x
    (gather) and 1.9x (scatter-add) faster than row indexing on these CPUs. Other F: unchanged."""
    if t.shape[1] == 1:
        return t.view(-1)
    if t.shape[1] == 2 and t.dtype == torch.float32:
        return t.view(torch.complex64).view(-1)
    return t


def _unpacked(t: torch.Tensor, f: int) -> torch.Tensor:
    if t.dtype == torch.complex64:
        return torch.view_as_real(t)
    return t.view(-1, f) if t.dim() == 1 else t


def _scatter_rows(shape: tuple, rows: torch.Tensor, contrib: torch.Tensor) -> torch.Tensor:
    """The table gradient: zeros of the table's ``shape`` [N, F] with contributions [M, F] added at rows [M]."""
    grad_table = torch.zeros(shape, dtype=contrib.dtype, device=contrib.device)
    _packed(grad_table).index_add_(0, rows, _packed(contrib.contiguous()))
    return grad_table


class _Interpolate(torch.autograd.Function):
    """out[p, k, :] = sum_c w[p, k, c] * table[idx[p, k, c], :]; grad flows to the table and, when the weights
    carry a graph (points that require grad: torso=deform moves them), to the weights: d out / d w[p, k, c] =
    table[idx[p, k, c]], the corners' features gathered again in backward (only then)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        f = table.shape[1]
        feats = _unpacked(_packed(table).index_select(0, idx.reshape(-1)), f)
        ctx.save_for_backward(idx, w, table)
        ctx.shape = tuple(table.shape)
        return torch.bmm(w.reshape(-1, 1, w.shape[-1]), feats.reshape(-1, w.shape[-1], f)).view(*w.shape[:-1], f)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        idx, w, table = ctx.saved_tensors
        grad_table = grad_w = None
        if ctx.needs_input_grad[0]:
            contrib = (w[..., None] * grad_out[:, :, None, :]).reshape(-1, grad_out.shape[-1])
            grad_table = _scatter_rows(ctx.shape, idx.reshape(-1), contrib)
        if ctx.needs_input_grad[2]:
            f = table.shape[1]
            feats = _unpacked(_packed(table.detach()).index_select(0, idx.reshape(-1)), f).view(*w.shape, f)
            grad_w = torch.einsum("pkcf,pkf->pkc", feats, grad_out)
        return grad_table, None, grad_w


# the compiled path's autograd function; its compiled functions (grid._fast): lipspace.renderers.hashgrid_compiled
class _FusedInterpolate(torch.autograd.Function):
    """The compiled path: forward gathers and interpolates in one compiled loop; backward recomputes rows and
    weights (cheaper than storing [P, L, 2^d] of them) and scatters with one ``index_add_``."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, x: torch.Tensor, grid: "HashGrid") -> torch.Tensor:
        xt = x.permute(1, 2, 0).contiguous()  # [G, d, P]
        out = grid._fast[0](xt, table, *grid.fused_consts())
        ctx.save_for_backward(xt)
        ctx.grid = grid
        return out.reshape(x.shape[0], -1)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (xt,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        grid = ctx.grid
        g, _, p = xt.shape
        grad = grad_out.reshape(p, g, grid.n_levels, grid.n_features).contiguous()
        rows, contrib = grid._fast[1](xt, grad, *grid.fused_consts())
        return _scatter_rows(grid.table.shape, rows, contrib), None, None


class HashGrid(nn.Module):
    """``n_grids`` independent multiresolution hash grids over [0, 1]^in_dim; see the module docstring.

    forward(x): x [P, in_dim] (one grid) or [P, n_grids, in_dim] -> [P, n_grids * n_levels * n_features]
    (grid-major, then level, then feature). Points outside [0, 1] are clamped onto the boundary."""

    def __init__(self, in_dim: int = 3, n_levels: int = 16, n_features: int = 2, log2_table: int = 19,
                 base_res: int = 16, finest_res: int = 2048, n_grids: int = 1, init_scale: float = 1e-4,
                 compile: bool | str = False):
        """``compile``: the fused path (``lipspace.renderers.hashgrid_compiled``) through torch.compile: index
        arithmetic, gather and interpolation in one loop over points, nothing of size [P, L, 2^d] kept for
        backward (forward bit-identical to the eager path, gradients equal up to float summation order; tested).
        It needs a C++ compiler on CPU (Triton on GPU); the first call compiles. ``"auto"``: compiled when that
        works, else the eager path with one warning."""
        super().__init__()
        if in_dim not in (2, 3):
            raise LipspaceError(f"hash grid: in_dim must be 2 or 3, got {in_dim}")
        if compile not in (True, False, "auto"):
            raise LipspaceError(f"hash grid: compile must be true, false or 'auto', got {compile!r}")
        if not 1 <= log2_table <= 30:
            raise LipspaceError(f"hash grid: log2_table must be in [1, 30], got {log2_table}")
        self.in_dim, self.n_levels, self.n_features = in_dim, n_levels, n_features
        self.log2_table, self.n_grids = log2_table, n_grids
        self.resolutions = level_resolutions(n_levels, base_res, finest_res)
        cap = 1 << log2_table
        sizes, hashed = [], []
        for n in self.resolutions:
            dense = (n + 1) ** in_dim
            sizes.append(min(dense, cap))
            hashed.append(dense > cap)
        per_grid = sum(sizes)
        if compile and n_grids * per_grid >= 2 ** 31:
            raise LipspaceError(f"hash grid: {n_grids * per_grid} table rows do not fit the compiled path's int32 "
                                f"row index; set compile=false")
        offsets = []
        for g in range(n_grids):
            base = g * per_grid
            offsets.append([base + sum(sizes[:level]) for level in range(n_levels)])
        self.sizes, self.hashed = sizes, hashed
        self.table = nn.Parameter(torch.empty(n_grids * per_grid, n_features).uniform_(-init_scale, init_scale))
        i32 = torch.int32
        self.register_buffer("res", torch.tensor(self.resolutions, dtype=torch.float32), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.int64), persistent=False)  # [G, L]
        self.n_dense = sum(not h for h in hashed)
        if any(hashed[: self.n_dense]):
            raise LipspaceError("hash grid: resolutions must not decrease with the level")
        self.register_buffer("hash_mask", torch.tensor([s - 1 for s in sizes], dtype=i32), persistent=False)
        strides = [[(n + 1) ** i for i in range(in_dim)] for n in self.resolutions]
        self.register_buffer("strides", torch.tensor(strides, dtype=i32), persistent=False)  # [L, d]
        self.register_buffer("primes", torch.tensor([_as_int32(p) for p in PRIMES[:in_dim]], dtype=i32),
                             persistent=False)
        self.register_buffer("dense_levels", torch.arange(n_levels) < self.n_dense, persistent=False)
        self.out_dim = n_grids * n_levels * n_features
        self.compile_mode = compile
        self.register_buffer("offsets32", self.offsets.to(torch.int32), persistent=False)
        self._fast = compiled_functions() if compile else ()  # (forward, backward parts); () = the eager path
        self._fast_checked: set = set()  # device types the compiled path has run on

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, n_grids={self.n_grids}, levels={self.n_levels} (res "
                f"{self.resolutions[0]}..{self.resolutions[-1]}, {sum(self.hashed)} hashed), "
                f"features={self.n_features}, table=2^{self.log2_table}, params={self.table.numel()}")

    def indices_and_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Table rows (int64) [P, G*L, 2^d] and interpolation weights [P, G*L, 2^d] for points x [P, G, d].

        Separable evaluation: per dimension only the two candidate coordinates of the cell are turned into index
        terms (c * stride for dense levels, (c * prime) mod 2^T for hashed ones; masking before the xor is exact
        because (a ^ b) & m = (a & m) ^ (b & m)) and weights (1 - frac, frac); the 2^d corners are then formed by
        one broadcast sum / xor / product per dimension. Corner k has bit i of k = offset along dimension i."""
        p, g, d = x.shape
        pos = x.clamp(0.0, 1.0)[:, :, None, :] * self.res[:, None]  # [P, G, L, d]
        cell = torch.minimum(pos.floor(), self.res[:, None] - 1)
        frac = pos - cell
        cell = cell.to(torch.int32)
        pair = torch.stack([cell, cell + 1], -1)  # [P, G, L, d, 2]
        k = self.n_dense
        parts = []
        if k:
            terms = pair[:, :, :k] * self.strides[:k, :, None]
            parts.append(_corners(terms, torch.add))
        if k < self.n_levels:
            terms = (pair[:, :, k:] * self.primes[:, None]) & self.hash_mask[k:, None, None]
            parts.append(_corners(terms, torch.bitwise_xor))
        idx = parts[0] if len(parts) == 1 else torch.cat(parts, 2)
        idx = idx.long() + self.offsets[None, :, :, None]
        w = _corners(torch.stack([1.0 - frac, frac], -1), torch.mul)
        return idx.view(p, g * self.n_levels, 1 << d), w.view(p, g * self.n_levels, 1 << d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and self.n_grids == 1:
            x = x[:, None, :]
        if x.dim() != 3 or x.shape[1:] != (self.n_grids, self.in_dim):
            raise LipspaceError(f"HashGrid expects points [P, {self.n_grids}, {self.in_dim}]"
                                f"{' or [P, ' + str(self.in_dim) + ']' if self.n_grids == 1 else ''}, got "
                                f"{tuple(x.shape)}")
        # 0 / 1 points: eager (no 0/1-size recompiles); points that need a gradient (the fused path gives them none)
        if self._fast and x.shape[0] > 1 and not x.requires_grad and self._fast_ready(x):
            return _FusedInterpolate.apply(self.table, x.float(), self)
        idx, w = self.indices_and_weights(x.float())
        out = _Interpolate.apply(self.table, idx, w.to(self.table.dtype))
        return out.reshape(x.shape[0], self.out_dim)

    def _fast_ready(self, x: torch.Tensor) -> bool:
        """Whether the compiled path runs: on first use both compiled functions (forward and backward parts) are
        tried on a few points, so a missing compiler shows here, not deep inside a later backward pass. Failure:
        ``compile="auto"`` falls back to the eager path with one warning; ``compile=True`` raises."""
        if x.device.type in self._fast_checked:
            return True
        try:
            xt = x[:8].float().permute(1, 2, 0).contiguous()
            with torch.no_grad():
                out = self._fast[0](xt, self.table, *self.fused_consts())
                self._fast[1](xt, out.new_zeros(out.shape), *self.fused_consts())  # contiguous, as in training
        except Exception as e:  # noqa: BLE001 - torch.compile's failures (no compiler, ...) have no common type
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            if self.compile_mode != "auto":
                raise LipspaceError(f"hash grid: the compiled encoding failed ({type(e).__name__}: {msg}); set "
                                    f"renderer.field.compile_encoding=false (or auto, to fall back to the eager "
                                    f"path), or install a C++ compiler (apt-get install g++)") from e
            warnings.warn(f"hash grid: torch.compile unavailable ({type(e).__name__}: {msg}); using the eager "
                          f"encoding (same results, slower)", stacklevel=3)
            self._fast = ()
            return False
        self._fast_checked.add(x.device.type)
        return True

    def __getstate__(self):  # compiled functions do not pickle (torch.save of a module, spawn-based DDP)
        return {**self.__dict__, "_fast": bool(self._fast), "_fast_checked": set()}

    def __setstate__(self, state):
        super().__setstate__({**state, "_fast": compiled_functions() if state.get("_fast") else ()})

    def fused_consts(self) -> tuple[torch.Tensor, ...]:
        return self.res, self.dense_levels, self.hash_mask, self.strides, self.primes, self.offsets32


class TriPlaneHash(nn.Module):
    """Three 2-D multiresolution hash grids on the XY, YZ and XZ planes (ER-NeRF / SyncTalk), evaluated in one
    batched call; points [P, 3] in [0, 1]^3 -> features [P, 3 L F] (XY block, then YZ, then XZ)."""

    PLANES = ((0, 1), (1, 2), (0, 2))

    def __init__(self, n_levels: int = 14, n_features: int = 1, log2_table: int = 16, base_res: int = 16,
                 finest_res: int = 512, compile: bool | str = False):
        super().__init__()
        self.grid = HashGrid(2, n_levels, n_features, log2_table, base_res, finest_res, n_grids=3, compile=compile)
        self.register_buffer("plane_dims", torch.tensor(self.PLANES), persistent=False)
        self.out_dim = self.grid.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[-1] != 3:
            raise LipspaceError(f"TriPlaneHash expects points [P, 3], got {tuple(x.shape)}")
        return self.grid(x[:, self.plane_dims])  # [P, 3, 2]
