"""Training throughput (rays/s) of the NeRF renderer vs an in-file AD-NeRF-style re-implementation, in one run.

Usage:  PYTHONPATH=src python benchmarks/bench_renderer.py [--quick] [--configs tiny,lipnerf,adnerf] [--compile]

One iteration = coarse + fine forward, backward, Adam step on a batch of random rays, each ray with its
own condition vector (requires_grad, as when a conditioner feeds it). Implementations run interleaved
round by round so background load hits them alike; the table gives the median and the best round.

The baseline here is a re-implementation in AD-NeRF's style (for quick A/B checks without a peer checkout), not
AD-NeRF's code: speed claims against AD-NeRF come from benchmarks/bench_peers.py (`make bench-peers`), which
imports AD-NeRF's own modules and times them in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lipspace.renderers import MLPField, NeRFRenderer, mse_chunk_loss


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark configuration (network size, batch, samples)."""

    name: str
    hidden: int
    n_layers: int
    n_rays: int
    n_coarse: int
    n_fine: int
    cond_dim: int


CONFIGS = {
    "tiny": BenchConfig("tiny", hidden=64, n_layers=4, n_rays=1024, n_coarse=24, n_fine=24, cond_dim=32),
    "lipnerf": BenchConfig("lipnerf", hidden=128, n_layers=8, n_rays=2048, n_coarse=64, n_fine=128, cond_dim=64),
    "adnerf": BenchConfig("adnerf", hidden=256, n_layers=8, n_rays=2048, n_coarse=64, n_fine=128, cond_dim=64),
}


# ---------------------------------------------------------------------------------------------------
# Baseline: a re-implementation of AD-NeRF's HeadNeRF code path (run_nerf.py / run_nerf_helpers.py) in their style
# (NOT their code; bench_peers.py times their code):
# lambda embedder + cat, per-sample concat of PE(x), condition and PE(d), batchify(netchunk=64k),
# batchify_rays(chunk=1024), cumprod compositing with a 1e10 last interval, cat + sort for the fine pass.
# The only change: the audio vector is per ray ([R, C] expanded per sample) instead of one per image.
# ---------------------------------------------------------------------------------------------------
BASELINE = "AD-NeRF-style re-impl (anomaly off) = baseline"
RE_IMPL_ANOMALY = "AD-NeRF-style re-impl (anomaly mode)"


class AdnerfEmbedder:
    """AD-NeRF's Embedder: a list of lambdas concatenated."""

    def __init__(self, multires: int):
        fns = [lambda x: x]
        for freq in 2.0 ** torch.linspace(0.0, multires - 1, steps=multires):
            for p_fn in (torch.sin, torch.cos):
                fns.append(lambda x, p_fn=p_fn, freq=freq: p_fn(x * freq))
        self.fns = fns
        self.out_dim = 3 * len(fns)

    def __call__(self, x):
        return torch.cat([fn(x) for fn in self.fns], -1)


class AdnerfFaceNeRF(nn.Module):
    """AD-NeRF's FaceNeRF (use_viewdirs=True): concat input, skip at 4, feature = h, 1 + D//4 view layers."""

    def __init__(self, D, W, input_ch, input_ch_views, dim_aud, skips=(4,)):
        super().__init__()
        self.input_ch, self.input_ch_views, self.dim_aud, self.skips = input_ch, input_ch_views, dim_aud, skips
        input_ch_all = input_ch + dim_aud
        self.pts_linears = nn.ModuleList(
            [nn.Linear(input_ch_all, W)]
            + [nn.Linear(W, W) if i not in skips else nn.Linear(W + input_ch_all, W) for i in range(D - 1)]
        )
        self.views_linears = nn.ModuleList(
            [nn.Linear(input_ch_views + W, W // 2)] + [nn.Linear(W // 2, W // 2) for _ in range(D // 4)]
        )
        self.alpha_linear = nn.Linear(W, 1)
        self.rgb_linear = nn.Linear(W // 2, 3)

    def forward(self, x):
        input_pts, input_views = torch.split(x, [self.input_ch + self.dim_aud, self.input_ch_views], dim=-1)
        h = input_pts
        for i, layer in enumerate(self.pts_linears):
            h = F.relu(layer(h))
            if i in self.skips:
                h = torch.cat([input_pts, h], -1)
        alpha = self.alpha_linear(h)
        h = torch.cat([h, input_views], -1)
        for layer in self.views_linears:
            h = F.relu(layer(h))
        return torch.cat([self.rgb_linear(h), alpha], -1)


def adnerf_run_network(inputs, viewdirs, aud, fn, embed_fn, embeddirs_fn, netchunk=1024 * 64):
    inputs_flat = torch.reshape(inputs, [-1, inputs.shape[-1]])
    embedded = embed_fn(inputs_flat)
    aud = aud[:, None].expand(inputs.shape[0], inputs.shape[1], aud.shape[-1]).reshape(-1, aud.shape[-1])
    embedded = torch.cat((embedded, aud), -1)
    input_dirs = viewdirs[:, None].expand(inputs.shape)
    embedded = torch.cat([embedded, embeddirs_fn(torch.reshape(input_dirs, [-1, 3]))], -1)
    outputs_flat = torch.cat([fn(embedded[i : i + netchunk]) for i in range(0, embedded.shape[0], netchunk)], 0)
    return torch.reshape(outputs_flat, list(inputs.shape[:-1]) + [outputs_flat.shape[-1]])


def adnerf_raw2outputs(raw, z_vals, rays_d, bc_rgb):
    raw2alpha = lambda raw, dists: 1.0 - torch.exp(-(F.relu(raw) + 1e-6) * dists)  # noqa: E731 (AD-NeRF's own style)
    dists = z_vals[..., 1:] - z_vals[..., :-1]
    dists = torch.cat([dists, torch.Tensor([1e10]).expand(dists[..., :1].shape)], -1)
    dists = dists * torch.norm(rays_d[..., None, :], dim=-1)
    rgb = torch.sigmoid(raw[..., :3])
    rgb = torch.cat((rgb[:, :-1, :], bc_rgb.unsqueeze(1)), dim=1)
    alpha = raw2alpha(raw[..., 3], dists)
    weights = alpha * torch.cumprod(torch.cat([torch.ones((alpha.shape[0], 1)), 1.0 - alpha + 1e-10], -1), -1)[:, :-1]
    return torch.sum(weights[..., None] * rgb, -2), weights


def adnerf_sample_pdf(bins, weights, N_samples, det=False):
    weights = weights + 1e-5
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, -1)], -1)
    if det:
        u = torch.linspace(0.0, 1.0, steps=N_samples).expand(list(cdf.shape[:-1]) + [N_samples])
    else:
        u = torch.rand(list(cdf.shape[:-1]) + [N_samples])
    inds = torch.searchsorted(cdf, u.contiguous(), right=True)
    below = torch.max(torch.zeros_like(inds - 1), inds - 1)
    above = torch.min((cdf.shape[-1] - 1) * torch.ones_like(inds), inds)
    inds_g = torch.stack([below, above], -1)
    matched_shape = [inds_g.shape[0], inds_g.shape[1], cdf.shape[-1]]
    cdf_g = torch.gather(cdf.unsqueeze(1).expand(matched_shape), 2, inds_g)
    bins_g = torch.gather(bins.unsqueeze(1).expand(matched_shape), 2, inds_g)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    t = (u - cdf_g[..., 0]) / denom
    return bins_g[..., 0] + t * (bins_g[..., 1] - bins_g[..., 0])


def adnerf_render_rays(ray_batch, bc_rgb, aud, network_fn, network_fine, query, N_samples, N_importance):
    N_rays = ray_batch.shape[0]
    rays_o, rays_d, viewdirs = ray_batch[:, 0:3], ray_batch[:, 3:6], ray_batch[:, -3:]
    bounds = torch.reshape(ray_batch[..., 6:8], [-1, 1, 2])
    near, far = bounds[..., 0], bounds[..., 1]
    t_vals = torch.linspace(0.0, 1.0, steps=N_samples)
    z_vals = (near * (1.0 - t_vals) + far * t_vals).expand([N_rays, N_samples])
    mids = 0.5 * (z_vals[..., 1:] + z_vals[..., :-1])
    upper = torch.cat([mids, z_vals[..., -1:]], -1)
    lower = torch.cat([z_vals[..., :1], mids], -1)
    t_rand = torch.rand(z_vals.shape)
    t_rand[..., -1] = 1.0
    z_vals = lower + (upper - lower) * t_rand
    pts = rays_o[..., None, :] + rays_d[..., None, :] * z_vals[..., :, None]
    raw = query(pts, viewdirs, aud, network_fn)
    rgb_map_0, weights = adnerf_raw2outputs(raw, z_vals, rays_d, bc_rgb)
    z_vals_mid = 0.5 * (z_vals[..., 1:] + z_vals[..., :-1])
    z_samples = adnerf_sample_pdf(z_vals_mid, weights[..., 1:-1], N_importance).detach()
    z_vals, _ = torch.sort(torch.cat([z_vals, z_samples], -1), -1)
    pts = rays_o[..., None, :] + rays_d[..., None, :] * z_vals[..., :, None]
    raw = query(pts, viewdirs, aud, network_fine)
    rgb_map, _ = adnerf_raw2outputs(raw, z_vals, rays_d, bc_rgb)
    return {"rgb_map": rgb_map, "rgb0": rgb_map_0}


class AdnerfBaseline:
    """One AD-NeRF-style training iteration (re-implemented); ``anomaly`` mirrors the set_detect_anomaly(True)
    that their run_nerf_helpers.py executes at import, i.e. what their released code actually runs with."""

    def __init__(self, cfg: BenchConfig, anomaly: bool, chunk: int = 1024):
        self.cfg, self.anomaly, self.chunk = cfg, anomaly, chunk
        self.embed_fn, self.embeddirs_fn = AdnerfEmbedder(10), AdnerfEmbedder(4)
        dims = (self.embed_fn.out_dim, self.embeddirs_fn.out_dim, cfg.cond_dim)
        self.model = AdnerfFaceNeRF(cfg.n_layers, cfg.hidden, *dims)
        self.model_fine = AdnerfFaceNeRF(cfg.n_layers, cfg.hidden, *dims)
        self.params = list(self.model.parameters()) + list(self.model_fine.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=5e-4, betas=(0.9, 0.999))

    def query(self, inputs, viewdirs, aud, fn):
        return adnerf_run_network(inputs, viewdirs, aud, fn, self.embed_fn, self.embeddirs_fn)

    def step(self, batch):
        rays_o, rays_d, near, far, cond, bg, target = batch
        ctx = torch.autograd.detect_anomaly(check_nan=True) if self.anomaly else contextlib.nullcontext()
        with ctx:
            rays = torch.cat([rays_o, rays_d, near[:, None], far[:, None], rays_d], -1)
            outs = [
                adnerf_render_rays(rays[i : i + self.chunk], bg[i : i + self.chunk], cond[i : i + self.chunk],
                                   self.model, self.model_fine, self.query, self.cfg.n_coarse, self.cfg.n_fine)
                for i in range(0, rays.shape[0], self.chunk)
            ]
            rgb = torch.cat([o["rgb_map"] for o in outs])
            rgb0 = torch.cat([o["rgb0"] for o in outs])
            loss = torch.mean((rgb - target) ** 2) + torch.mean((rgb0 - target) ** 2)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return loss.item()


# ---------------------------------------------------------------------------------------------------
# lipspace renderer
# ---------------------------------------------------------------------------------------------------
class LipspaceStep:
    """One training iteration of NeRFRenderer: ``chunked`` uses forward_backward, else one graph + backward."""

    def __init__(self, cfg: BenchConfig, chunked: bool, compile: bool = False, train_chunk_rays: int | None = None):
        field = functools.partial(MLPField, hidden=cfg.hidden, n_layers=cfg.n_layers)
        self.renderer = NeRFRenderer(field, cfg.cond_dim, n_coarse=cfg.n_coarse, n_fine=cfg.n_fine, compile=compile,
                                     train_chunk_rays=train_chunk_rays).train()
        self.chunked = chunked
        self.optimizer = torch.optim.Adam(self.renderer.parameters(), lr=5e-4, betas=(0.9, 0.999))

    def step(self, batch):
        rays_o, rays_d, near, far, cond, bg, target = batch
        self.optimizer.zero_grad(set_to_none=True)
        if self.chunked:
            loss = self.renderer.forward_backward(rays_o, rays_d, near, far, cond, bg, mse_chunk_loss(target))["loss"]
        else:
            out = self.renderer(rays_o, rays_d, near, far, cond, bg)
            loss = F.mse_loss(out["rgb"], target) + F.mse_loss(out["rgb_coarse"], target)
            loss.backward()
        self.optimizer.step()
        return loss.item()


class OtherLoad:
    """Average CPU cores used by *other* processes between two reads (Linux /proc/stat minus our CPU time).

    The load average is no help here: this benchmark itself keeps ~2 cores busy.
    """

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        return busy, time.process_time(), time.perf_counter()

    def cores(self) -> float | None:
        end = self._read()
        if end is None or self.start is None:
            return None
        (b0, p0, w0), (b1, p1, w1) = self.start, end
        return max(0.0, ((b1 - b0) - (p1 - p0)) / (w1 - w0))


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform reports: the label of every absolute time."""
    import platform
    from pathlib import Path

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def random_batch(cfg: BenchConfig, seed: int):
    """Random rays through a unit-ish volume, a per-ray condition with grad, background and target colours."""
    g = torch.Generator().manual_seed(seed)
    n = cfg.n_rays
    rays_o = torch.randn(n, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, -1.0])
    rays_d = F.normalize(torch.randn(n, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    near, far = torch.full((n,), 0.3), torch.full((n,), 1.7)
    cond = torch.randn(n, cfg.cond_dim, generator=g).requires_grad_()
    return rays_o, rays_d, near, far, cond, torch.rand(n, 3, generator=g), torch.rand(n, 3, generator=g)


def bench_config(cfg: BenchConfig, iters: int, impls: list[str]) -> list[tuple[str, list[float]]]:
    """Time each implementation for ``iters`` interleaved rounds after one warm-up step each."""
    makers = {
        RE_IMPL_ANOMALY: lambda: AdnerfBaseline(cfg, anomaly=True),
        BASELINE: lambda: AdnerfBaseline(cfg, anomaly=False),
        "lipspace one graph": lambda: LipspaceStep(cfg, chunked=False),
        "lipspace forward_backward": lambda: LipspaceStep(cfg, chunked=True),
        "lipspace forward_backward + compile": lambda: LipspaceStep(cfg, chunked=True, compile=True),
    }
    runners = {}
    for name in impls:
        torch.manual_seed(0)
        runners[name] = makers[name]()
        t0 = time.perf_counter()
        runners[name].step(random_batch(cfg, 0))  # warm-up (and compile, where asked)
        print(f"  [{cfg.name}] warm-up {name}: {time.perf_counter() - t0:.2f} s", flush=True)
    times = {name: [] for name in impls}
    load = OtherLoad()
    for it in range(iters):
        batch = random_batch(cfg, it + 1)
        for name, runner in runners.items():
            t0 = time.perf_counter()
            runner.step(batch)
            times[name].append(time.perf_counter() - t0)
    return [(name, times[name]) for name in impls], load.cores()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,lipnerf,adnerf", help="comma list of " + ",".join(CONFIGS))
    parser.add_argument("--quick", action="store_true", help="2 timed rounds and no anomaly-mode baseline")
    parser.add_argument("--iters", type=int, default=None, help="timed rounds per implementation (default 5, quick 2)")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile path (slow warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    iters = args.iters or (2 if args.quick else 5)
    impls = [BASELINE, "lipspace one graph", "lipspace forward_backward"]
    if not args.quick:
        impls.insert(0, RE_IMPL_ANOMALY)
    if args.compile:
        impls.append("lipspace forward_backward + compile")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} before start")

    rows = []
    for name in args.configs.split(","):
        cfg = CONFIGS[name.strip()]
        results, others = bench_config(cfg, iters, impls)
        base = statistics.median(dict(results)[BASELINE])
        for impl, ts in results:
            med = statistics.median(ts)
            rays_s = cfg.n_rays / med
            rows.append((f"{cfg.name} {cfg.n_layers}x{cfg.hidden} R={cfg.n_rays} {cfg.n_coarse}+{cfg.n_fine}", impl,
                         f"{med:.3f}", f"{min(ts):.3f}", f"{rays_s:.0f}", f"{base / med:.2f}x",
                         "?" if others is None else f"{others:.2f}"))
    header = ("config", "implementation", "s/iter med", "s/iter best", "rays/s", "vs baseline", "other procs' CPU")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    print()
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print("\nrays/s from the median round. 'other procs' CPU' = cores used by other processes while the config ran:"
          " above ~0.1 the figures are depressed (2 threads share 2 cores) and not final.")
    print("'baseline' is this file's AD-NeRF-style re-implementation, not AD-NeRF's code: for ratios against AD-NeRF's"
          " own code run benchmarks/bench_peers.py (make bench-peers).")
    names = [n.strip() for n in args.configs.split(",")]
    chunks = {n: LipspaceStep(CONFIGS[n], chunked=True).renderer.train_chunk_rays for n in names}
    print("forward_backward chunk sizes (rays): " + ", ".join(f"{n}={c}" for n, c in chunks.items()))


if __name__ == "__main__":
    main()
