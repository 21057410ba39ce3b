"""Benchmark: CPU cost of ``scorediff sample`` at large ``--num`` against the batch size.

Draws ``--num`` samples with Heun (``--steps`` steps) from an untrained network of a preset (speed does not
depend on the weights) in batches of the given sizes, and reports wall time and the process's user and
system CPU time (``getrusage``). On a loaded machine wall time is inflated by waiting for a core; CPU
time is the fairer comparison.

    python benchmarks/sample_throughput.py [--preset unet-28] [--num 500] [--steps 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="unet-28")
    ap.add_argument("--size", type=int, default=None, help="image side (default: 28 for unet-28, else 8)")
    ap.add_argument("--num", type=int, default=500)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", default="500,128,64,32", help="comma-separated batch sizes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from scorediff import nets, parameterizations, processes, sample
    from scorediff.generate import auto_batch
    from scorediff.parameterizations import NetDenoiser

    size = args.size or (28 if args.preset == "unet-28" else 8)
    shape = (1, size, size)
    torch.manual_seed(0)
    net = nets.make(args.preset, shape=shape).eval()
    process = processes.make("edm")
    den = NetDenoiser(net, process, parameterizations.make("edm")).requires_grad_(False)
    sample(den, process, (8, *shape), sampler="heun", steps=2, seed=0)  # warm-up: first-call allocations
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        g = torch.Generator().manual_seed(0)
        for start in range(0, args.num, batch):
            n = min(batch, args.num - start)
            sample(den, process, (n, *shape), sampler="heun", steps=args.steps, generator=g)
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
        rows.append({"batch": batch, "auto": batch == auto_batch(shape), "wall_s": round(wall, 2),
                     "user_s": round(user, 2), "sys_s": round(system, 2),
                     "cpu_ms_per_sample_per_nfe": round(1e3 * (user + system) / args.num / (2 * args.steps - 1), 3)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"preset": args.preset, "shape": shape, "num": args.num, "sampler": f"heun x {args.steps}",
                      "threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
