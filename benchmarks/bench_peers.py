"""lipspace vs the peers' own code, timed interleaved in one process: AD-NeRF's training iteration, nerfstudio's hash.

Usage:  python benchmarks/bench_peers.py --adnerf DIR --nerfstudio DIR [--quick] [--threads 2] [--parts mlp,hash]
        (or ADNERF_DIR / NERFSTUDIO_DIR in the environment; `make bench-peers ARGS="..."`)
        The full run takes ~12 min on a 2-core machine (--quick ~2 min); --parts/--widths/--rounds split it.

The peers' modules are imported unmodified from the checkouts the user points at (git clone of
https://github.com/YudongGuo/AD-NeRF and https://github.com/nerfstudio-project/nerfstudio); only the
harness is here. Compared, round by round so background load hits all sides alike:
  (a) one HeadNeRF training iteration as AD-NeRF's run_nerf.py train() runs it after its smoothing warm-up
      (their create_nerf, AudioNet, AudioAttNet, get_rays, render_dynamic_face, MSE on rgb + rgb0, backward,
      three Adam steps, lr decay; images are random tensors instead of imageio reads), with autograd
      anomaly detection off and, as shipped (their run_nerf_helpers.py turns it on at import), on;
      vs lipspace's NeRFRenderer.forward_backward on the same work: 2048 rays, 64 + 128 samples, 8 layers of
      128 or 256, a per-ray condition, one Adam step;
  (b) nerfstudio's HashEncoding(implementation="torch") vs lipspace's HashGrid, eager and compiled, same sizes,
      forward + backward (out.square().mean().backward()) on 2^18 points.
Ratios are peer time / lipspace time (> 1: lipspace faster). Absolute figures are this machine's only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_renderer import BenchConfig, LipspaceStep, OtherLoad, cpu_model, random_batch

ADNERF_URL = "https://github.com/YudongGuo/AD-NeRF"
NERFSTUDIO_URL = "https://github.com/nerfstudio-project/nerfstudio"
ADNERF_MODULES = ("run_nerf", "run_nerf_helpers", "load_audface")
# near/far of AD-NeRF's released Obama HeadNeRF config (timing does not depend on them)
ADNERF_NEAR_FAR = ("0.5679027318954468", "1.1679027318954467")


class PeerUnavailable(Exception):
    """A peer checkout or one of its import-time dependencies is missing; the message says how to get it."""


@dataclass
class Peer:
    name: str
    path: Path
    commit: str
    stubs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def checkout_commit(path: Path) -> str:
    """``git rev-parse HEAD`` of the checkout, or "unknown" (an archive without .git)."""
    if not (path / ".git").exists():
        return "unknown (no .git in the checkout)"
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git failed)"
    return out.stdout.strip() or "unknown (git failed)"


def missing_message(name: str, url: str, env: str, option: str, path: str | None) -> str:
    where = f"no {name} checkout at {path}" if path else f"no {name} checkout given"
    return (f"{where}: skipping {name}.\n"
            f"  get it with:  git clone {url}\n"
            f"  then pass {option} DIR or set {env}=DIR (make bench-peers ARGS=\"{option} DIR\")")


def _require_modules(peer: str, names: list[str]) -> None:
    lacking = [n for n in names if importlib.util.find_spec(n) is None]
    if lacking:
        raise PeerUnavailable(f"{peer}'s modules import {', '.join(lacking)}, not installed here: "
                              f"pip install -c constraints.txt {' '.join(lacking)}  (make install does this)")


def _fresh_import(root: Path, module: str, drop: tuple[str, ...]):
    """Import ``module`` with ``root`` first on sys.path, dropping earlier copies of ``drop`` (so two checkouts
    can be loaded one after the other in one process); sys.path is restored afterwards."""
    for name in list(sys.modules):
        if name in drop or name.split(".")[0] in drop:
            del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(root))


# ---------------------------------------------------------------------------------------------------------------
# AD-NeRF: their create_nerf / AudioNet / AudioAttNet / render_dynamic_face, one train() iteration
# ---------------------------------------------------------------------------------------------------------------
def load_adnerf(path: str | None) -> tuple[Peer, types.ModuleType, types.ModuleType]:
    head = Path(path or "", "NeRFs", "HeadNeRF")
    if not path or not (head / "run_nerf.py").is_file():
        raise PeerUnavailable(missing_message("AD-NeRF", ADNERF_URL, "ADNERF_DIR", "--adnerf", path))
    _require_modules("AD-NeRF", ["natsort", "configargparse", "imageio", "cv2", "tqdm"])
    anomaly_before = torch.is_anomaly_enabled()
    rn = _fresh_import(head, "run_nerf", ADNERF_MODULES)
    helpers = sys.modules["run_nerf_helpers"]
    peer = Peer("AD-NeRF", Path(path), checkout_commit(Path(path)))
    if torch.is_anomaly_enabled() and not anomaly_before:
        peer.notes.append("its run_nerf_helpers.py enables autograd anomaly detection at import: timed off and on")
    torch.autograd.set_detect_anomaly(anomaly_before)  # set per step from here on
    if getattr(rn, "device", torch.device("cpu")).type != "cpu":
        peer.notes.append(f"run_nerf.device was {rn.device}; set to cpu (this bench times CPUs)")
        rn.device = torch.device("cpu")
    return peer, rn, helpers


class AdnerfIteration:
    """One iteration of AD-NeRF's train() loop (the branch after nosmo_iters: AudioNet over an smo_size window of
    DeepSpeech features, AudioAttNet smoothing), on random images of H x W."""

    def __init__(self, rn, helpers, width: int, anomaly: bool, logdir: str, extra_args: tuple[str, ...] = (),
                 H: int = 450, W: int = 450):
        argv = ["--basedir", logdir, "--expname", "bench", "--no_reload", "--near", ADNERF_NEAR_FAR[0],
                "--far", ADNERF_NEAR_FAR[1], "--netwidth", str(width), "--netwidth_fine", str(width), *extra_args]
        config = Path(rn.__file__).parent / "configs" / "HeadNeRF.txt"
        if config.is_file():
            argv = ["--config", str(config), *argv]
        os.makedirs(os.path.join(logdir, "bench"), exist_ok=True)
        self.rn, self.h, self.anomaly = rn, helpers, anomaly
        self.args = args = rn.config_parser().parse_args(argv)
        with contextlib.redirect_stdout(open(os.devnull, "w")):  # "Found ckpts []", "Not ndc!"
            rk_train, _, _, _, self.optimizer, *_ = rn.create_nerf(args)
        rk_train.update({"near": args.near, "far": args.far})
        self.render_kwargs = rk_train
        self.aud_net = helpers.AudioNet(args.dim_aud, args.win_size)
        self.aud_att_net = helpers.AudioAttNet()
        adam = {"lr": args.lrate, "betas": (0.9, 0.999)}
        self.optimizer_aud = torch.optim.Adam(params=list(self.aud_net.parameters()), **adam)
        self.optimizer_aud_att = torch.optim.Adam(params=list(self.aud_att_net.parameters()), **adam)
        self.H, self.W = H, W
        self.focal, self.cx, self.cy = 1200.0, W / 2.0, H / 2.0
        self.pose = torch.eye(4)[:3, :4]
        g = torch.Generator().manual_seed(0)
        self.target = torch.rand(H, W, 3, generator=g)  # stands in for imageio.imread(images[img_i]) / 255
        self.bc_img = torch.rand(H, W, 3, generator=g)
        self.auds_win = torch.rand(args.smo_size, 16, 29, generator=g)  # DeepSpeech window [smo, 16, 29]
        self.global_step = 0
        self.last_prep_s = 0.0

    def step(self) -> float:
        rn, h, args = self.rn, self.h, self.args
        torch.autograd.set_detect_anomaly(self.anomaly)
        t0 = time.perf_counter()
        aud_smo = self.aud_att_net(self.aud_net(self.auds_win))
        rays_o, rays_d = h.get_rays(self.H, self.W, self.focal, self.pose, self.cx, self.cy)
        sel = torch.from_numpy(np.random.choice(self.H * self.W, size=[args.N_rand], replace=False))
        sy, sx = sel // self.W, sel % self.W
        batch_rays = torch.stack([rays_o[sy, sx], rays_d[sy, sx]], 0)
        target_s, bc_rgb = self.target[sy, sx], self.bc_img[sy, sx]
        self.last_prep_s = time.perf_counter() - t0
        rgb, _, _, _, extras = rn.render_dynamic_face(
            self.H, self.W, self.focal, self.cx, self.cy, chunk=args.chunk, rays=batch_rays, aud_para=aud_smo,
            bc_rgb=bc_rgb, verbose=False, retraw=True, **self.render_kwargs)
        for opt in (self.optimizer, self.optimizer_aud, self.optimizer_aud_att):
            opt.zero_grad()
        loss = h.img2mse(rgb, target_s)
        if "rgb0" in extras:
            loss = loss + h.img2mse(extras["rgb0"], target_s)
        loss.backward()
        for opt in (self.optimizer, self.optimizer_aud, self.optimizer_aud_att):
            opt.step()
        self.global_step += 1
        lr = args.lrate * (0.1 ** (self.global_step / (args.lrate_decay * 1000)))
        for opt, factor in ((self.optimizer, 1), (self.optimizer_aud, 1), (self.optimizer_aud_att, 5)):
            for group in opt.param_groups:
                group["lr"] = lr * factor
        torch.autograd.set_detect_anomaly(False)
        return float(loss.detach())


class LipspaceIteration:
    """lipspace's renderer training step (bench_renderer.LipspaceStep) on a fresh random batch per call."""

    def __init__(self, cfg: BenchConfig, compile: bool = False):
        self.cfg, self.stepper, self.seed = cfg, LipspaceStep(cfg, chunked=True, compile=compile), 0

    def step(self) -> float:
        self.seed += 1
        return self.stepper.step(random_batch(self.cfg, self.seed))


# ---------------------------------------------------------------------------------------------------------------
# nerfstudio: their field_components/encodings.py HashEncoding (implementation="torch")
# ---------------------------------------------------------------------------------------------------------------
def load_nerfstudio(path: str | None) -> tuple[Peer, type]:
    if not path or not Path(path, "nerfstudio", "field_components", "encodings.py").is_file():
        raise PeerUnavailable(missing_message("nerfstudio", NERFSTUDIO_URL, "NERFSTUDIO_DIR", "--nerfstudio", path))
    _require_modules("nerfstudio", ["jaxtyping", "rich"])
    peer = Peer("nerfstudio", Path(path), checkout_commit(Path(path)))
    if importlib.util.find_spec("viser") is None:
        # nerfstudio/utils/math.py imports data/scene_box.py, which imports viser.transforms (a 3-D viewer
        # package) at import time; HashEncoding never calls it. Empty modules stand in when viser is absent.
        viser, transforms = types.ModuleType("viser"), types.ModuleType("viser.transforms")
        viser.transforms = transforms
        sys.modules.setdefault("viser", viser)
        sys.modules.setdefault("viser.transforms", transforms)
        peer.stubs.append("viser.transforms (empty module; imported by nerfstudio/data/scene_box.py, "
                          "not used by HashEncoding)")
    enc = _fresh_import(Path(path), "nerfstudio.field_components.encodings", ("nerfstudio",))
    if not Path(enc.__file__).resolve().is_relative_to(Path(path).resolve()):
        raise PeerUnavailable(f"imported nerfstudio from {enc.__file__}, not from {path}")
    return peer, enc.HashEncoding


class EncodingStep:
    """enc(x).square().mean().backward(), grads cleared first (the timed op of nerfstudio-style encoding benches)."""

    def __init__(self, enc: torch.nn.Module, x: torch.Tensor):
        self.enc, self.x = enc, x

    def step(self) -> float:
        for p in self.enc.parameters():
            p.grad = None
        out = self.enc(self.x)
        loss = out.square().mean()
        loss.backward()
        return float(loss.detach())


# ---------------------------------------------------------------------------------------------------------------
# timing and report
# ---------------------------------------------------------------------------------------------------------------
def log_flush(*parts) -> None:
    print(*parts, flush=True)


def interleaved(runners: dict[str, object], rounds: int, warmup: int = 1, log=log_flush) -> tuple[dict, float | None]:
    """Seconds per step of each runner over ``rounds`` rounds (each round steps every runner once, in order)."""
    for name, runner in runners.items():
        for _ in range(warmup):
            t0 = time.perf_counter()
            runner.step()
            log(f"  warm-up {name}: {time.perf_counter() - t0:.2f} s")
    times: dict[str, list[float]] = {name: [] for name in runners}
    load = OtherLoad()
    for i in range(rounds):
        for name, runner in runners.items():
            t0 = time.perf_counter()
            runner.step()
            times[name].append(time.perf_counter() - t0)
        log(f"  round {i + 1}/{rounds}: " + ", ".join(f"{ts[-1]:.2f} s" for ts in times.values()))
    return times, load.cores()


def machine_line() -> str:
    model = cpu_model()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"Python {platform.python_version()}, {now}")


def print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def adnerf_section(rn, helpers, widths, rounds, anomaly_on, compile, logdir, adnerf_args=(), lip_cfg=None,
                   log=log_flush):
    """Rows of section (a) and the ratios {width: lipspace speed-up vs AD-NeRF anomaly off}."""
    rows, ratios = [], {}
    for width in widths:
        cfg = lip_cfg(width) if lip_cfg else BenchConfig(f"8x{width}", width, 8, 2048, 64, 128, 64)
        torch.manual_seed(0)
        np.random.seed(0)
        runners = {"AD-NeRF run_nerf.py (anomaly off)": AdnerfIteration(rn, helpers, width, False, logdir,
                                                                        adnerf_args)}
        if anomaly_on:
            runners["AD-NeRF run_nerf.py (as shipped: anomaly on)"] = AdnerfIteration(rn, helpers, width, True,
                                                                                      logdir, adnerf_args)
        runners["lipspace NeRFRenderer.forward_backward"] = LipspaceIteration(cfg)
        if compile:
            runners["lipspace forward_backward + torch.compile"] = LipspaceIteration(cfg, compile=True)
        log(f"[a] {cfg.n_layers}x{width}, {cfg.n_rays} rays, {cfg.n_coarse}+{cfg.n_fine} samples")
        times, others = interleaved(runners, rounds, log=log)
        base = statistics.median(times["AD-NeRF run_nerf.py (anomaly off)"])
        prep = runners["AD-NeRF run_nerf.py (anomaly off)"].last_prep_s
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append((f"{cfg.n_layers}x{width}", name, f"{med:.3f}", f"{min(ts):.3f}", f"{cfg.n_rays / med:.0f}",
                         f"{base / med:.2f}x", "?" if others is None else f"{others:.2f}"))
            if name == "lipspace NeRFRenderer.forward_backward":
                ratios[width] = base / med
        prep_note = f"  (of AD-NeRF's iteration: audio nets + get_rays + ray pick {prep * 1e3:.0f} ms)"
        rows.append((f"{cfg.n_layers}x{width}", prep_note, "", "", "", "", ""))
    return rows, ratios


def hash_section(hash_cls, log2_points, rounds, compile, log=log_flush):
    torch.manual_seed(0)
    from lipspace.renderers.hashgrid import HashGrid

    x = torch.rand(2 ** log2_points, 3)
    sizes = {"num_levels": 16, "min_res": 16, "max_res": 1024, "log2_hashmap_size": 19, "features_per_level": 2}
    runners = {"nerfstudio HashEncoding(implementation='torch')": EncodingStep(hash_cls(**sizes,
                                                                                        implementation="torch"), x)}
    lip = {"in_dim": 3, "n_levels": 16, "n_features": 2, "log2_table": 19, "base_res": 16, "finest_res": 1024}
    runners["lipspace HashGrid eager"] = EncodingStep(HashGrid(**lip), x)
    if compile:
        runners["lipspace HashGrid compiled"] = EncodingStep(HashGrid(**lip, compile=True), x)
    log(f"[b] hash encoding L16 F2 T2^19 res 16..1024, 2^{log2_points} points, fwd+bwd")
    times, others = interleaved(runners, rounds, log=log)
    base = statistics.median(times["nerfstudio HashEncoding(implementation='torch')"])
    rows, ratios = [], {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(("hash", name, f"{med:.3f}", f"{min(ts):.3f}", f"{x.shape[0] / med / 1e3:.1f} k",
                     f"{base / med:.2f}x", "?" if others is None else f"{others:.2f}"))
        ratios[name] = base / med
    return rows, ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adnerf", default=os.environ.get("ADNERF_DIR"), help="AD-NeRF checkout (env ADNERF_DIR)")
    ap.add_argument("--nerfstudio", default=os.environ.get("NERFSTUDIO_DIR"),
                    help="nerfstudio checkout (env NERFSTUDIO_DIR)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads, the same for every side")
    ap.add_argument("--quick", action="store_true", help="2 rounds, 8x128 only, no anomaly-on AD-NeRF")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5, quick 2)")
    ap.add_argument("--widths", default=None, help="MLP widths, comma list (default 128,256; quick 128)")
    ap.add_argument("--parts", default="mlp,hash", help="what to time: mlp (vs AD-NeRF), hash (vs nerfstudio)")
    ap.add_argument("--anomaly-on", action=argparse.BooleanOptionalAction, default=None,
                    help="also time AD-NeRF as shipped, anomaly detection on (default: yes, except with --quick)")
    ap.add_argument("--log2-points", type=int, default=18, help="hash encoding batch 2^N points")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="skip lipspace's compiled hash encoding")
    ap.add_argument("--compile-mlp", action="store_true", help="also time lipspace's MLP renderer under torch.compile")
    args = ap.parse_args(argv)
    # AD-NeRF's get_rays calls torch.meshgrid without indexing=: torch warns once per process; not our call to fix
    warnings.filterwarnings("ignore", message=r"torch.meshgrid: in an upcoming release")
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (2 if args.quick else 5)
    widths = [int(w) for w in (args.widths or ("128" if args.quick else "128,256")).split(",")]

    parts = {p.strip() for p in args.parts.split(",")}
    anomaly_on = (not args.quick) if args.anomaly_on is None else args.anomaly_on
    peers, skipped = [], []
    adnerf = nerfstudio = None
    if "mlp" in parts:
        try:
            p, rn, helpers = load_adnerf(args.adnerf)
            peers.append(p)
            adnerf = (rn, helpers)
        except PeerUnavailable as e:
            skipped.append(str(e))
    if "hash" in parts:
        try:
            p, hash_cls = load_nerfstudio(args.nerfstudio)
            peers.append(p)
            nerfstudio = hash_cls
        except PeerUnavailable as e:
            skipped.append(str(e))
    for msg in skipped:
        print(msg, file=sys.stderr)
    if not peers:
        print("no peer checkout available: nothing to compare against (lipspace alone proves nothing).",
              file=sys.stderr)
        return 2

    print(f"machine: {machine_line()}")
    for p in peers:
        print(f"{p.name}: {p.path} @ {p.commit}; stubbed: {', '.join(p.stubs) or 'nothing'}")
        for note in p.notes:
            print(f"  note: {note}")
    header = ("config", "implementation", "s/step med", "s/step best", "per s", "peer/this", "other CPU")
    rows, summary = [], []
    if adnerf:
        with tempfile.TemporaryDirectory(prefix="adnerf_bench_") as logdir:
            r, ratios = adnerf_section(*adnerf, widths, rounds, anomaly_on, args.compile_mlp, logdir)
        rows += r
        summary += [f"MLP training 8x{w}: lipspace {v:.2f}x AD-NeRF's own code (anomaly off; goal >= 3x)"
                    for w, v in ratios.items()]
    if nerfstudio:
        r, ratios = hash_section(nerfstudio, args.log2_points, rounds, args.compile)
        rows += r
        summary += [f"hash encoding: {k} {v:.2f}x nerfstudio's torch HashEncoding"
                    + (" (goal >= 8x)" if "compiled" in k else "")
                    for k, v in ratios.items() if k.startswith("lipspace")]
    print()
    print_table(rows, header)
    print(f"\nAbsolute times are this machine's ({machine_line()}); 'per s' = rays/s (MLP) or points/s (hash), "
          f"median of {rounds} interleaved rounds.\n'peer/this' = the peer's median time / this row's (> 1: faster "
          "than the peer). 'other CPU' = cores other processes used meanwhile; above ~0.1 figures are depressed.")
    print("\n".join(["", *summary]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
