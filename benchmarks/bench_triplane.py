"""MLP vs tri-plane renderer, side by side in one run (issue 5's figures). Prints figures; asserts nothing.

1. Time to quality on the synthetic clip, or on a preprocessed real clip with ``--dataset DIR`` (expression
   conditioner, budget=tiny, each renderer with its own tiny sizes and rates from conf/budget_renderer/): each
   renderer trains while a probe renders ``--probe-frames`` held-out tail frames every ``--probe-every`` steps
   (probe time excluded from the training wall time); the MLP trains ``--mlp-steps`` steps, its final held-out
   PSNR is the target, and the tri-plane's wall time to first reach it (linear interpolation between probes) is
   compared. The compiled hash encoding (``compile_encoding``) compiles once per process before training; that
   one-off time is printed and the ratio is given without and with it.
2. Training rays/s (from the same runs) and render frames/s at 128^2, 256^2 and 512^2 (the clip's camera with
   scaled intrinsics; ``eval_chunk_rays`` chunks; condition of frame 0).

    python benchmarks/bench_triplane.py [--mlp-steps 600] [--triplane-steps 600] [--sizes 128 256 512]
        [--dataset data/anchor --probe-downscale 4] [--device cuda] [--triplane-overrides renderer.n_samples=48]
        [overrides for both runs ...]
"""

from __future__ import annotations

import argparse
import os
import time

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Probe(L.Callback):
    """Held-out PSNR every ``every`` steps against training wall time (the probe's own time excluded)."""

    def __init__(self, clip, indices, inputs, every: int, downscale: int):
        self.clip, self.indices, self.inputs, self.every, self.downscale = clip, indices, inputs, every, downscale
        self.curve: list[tuple[float, int, float]] = []  # (train seconds, step, psnr)
        self.train_s, self._t0 = 0.0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        _sync(pl_module.device)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        _sync(pl_module.device)
        self.train_s += time.perf_counter() - self._t0
        step = trainer.global_step
        if step % self.every == 0 or step >= trainer.max_steps:
            self.curve.append((self.train_s, step, self.psnr(pl_module)))

    @torch.no_grad()
    def psnr(self, system) -> float:
        from lipspace.model.inference import render_sequence

        was = system.training
        system.eval()
        mses = [float(((img - tgt) ** 2).mean()) for _, img, tgt in
                render_sequence(system.conditioner, system.renderer, self.clip, self.inputs, None,
                                downscale=self.downscale, prepare=False, indices=self.indices)]
        system.train(was)
        return float(-10 * np.log10(np.mean(mses)))


def train_curve(renderer: str, steps: int, every: int, n_frames: int, downscale: int, extra: list[str],
                device: str = "cpu"):
    import tempfile

    from lipspace.utils.config import compose_train
    from lipspace.model.build import build_system

    cfg = compose_train([f"renderer={renderer}", "budget=tiny", f"trainer.max_steps={steps}", "logger=none",
                         "trainer.enable_progress_bar=false", *extra], tempfile.mkdtemp())
    L.seed_everything(int(cfg.seed))
    dm = instantiate(cfg.data)
    dm.load()
    system = build_system(cfg, dm, None)
    probe, compile_s = fit_with_probe(system, dm, steps, every, n_frames, downscale, device)
    rays = steps * int(cfg.data.rays_per_batch) / probe.train_s
    return system, dm, probe.curve, rays, compile_s


def fit_with_probe(system, dm, steps: int, every: int, n_frames: int, downscale: int, device: str = "cpu"):
    """Train ``system`` ``steps`` steps, the held-out PSNR of ``n_frames`` tail frames probed every ``every`` steps
    (training time excludes the probes and the encoding's compilation) -> (probe, compile seconds)."""
    from lipspace.data.sampling import frame_inputs

    compile_s = warm_up_encoding(system.renderer.to(device))
    test = dm.split.test[np.linspace(0, len(dm.split.test) - 1, n_frames).round().astype(int)]
    probe = Probe(dm.clip, test, frame_inputs(dm.clip, test, dm.inputs), every, downscale)
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, callbacks=[probe],
                        limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="gpu" if device == "cuda" else "cpu", devices=1)
    trainer.fit(system, datamodule=dm)
    return probe, compile_s


def warm_up_encoding(renderer) -> float:
    """Seconds to compile the compiled hash encoding (forward and backward; 0 without one): paid once per
    process, so it is timed apart from training."""
    encoding = getattr(getattr(renderer, "field", None), "encoding", None)
    if encoding is None or not encoding.grid._fast:
        return 0.0
    device = encoding.grid.table.device
    t = time.perf_counter()
    encoding(torch.rand(256, 3, device=device)).sum().backward()
    encoding.grid.table.grad = None
    _sync(device)
    return time.perf_counter() - t if encoding.grid._fast else 0.0


def time_to(curve, target: float) -> float | None:
    prev = (0.0, 0, -np.inf)
    for t, _, p in curve:
        if p >= target:
            t0, _, p0 = prev
            return t if not np.isfinite(p0) else t0 + (t - t0) * (target - p0) / max(p - p0, 1e-9)
        prev = (t, 0, p)
    return None


@torch.no_grad()
def render_fps(system, dm, size: int, repeats: int = 2) -> float:
    from lipspace.data.rays import camera_rays, full_frame_pixels, sphere_near_far

    clip = dm.clip
    h, w = clip.hw
    k = torch.as_tensor(clip.intrinsics, dtype=torch.float32) * torch.tensor([size / w, size / h, size / w, size / h])
    u, v, _ = full_frame_pixels(size, size)
    o, d = camera_rays(clip.pose[:1], k, u.reshape(1, -1).float(), v.reshape(1, -1).float())
    center, radius = clip.bounds
    near, far, _ = sphere_near_far(o[0], d[0], center, radius)
    from lipspace.data.sampling import frame_inputs

    dev = system.device
    o, d, near, far = (a.to(dev) for a in (o[0], d[0], near, far))
    inputs = {n: v.to(dev) for n, v in frame_inputs(clip, np.array([0]), dm.inputs).items()}
    cond = system.conditioner(inputs, None)[0]
    bg = torch.zeros_like(o)
    system.eval()
    system.renderer.render_chunked(o, d, near, far, cond.expand(len(o), -1), bg)  # warm-up
    _sync(dev)
    t = time.perf_counter()
    for _ in range(repeats):
        system.renderer.render_chunked(o, d, near, far, cond.expand(len(o), -1), bg)
    _sync(dev)
    return repeats / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mlp-steps", type=int, default=600)
    ap.add_argument("--triplane-steps", type=int, default=600)
    ap.add_argument("--probe-every", type=int, default=100, help="MLP probe interval (its final PSNR is the target)")
    ap.add_argument("--triplane-probe-every", type=int, default=10)
    ap.add_argument("--probe-frames", type=int, default=4)
    ap.add_argument("--probe-downscale", type=int, default=1)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--dataset", help="a preprocessed clip directory (lipspace-prep) instead of the synthetic clip")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: train and render on the GPU (e.g. --triplane-overrides renderer.eval_chunk_rays=65536)")
    ap.add_argument("--triplane-overrides", nargs="*", default=[],
                    help="Hydra overrides for the tri-plane run only (e.g. renderer.field.compile_encoding=false)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs")
    args = ap.parse_args()
    data = ["data=dir", f"data.root={os.path.abspath(args.dataset)}", "data.synthetic=null"] if args.dataset else []
    print(f"== MLP vs tri-plane, {args.dataset or 'synthetic clip'}, budget=tiny, device={args.device}, "
          f"threads={torch.get_num_threads()} "
          f"cpus={os.cpu_count()}, probe {args.probe_frames} held-out frames at 1/{args.probe_downscale} every "
          f"{args.probe_every} (MLP) / {args.triplane_probe_every} (tri-plane) steps"
          + (f", tri-plane overrides: {' '.join(args.triplane_overrides)}" if args.triplane_overrides else ""))
    results = {}
    for name, steps in (("mlp", args.mlp_steps), ("triplane", args.triplane_steps)):
        extra = [*data, *args.overrides, *(args.triplane_overrides if name == "triplane" else [])]
        every = args.triplane_probe_every if name == "triplane" else args.probe_every
        system, dm, curve, rays, compile_s = train_curve(name, steps, every, args.probe_frames,
                                                         args.probe_downscale, extra, args.device)
        fps = {s: render_fps(system, dm, s) for s in args.sizes}
        results[name] = (curve, rays, fps, compile_s)
        print(f"-- {name}: {steps} steps in {curve[-1][0]:.1f} s train wall, {rays:,.0f} rays/s"
              + (f" (+{compile_s:.1f} s one-off compile of the hash encoding)" if compile_s else "")
              + "; held-out PSNR " + " ".join(f"{s}:{p:.2f}" for _, s, p in curve))
        print("   render fps " + "  ".join(f"{s}^2: {f:.2f}" for s, f in fps.items()))
    mlp_curve, tp_curve = results["mlp"][0], results["triplane"][0]
    target, t_mlp = mlp_curve[-1][2], mlp_curve[-1][0]
    t_tp, compile_s = time_to(tp_curve, target), results["triplane"][3]
    print(f"== time to the MLP's final held-out PSNR {target:.2f} dB: MLP {t_mlp:.1f} s, tri-plane "
          + (f"{t_tp:.1f} s -> ratio {t_tp / t_mlp:.3f} (goal <= 0.1)"
             + (f"; with the one-off compile {t_tp + compile_s:.1f} s -> {(t_tp + compile_s) / t_mlp:.3f}"
                if compile_s else "")
             if t_tp is not None else
             f"not reached in {tp_curve[-1][0]:.1f} s (best {max(p for *_, p in tp_curve):.2f} dB)"))


if __name__ == "__main__":
    main()
