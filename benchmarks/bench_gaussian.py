"""MLP vs tri-plane vs 3-D Gaussian splatting renderer, side by side in one run on one machine. Prints a table and
writes a JSON (``--out``); asserts nothing.

1. Time to quality, with bench_triplane.py's protocol (its Probe, time_to and run set-up, imported from it): synthetic
   clip (or ``--dataset DIR``), expression conditioner, budget=tiny, each renderer with its own tiny sizes and rates
   (conf/budget_renderer/; the Gaussian one has none yet, so its renderer=gaussian defaults). Each renderer trains
   while a probe renders the same ``--probe-frames`` held-out tail frames every N steps (probe time excluded from
   the training wall time; PSNR of the mean MSE over those frames, through lipspace.model.inference.render_sequence
   for all three). The MLP trains ``--mlp-steps`` (600) steps; its final held-out PSNR P600 is the target; the
   tri-plane's and the Gaussian renderer's training wall time to first reach it (linear interpolation between
   probes) and its ratio to the MLP's time are reported (bench-triplane reported the tri-plane at 0.054).
2. Training pixels/s from the same runs: rays per batch x steps / s (MLP, tri-plane); frames per batch x h x w x
   steps / s (Gaussian: whole frames).
3. Render frames/s of a whole frame at ``--sizes`` (128^2, 256^2, 512^2), eval mode, no grad, condition of frame 0:
   the clip's camera with its intrinsics scaled to the size by hand (up-scaled past the synthetic clip's 128^2), the
   ray renderers through render_chunked (bench_triplane.render_fps), the Gaussian one through render_frame.
4. Issue 19's CPU goal: forward + backward of one 128^2 training image through GaussianRenderer.render (MSE to the
   target, conditioner included, no optimiser step), with the default Gaussian count right after initialisation
   (setup_scene), on the CPU, median of ``--goal-repeats``; goal <= 0.25 s.

Every absolute time is this machine's: the header and the JSON carry the CPU model (/proc/cpuinfo), torch threads and
the date.

    OMP_NUM_THREADS=2 python benchmarks/bench_gaussian.py [--threads 2] [--out bench_gaussian.json] [--quick]
        [--dataset data/anchor --probe-downscale 4] [--device cuda] [--gaussian-overrides renderer.n_surface=8000]
        [overrides for every run ...]

``--quick``: 30 steps each, 2 probe frames, sizes 64^2 and 128^2 (~2 min on one thread): a check that it runs,
not a measurement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_renderer import cpu_model  # noqa: E402
from bench_triplane import _sync, fit_with_probe, render_fps, time_to  # noqa: E402  (the same protocol)

FULL = dict(mlp_steps=600, triplane_steps=600, gaussian_steps=600, probe_every=100, triplane_probe_every=10,
            gaussian_probe_every=10, probe_frames=4, sizes=[128, 256, 512], goal_repeats=10)
QUICK = dict(mlp_steps=30, triplane_steps=30, gaussian_steps=30, probe_every=10, triplane_probe_every=5,
             gaussian_probe_every=5, probe_frames=2, sizes=[64, 128], goal_repeats=3)
GOAL_S = 0.25  # issue 19: one 128^2 training image, forward + backward, on the CPU
LABEL = {"mlp": "MLP", "triplane": "tri-plane", "gaussian": "Gaussian"}


def machine() -> dict:
    model = cpu_model()
    info = {"cpu": model, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_label(m: dict) -> str:
    return (f"{m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch {m['torch']}"
            + (f", {m['gpu']}" if "gpu" in m else "") + f", {m['date']}, load {m['loadavg'][0]}")


def compose(renderer: str, extra: list[str], steps: int | None = None):
    from lipspace.utils.config import compose_train

    over = [f"renderer={renderer}", "budget=tiny", "logger=none", "trainer.enable_progress_bar=false", *extra]
    return compose_train(over + ([f"trainer.max_steps={steps}"] if steps else []), tempfile.mkdtemp())


def build(cfg):
    from lipspace.model.build import build_system

    L.seed_everything(int(cfg.seed))
    dm = instantiate(cfg.data)
    dm.load()
    return build_system(cfg, dm, None), dm


def pixels_per_step(system, dm, cfg) -> int:
    if system.renderer.batch_kind == "rays":
        return int(cfg.data.rays_per_batch)
    h, w = dm.clip.hw
    return min(int(cfg.data.frames_per_batch), len(dm.split.train)) * h * w


def train_curve(renderer: str, steps: int, every: int, n_frames: int, downscale: int, extra: list[str],
                device: str):
    """bench_triplane.train_curve, for either batch kind: (system, dm, curve, pixels/s, compile s, Gaussians at
    the start)."""
    cfg = compose(renderer, extra, steps)
    system, dm = build(cfg)
    n0 = getattr(system.renderer, "n_gaussians", None)
    probe, compile_s = fit_with_probe(system, dm, steps, every, n_frames, downscale, device)
    return system, dm, probe.curve, steps * pixels_per_step(system, dm, cfg) / probe.train_s, compile_s, n0


def scaled_camera(clip, size: int) -> dict:
    """Frame 0's camera (frame_cameras) with its intrinsics scaled by hand to a size x size image (up-scaled past
    the clip's resolution), a black background."""
    from lipspace.data.sampling import frame_cameras

    h, w = clip.hw
    frame = frame_cameras(clip, [0])
    k = frame["intrinsics"] * torch.tensor([size / w, size / h, size / w, size / h])
    return {"pose": frame["pose"], "intrinsics": k, "bg": torch.zeros(1, size, size, 3), "hw": (size, size)}


@torch.no_grad()
def render_fps_images(system, dm, size: int, repeats: int = 2) -> float:
    from lipspace.data.sampling import frame_inputs

    dev = system.device
    inputs = {n: v.to(dev) for n, v in frame_inputs(dm.clip, np.array([0]), dm.inputs).items()}
    cond = system.conditioner(inputs, None)[0]
    frame = scaled_camera(dm.clip, size)
    system.eval()
    system.renderer.render_frame(frame, cond)  # warm-up
    _sync(dev)
    t = time.perf_counter()
    for _ in range(repeats):
        system.renderer.render_frame(frame, cond)
    _sync(dev)
    return repeats / (time.perf_counter() - t)


def cpu_goal(extra: list[str], repeats: int, size: int = 128) -> dict:
    """Issue 19: seconds for forward + backward of one size^2 training image through GaussianRenderer.render, the
    default Gaussian count right after setup_scene, on the CPU (median and best of ``repeats`` after a warm-up)."""
    from lipspace.data.sampling import frame_cameras, frame_inputs

    system, dm = build(compose("gaussian", extra))
    r = system.renderer.cpu().train()
    h, w = dm.clip.hw
    i = int(dm.split.train[0])
    ds = max(1, w // size)
    batch = frame_cameras(dm.clip, [i], ds)
    if batch["hw"] != (size, size):  # not a multiple of size: the clip's camera scaled by hand
        resize = lambda x: F.interpolate(x.permute(0, 3, 1, 2), (size, size), mode="area").permute(0, 2, 3, 1)  # noqa: E731
        batch = {**scaled_camera(dm.clip, size), "target": resize(batch["target"]), "bg": resize(batch["bg"])}
    batch |= {"frame_idx": torch.tensor([i]), "inputs": frame_inputs(dm.clip, np.array([i]), dm.inputs)}
    times = []
    for k in range(repeats + 1):
        system.zero_grad(set_to_none=True)
        t = time.perf_counter()
        out = r.render(batch, system.conditions(batch))
        F.mse_loss(out["rgb"], batch["target"]).backward()
        if k:  # the first is a warm-up
            times.append(time.perf_counter() - t)
        r._last = None
    times.sort()
    return {"seconds_median": times[len(times) // 2], "seconds_best": times[0], "repeats": repeats,
            "n_gaussians": r.n_gaussians, "n_mouth": int(r.is_mouth.sum()), "hw": list(batch["hw"]),
            "threads": torch.get_num_threads(), "goal_s": GOAL_S, "met": times[len(times) // 2] <= GOAL_S}


def step_at(curve, target: float) -> float | None:
    """The step at which the curve first reaches target (linear interpolation between probes, as time_to)."""
    return time_to([(s, s, p) for _, s, p in curve], target)


def print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny step counts and sizes (~2 min): checks it runs")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (set OMP_NUM_THREADS to match)")
    ap.add_argument("--out", default="bench_gaussian.json", help="JSON with every figure and the machine")
    ap.add_argument("--mlp-steps", type=int)
    ap.add_argument("--triplane-steps", type=int)
    ap.add_argument("--gaussian-steps", type=int)
    ap.add_argument("--probe-every", type=int, help="MLP probe interval (its final PSNR is the target)")
    ap.add_argument("--triplane-probe-every", type=int)
    ap.add_argument("--gaussian-probe-every", type=int)
    ap.add_argument("--probe-frames", type=int)
    ap.add_argument("--probe-downscale", type=int, default=1)
    ap.add_argument("--sizes", type=int, nargs="+")
    ap.add_argument("--goal-repeats", type=int)
    ap.add_argument("--renderers", nargs="+", default=["mlp", "triplane", "gaussian"],
                    choices=["mlp", "triplane", "gaussian"], help="mlp first: its final PSNR is the target")
    ap.add_argument("--dataset", help="a preprocessed clip directory (lipspace-prep) instead of the synthetic clip")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: train and render on the GPU (the CPU goal, 4., stays on the CPU)")
    ap.add_argument("--triplane-overrides", nargs="*", default=[], help="Hydra overrides for the tri-plane run only")
    ap.add_argument("--gaussian-overrides", nargs="*", default=[],
                    help="Hydra overrides for the Gaussian runs only (e.g. renderer.backend=gsplat on cuda)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = ap.parse_args()
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    torch.set_num_threads(args.threads)
    data = ["data=dir", f"data.root={os.path.abspath(args.dataset)}", "data.synthetic=null"] if args.dataset else []
    per = {"mlp": [], "triplane": args.triplane_overrides, "gaussian": args.gaussian_overrides}
    steps = {"mlp": args.mlp_steps, "triplane": args.triplane_steps, "gaussian": args.gaussian_steps}
    every = {"mlp": args.probe_every, "triplane": args.triplane_probe_every, "gaussian": args.gaussian_probe_every}
    m = machine()
    print(f"== bench_gaussian{' --quick (a check, not a measurement)' if args.quick else ''}: "
          f"{args.dataset or 'synthetic clip'}, budget=tiny, expression conditioner, device={args.device}")
    print(f"machine: {machine_label(m)}")
    print(f"probe: {args.probe_frames} held-out tail frames at 1/{args.probe_downscale}, every "
          + " / ".join(f"{every[n]} ({LABEL[n]})" for n in args.renderers) + " steps; probe time excluded")

    res: dict = {"machine": m, "args": vars(args), "renderers": {}}
    if "gaussian" in args.renderers:
        goal = cpu_goal([*data, *args.overrides, *args.gaussian_overrides], args.goal_repeats)
        res["cpu_goal"] = goal
        print(f"-- issue 19 CPU goal: one {goal['hw'][0]}x{goal['hw'][1]} training image, forward + backward through "
              f"GaussianRenderer.render, {goal['n_gaussians']} Gaussians ({goal['n_mouth']} mouth, default count "
              f"after init), {goal['threads']} threads: median {goal['seconds_median']:.3f} s, best "
              f"{goal['seconds_best']:.3f} s of {goal['repeats']} (goal <= {GOAL_S} s: "
              f"{'met' if goal['met'] else 'NOT met'})", flush=True)
    for name in args.renderers:
        system, dm, curve, px, compile_s, n0 = train_curve(name, steps[name], every[name], args.probe_frames,
                                                            args.probe_downscale, [*data, *args.overrides,
                                                                                   *per[name]], args.device)
        fps_fn = render_fps if system.renderer.batch_kind == "rays" else render_fps_images
        fps = {s: fps_fn(system, dm, s) for s in args.sizes}
        r = {"steps": steps[name], "train_s": curve[-1][0], "curve": curve, "final_psnr": curve[-1][2],
             "pixels_per_s": px, "fps": fps, "compile_s": compile_s, "batch_kind": system.renderer.batch_kind}
        if n0 is not None:
            r |= {"n_gaussians_start": n0, "n_gaussians_end": system.renderer.n_gaussians}
        res["renderers"][name] = r
        print(f"-- {LABEL[name]}: {steps[name]} steps in {curve[-1][0]:.1f} s train wall, {px:,.0f} px/s"
              + (f" (+{compile_s:.1f} s one-off compile)" if compile_s else "")
              + (f", Gaussians {n0} -> {system.renderer.n_gaussians}" if n0 is not None else "")
              + "; held-out PSNR " + " ".join(f"{s}:{p:.2f}" for _, s, p in curve), flush=True)
        print("   render fps " + "  ".join(f"{s}^2: {f:.2f}" for s, f in fps.items()), flush=True)

    rs = res["renderers"]
    target = t_ref = None
    if "mlp" in rs:
        target, t_ref = rs["mlp"]["final_psnr"], rs["mlp"]["train_s"]
        res["target_psnr"], res["mlp_time_s"] = target, t_ref
    for name, r in rs.items():
        r["time_to_target_s"] = None if target is None else time_to(r["curve"], target)
        r["step_at_target"] = None if target is None else step_at(r["curve"], target)
        r["ratio_to_mlp"] = (r["time_to_target_s"] / t_ref if r["time_to_target_s"] is not None and t_ref
                             else None)
    m_end = machine()
    res["machine_end"] = {"date": m_end["date"], "loadavg": m_end["loadavg"]}

    print(f"\n== MLP vs tri-plane vs Gaussian ({machine_label(m)}; load at end {m_end['loadavg'][0]})")
    if target is not None:
        print(f"target: the MLP's held-out PSNR after {steps['mlp']} steps, P{steps['mlp']} = {target:.2f} dB, "
              f"reached in {t_ref:.1f} s")
    header = ("renderer", "steps", "train s", "final dB", "s to target (~step)", "ratio", "train px/s",
              *(f"fps {s}^2" for s in args.sizes))
    rows = []
    for name, r in rs.items():
        tt = r["time_to_target_s"]
        to = ("-" if target is None else f"{tt:.1f} (~{r['step_at_target']:.0f})" if tt is not None
              else f"not reached (best {max(p for *_, p in r['curve']):.2f})")
        rows.append((LABEL[name], str(r["steps"]), f"{r['train_s']:.1f}", f"{r['final_psnr']:.2f}", to,
                     "-" if r["ratio_to_mlp"] is None else f"{r['ratio_to_mlp']:.3f}", f"{r['pixels_per_s']:,.0f}",
                     *(f"{r['fps'][s]:.2f}" for s in args.sizes)))
    print_table(rows, header)
    print("fps: the clip's camera, intrinsics scaled by hand to each size (frame 0's condition); px/s: rays/step "
          "(MLP, tri-plane) or frames/step x h x w (Gaussian) x steps / train s")
    if "cpu_goal" in res:
        g = res["cpu_goal"]
        print(f"issue 19 CPU goal: {g['seconds_median']:.3f} s per 128^2 image fwd+bwd, {g['n_gaussians']} Gaussians, "
              f"{g['threads']} threads ({'met' if g['met'] else 'NOT met'}, goal <= {GOAL_S} s)")
    Path(args.out).write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
