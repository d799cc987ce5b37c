"""Wall time of the demo (synthesis, training, eval + render), from scratch in a temporary directory.

Prints figures; asserts nothing. `make bench` runs it after the renderer benchmark.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for the demo")
    args = ap.parse_args()
    import torch

    from lipspace.demo.run import run_compare

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LIPSPACE_DATA"] = os.path.join(tmp, "data")  # no cached dataset: measure synthesis too
        t = time.perf_counter()
        res = run_compare(args.overrides, output_dir=os.path.join(tmp, "demo"))
        wall = time.perf_counter() - t
    print("\n== demo wall time ==")
    print(f"threads={torch.get_num_threads()} cpus={os.cpu_count()}")
    for k, v in res["timings"].items():
        print(f"{k:<12} {v:8.1f} s")
    print(f"{'wall':<12} {wall:8.1f} s  (goal: <= 600 s on 2 CPU cores)")


if __name__ == "__main__":
    main()
