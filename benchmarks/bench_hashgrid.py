"""Hash-encoding throughput, forward + backward (issue 5's figure): 2^18 points, L=16, F=2, T=2^19, 3-D, on this
machine's CPU threads (or a GPU with --device cuda). Compares, in one run, lipspace's HashGrid with a faithful
re-implementation of nerfstudio's ``HashEncoding(implementation="torch")`` forward (nerfstudio is not installed
here; its code: per-corner hash of ceil/floor coordinates with int64 primes, 8 gathers, 7 lerps), and the
tri-plane (three 2-D grids, SyncTalk sizes L=14, F=1, T=2^16) for reference. Prints points/s; asserts nothing.
The re-implementation is for quick checks without a checkout; ratios against nerfstudio's own HashEncoding come from
benchmarks/bench_peers.py (`make bench-peers`), which imports their encodings.py and times it in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch


class NerfstudioTorchHash(torch.nn.Module):
    """nerfstudio.field_components.encodings.HashEncoding.pytorch_fwd, re-implemented for the comparison."""

    def __init__(self, num_levels=16, min_res=16, max_res=2048, log2_hashmap_size=19, features_per_level=2):
        super().__init__()
        self.hash_table_size = 2 ** log2_hashmap_size
        growth = torch.exp((torch.log(torch.tensor(float(max_res))) - torch.log(torch.tensor(float(min_res))))
                           / (num_levels - 1))
        self.register_buffer("scalings", torch.floor(min_res * growth ** torch.arange(num_levels)))
        self.register_buffer("hash_offset", torch.arange(num_levels) * self.hash_table_size)
        self.hash_table = torch.nn.Parameter(
            (torch.rand(self.hash_table_size * num_levels, features_per_level) * 2 - 1) * 1e-3)
        self.register_buffer("primes", torch.tensor([1, 2654435761, 805459861]))

    def hash_fn(self, x):
        x = x * self.primes
        h = torch.bitwise_xor(torch.bitwise_xor(x[..., 0], x[..., 1]), x[..., 2])
        h %= self.hash_table_size
        return h + self.hash_offset

    def forward(self, x):
        x = x[..., None, :]
        scaled = x * self.scalings.view(-1, 1)
        c = torch.ceil(scaled).type(torch.int32)
        f = torch.floor(scaled).type(torch.int32)
        o = scaled - f
        corners = [torch.cat([a[..., 0:1], b[..., 1:2], e[..., 2:3]], dim=-1)
                   for a, b, e in [(c, c, c), (c, f, c), (f, f, c), (f, c, c), (c, c, f), (c, f, f), (f, f, f),
                                   (f, c, f)]]
        fs = [self.hash_table[self.hash_fn(k)] for k in corners]
        f03 = fs[0] * o[..., 0:1] + fs[3] * (1 - o[..., 0:1])
        f12 = fs[1] * o[..., 0:1] + fs[2] * (1 - o[..., 0:1])
        f56 = fs[5] * o[..., 0:1] + fs[6] * (1 - o[..., 0:1])
        f47 = fs[4] * o[..., 0:1] + fs[7] * (1 - o[..., 0:1])
        f0312 = f03 * o[..., 1:2] + f12 * (1 - o[..., 1:2])
        f4756 = f47 * o[..., 1:2] + f56 * (1 - o[..., 1:2])
        out = f0312 * o[..., 2:3] + f4756 * (1 - o[..., 2:3])
        return torch.flatten(out, start_dim=-2, end_dim=-1)


def throughput(enc, x, repeats: int, device) -> float:
    def step():
        enc.zero_grad(set_to_none=True)
        enc(x).square().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        step()
    return repeats * x.shape[0] / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=2 ** 18)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from lipspace.renderers.hashgrid import HashGrid, TriPlaneHash

    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.points, 3, device=device)
    print(f"== hash encoding fwd+bwd, {args.points} points, device={device}, threads={torch.get_num_threads()}")
    ref = throughput(NerfstudioTorchHash().to(device), x, args.repeats, device)
    print(f"nerfstudio-style torch (re-implemented)  L=16 F=2 T=2^19 : {ref / 1e3:9.1f} k points/s")
    ours = throughput(HashGrid(3, 16, 2, 19, 16, 2048).to(device), x, args.repeats, device)
    print(f"lipspace HashGrid                        L=16 F=2 T=2^19 : {ours / 1e3:9.1f} k points/s "
          f"({ours / ref:.2f}x; issue goal: >= 210 k points/s on 2 CPU cores)")
    fast = throughput(HashGrid(3, 16, 2, 19, 16, 2048, compile=True).to(device), x, args.repeats, device)
    print(f"lipspace HashGrid, compiled (fused)      L=16 F=2 T=2^19 : {fast / 1e3:9.1f} k points/s "
          f"({fast / ref:.2f}x; first call compiles, excluded)")
    tri = throughput(TriPlaneHash(14, 1, 16, 16, 512).to(device), x, args.repeats, device)
    print(f"lipspace TriPlaneHash 3 planes           L=14 F=1 T=2^16 : {tri / 1e3:9.1f} k points/s")
    tri_fast = throughput(TriPlaneHash(14, 1, 16, 16, 512, compile=True).to(device), x, args.repeats, device)
    print(f"lipspace TriPlaneHash, compiled (fused)  L=14 F=1 T=2^16 : {tri_fast / 1e3:9.1f} k points/s "
          f"({tri_fast / tri:.2f}x the eager tri-plane)")


if __name__ == "__main__":
    main()
