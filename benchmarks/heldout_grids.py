"""Protocol 5's fixed held-out check: issue 28's 64-D smooth-field mixture, each default against its best grid.

    python benchmarks/heldout_grids.py [--starts 512] [--nfe 10,20]

``image64`` (benchmarks/defaults.py; never part of protocol 5's samples), exact denoiser, float64, the same starts
for every grid; error: RMS distance to the exact probability-flow ODE solution at the grid's end
(``eval.bench.pf_ode_reference``), as in protocol 5. Each cell: the default's error ratio to the best of the six
candidate grids, for protocol 2c's default and for protocol 5's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from defaults import image64  # noqa: E402
from defaults_protocol5 import CANDIDATES, PROCESS_SET, PROTOCOL_2C, SAMPLER_SET, case_errors  # noqa: E402

import scorediff.processes as P  # noqa: E402
from scorediff.samplers import default_schedule  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--starts", type=int, default=512)
    ap.add_argument("--nfe", default="10,20")
    args = ap.parse_args()
    budgets = tuple(int(b) for b in args.nfe.split(","))
    t0 = time.perf_counter()
    mix = image64()
    print(f"image64, {args.starts} starts; each cell: default's RMS error / best grid's (its name), ratio\n")
    print("| sampler | process | NFE | protocol 2c default | protocol 5c default (current) | best grid |")
    print("|---|---|---:|---|---|---|")
    far = {"2c": 0, "5": 0}
    for pname in PROCESS_SET:
        proc = P.make(pname)
        errs = case_errors(mix, proc, args.starts, SAMPLER_SET, budgets)
        for s in SAMPLER_SET:
            for b in budgets:
                best = min(CANDIDATES, key=lambda g: errs[(s, g, b)])
                e_best = errs[(s, best, b)]
                old, new = PROTOCOL_2C[(s, pname)], default_schedule(s, proc)
                r_old, r_new = errs[(s, old, b)] / e_best, errs[(s, new, b)] / e_best
                far["2c"] += r_old > 1.3
                far["5"] += r_new > 1.3
                print(f"| {s} | {pname} | {b} | {old} {r_old:.2f} | {new} {r_new:.2f} | {best} {e_best:.4f} |",
                      flush=True)
    n = len(PROCESS_SET) * len(SAMPLER_SET) * len(budgets)
    print(f"\nDefaults more than 1.3x from the best grid: protocol 2c {far['2c']} of {n}, protocol 5c {far['5']} of {n}")
    print(f"\nTotal time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
