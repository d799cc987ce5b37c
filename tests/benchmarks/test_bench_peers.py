"""benchmarks/bench_peers.py: missing checkouts give a message (no traceback); each side runs one tiny iteration.

The peers are faked by small trees with the names the bench imports (run_nerf.py, run_nerf_helpers.py;
nerfstudio/field_components/encodings.py); the real checkouts are used when ADNERF_DIR / NERFSTUDIO_DIR point at
them (skipped otherwise). Timings are printed by the bench, never asserted here.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_peers  # noqa: E402 (benchmarks/ is not a package: importable once on sys.path)

FAKE_HELPERS = """
import torch
from torch import nn
torch.autograd.set_detect_anomaly(True)  # as AD-NeRF's run_nerf_helpers.py does at import


class AudioNet(nn.Module):
    def __init__(self, dim_aud=64, win_size=16):
        super().__init__()
        self.lin = nn.Linear(16 * 29, dim_aud)

    def forward(self, x):
        return self.lin(x.reshape(x.shape[0], -1))


class AudioAttNet(nn.Module):
    def __init__(self, dim_aud=64, seq_len=8):
        super().__init__()
        self.att = nn.Linear(dim_aud, 1)

    def forward(self, x):
        return (torch.softmax(self.att(x), 0) * x).sum(0)


def get_rays(H, W, focal, c2w, cx, cy):
    i, j = torch.meshgrid(torch.arange(W, dtype=torch.float32), torch.arange(H, dtype=torch.float32), indexing="xy")
    dirs = torch.stack([(i - cx) / focal, -(j - cy) / focal, -torch.ones_like(i)], -1)
    rays_d = dirs @ c2w[:3, :3].T
    return c2w[:3, -1].expand(rays_d.shape), rays_d


img2mse = lambda x, y: torch.mean((x - y) ** 2)
mse2psnr = lambda x: -10.0 * torch.log10(x)
"""

FAKE_RUN_NERF = """
import argparse
import torch
from torch import nn
from run_nerf_helpers import *

device = torch.device("cpu")


def config_parser():
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    for name in ("basedir", "expname"):
        p.add_argument("--" + name)
    p.add_argument("--no_reload", action="store_true")
    for name, default in (("near", 0.3), ("far", 0.9), ("lrate", 5e-4)):
        p.add_argument("--" + name, type=float, default=default)
    for name, default in (("netwidth", 256), ("netwidth_fine", 256), ("netdepth", 8), ("netdepth_fine", 8),
                          ("N_rand", 16),
                          ("N_samples", 4), ("N_importance", 4), ("chunk", 1024), ("lrate_decay", 250),
                          ("dim_aud", 64), ("win_size", 16), ("smo_size", 8)):
        p.add_argument("--" + name, type=int, default=default)
    return p


def create_nerf(args):
    model, fine = nn.Linear(3 + args.dim_aud, 4), nn.Linear(3 + args.dim_aud, 4)
    rk = {"network_fn": model, "network_fine": fine, "N_samples": args.N_samples}
    opt = torch.optim.Adam(list(model.parameters()) + list(fine.parameters()), lr=args.lrate)
    print("Found ckpts []")
    return rk, dict(rk), 0, None, opt, None, None, None, None, None


def render_dynamic_face(H, W, focal, cx, cy, chunk, rays, bc_rgb, aud_para, near, far, network_fn, network_fine,
                        N_samples, **kwargs):
    rays_o, rays_d = rays
    t = torch.linspace(near, far, N_samples)
    pts = rays_o[:, None] + rays_d[:, None] * t[:, None]
    x = torch.cat([pts, aud_para.expand(*pts.shape[:2], -1)], -1)
    rgb0 = torch.sigmoid(network_fn(x)[..., :3]).mean(1)
    rgb = torch.sigmoid(network_fine(x)[..., :3]).mean(1)
    return [rgb, None, None, None, {"rgb0": rgb0}]
"""

FAKE_ENCODINGS = """
import torch
import viser.transforms  # noqa: F401  (nerfstudio reaches it through utils/math.py -> data/scene_box.py)
from torch import nn


class HashEncoding(nn.Module):
    def __init__(self, num_levels=16, min_res=16, max_res=1024, log2_hashmap_size=19, features_per_level=2,
                 implementation="tcnn"):
        super().__init__()
        assert implementation == "torch"
        self.size = 2 ** log2_hashmap_size
        self.scalings = torch.tensor([float(min_res + (max_res - min_res) * i / max(num_levels - 1, 1))
                                      for i in range(num_levels)])
        self.hash_table = nn.Parameter(torch.rand(self.size * num_levels, features_per_level) * 2e-4 - 1e-4)

    def forward(self, x):
        c = (x[..., None, :] * self.scalings[:, None]).long()
        h = (c[..., 0] ^ (c[..., 1] * 2654435761) ^ (c[..., 2] * 805459861)) % self.size
        h = h + torch.arange(len(self.scalings)) * self.size
        return self.hash_table[h].flatten(-2)
"""


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def fake_adnerf(tmp_path):
    return _write(tmp_path / "AD-NeRF", {"NeRFs/HeadNeRF/run_nerf.py": FAKE_RUN_NERF,
                                         "NeRFs/HeadNeRF/run_nerf_helpers.py": FAKE_HELPERS})


@pytest.fixture
def fake_nerfstudio(tmp_path):
    return _write(tmp_path / "nerfstudio", {"nerfstudio/__init__.py": "", "nerfstudio/field_components/__init__.py": "",
                                            "nerfstudio/field_components/encodings.py": FAKE_ENCODINGS})


@pytest.fixture(autouse=True)
def _isolate():
    """Peer modules, the viser stub and the anomaly flag must not leak into other tests (or between fake/real)."""
    anomaly, threads = torch.is_anomaly_enabled(), torch.get_num_threads()
    yield
    for name in list(sys.modules):
        if name.split(".")[0] in (*bench_peers.ADNERF_MODULES, "nerfstudio") or (
                name.split(".")[0] == "viser" and getattr(sys.modules[name], "__file__", None) is None):
            del sys.modules[name]
    torch.autograd.set_detect_anomaly(anomaly)
    torch.set_num_threads(threads)


def _tiny_mlp_section(adnerf_dir: str, logdir: str, widths=(16,)):
    peer, rn, helpers = bench_peers.load_adnerf(adnerf_dir)
    tiny = ("--N_rand", "32", "--N_samples", "8", "--N_importance", "8", "--netdepth", "2", "--netdepth_fine", "2")
    rows, ratios = bench_peers.adnerf_section(
        rn, helpers, list(widths), rounds=1, anomaly_on=True, compile=False, logdir=logdir, adnerf_args=tiny,
        lip_cfg=lambda w: bench_peers.BenchConfig("tiny", w, 2, 32, 8, 8, 64), log=lambda *a: None)
    return peer, rows, ratios


def test_missing_checkouts_print_how_to_get_them_and_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ADNERF_DIR", "NERFSTUDIO_DIR")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_peers.py"), "--adnerf",
                           str(tmp_path / "nothing")], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "git clone https://github.com/YudongGuo/AD-NeRF" in proc.stderr
    assert "git clone https://github.com/nerfstudio-project/nerfstudio" in proc.stderr
    assert "ADNERF_DIR" in proc.stderr and "NERFSTUDIO_DIR" in proc.stderr
    assert f"no AD-NeRF checkout at {tmp_path / 'nothing'}" in proc.stderr


def test_missing_python_dependency_is_a_message(fake_nerfstudio, monkeypatch):
    real = bench_peers.importlib.util.find_spec
    monkeypatch.setattr(bench_peers.importlib.util, "find_spec",
                        lambda name, *a: None if name == "jaxtyping" else real(name, *a))
    with pytest.raises(bench_peers.PeerUnavailable, match="pip install -c constraints.txt jaxtyping"):
        bench_peers.load_nerfstudio(str(fake_nerfstudio))


def test_fake_adnerf_and_lipspace_each_run_an_iteration(fake_adnerf, tmp_path):
    peer, rows, ratios = _tiny_mlp_section(str(fake_adnerf), str(tmp_path / "logs"))
    assert peer.commit.startswith("unknown") and peer.stubs == []
    assert any("anomaly detection" in n for n in peer.notes)
    assert not torch.is_anomaly_enabled()  # the import's global switch does not leak into lipspace's steps
    assert set(ratios) == {16} and math.isfinite(ratios[16]) and ratios[16] > 0
    names = [r[1] for r in rows]
    assert "AD-NeRF run_nerf.py (as shipped: anomaly on)" in names and "lipspace NeRFRenderer.forward_backward" in names


def test_fake_nerfstudio_hash_section_through_main(fake_nerfstudio, capsys, monkeypatch):
    monkeypatch.delenv("ADNERF_DIR", raising=False)
    rc = bench_peers.main(["--nerfstudio", str(fake_nerfstudio), "--rounds", "1", "--log2-points", "8",
                           "--no-compile", "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "skipping AD-NeRF" in err
    assert "stubbed: viser.transforms" in out and "machine: " in out
    line = next(ln for ln in out.splitlines() if ln.startswith("hash encoding: lipspace HashGrid eager"))
    ratio = float(re.search(r"eager ([0-9.]+)x nerfstudio", line).group(1))
    assert math.isfinite(ratio) and ratio > 0


def test_git_checkout_reports_its_commit(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "f").write_text("x")
    subprocess.run(git + ["add", "f"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "c"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert bench_peers.checkout_commit(repo) == head


@pytest.mark.skipif(not os.environ.get("ADNERF_DIR"), reason="set ADNERF_DIR to an AD-NeRF checkout")
def test_real_adnerf_tiny_iteration(tmp_path):
    peer, _rows, ratios = _tiny_mlp_section(os.environ["ADNERF_DIR"], str(tmp_path / "logs"))
    assert peer.stubs == [] and math.isfinite(ratios[16]) and ratios[16] > 0


@pytest.mark.skipif(not os.environ.get("NERFSTUDIO_DIR"), reason="set NERFSTUDIO_DIR to a nerfstudio checkout")
def test_real_nerfstudio_hash_section(tmp_path):
    _peer, hash_cls = bench_peers.load_nerfstudio(os.environ["NERFSTUDIO_DIR"])
    _rows, ratios = bench_peers.hash_section(hash_cls, log2_points=8, rounds=1, compile=False, log=lambda *a: None)
    assert hash_cls.__module__ == "nerfstudio.field_components.encodings"
    assert all(math.isfinite(v) and v > 0 for v in ratios.values())
