"""A grid fitted on the model itself against the default grid, on held-out starts of freshly drawn problems.

    python benchmarks/fitted_heldout.py [--n 4] [--nfe 10] [--pilot 64] [--starts 256]

Problems: ``eval.problems.sample_problems(n, seed=2, max_dim=64)`` (protocol 5's fresh sample, capped at 64-D).
For each sampler and process: the default grid (``default_schedule``); GITS (``samplers.optimize_schedule``, the
grid ``scorediff fit-schedule`` caches); "pilot pick", the one of the two with the lower error on the pilot against
a 128-step DPM-Solver++(3M) reference (a check on the model itself, no truth needed); and
``schedule_fit.refine_schedule`` started from the pilot pick (the sampler's own end-to-end error on the pilot). Fits use ``--pilot``
prior draws (seed 10); errors are measured on ``--starts`` other draws (seed 0) against the exact probability-flow
ODE (``eval.bench.pf_ode_reference``). Each cell: RMS error, and its ratio to the default grid's.
"""

from __future__ import annotations

import argparse
import time

import torch

import scorediff.processes as P
from scorediff import schedules
from scorediff.eval.bench import pf_ode_reference
from scorediff.eval.problems import sample_problems
from scorediff.samplers import SAMPLERS, default_schedule, optimize_schedule
from scorediff.schedule_fit import refine_schedule

SAMPLER_SET = ("ddim", "heun", "dpm_solver_pp_2m", "unipc_bh2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--nfe", type=int, default=10)
    ap.add_argument("--pilot", type=int, default=64)
    ap.add_argument("--starts", type=int, default=256)
    ap.add_argument("--processes", default="vp-discrete,edm")
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"NFE {args.nfe}; each cell: RMS error on {args.starts} held-out starts (ratio to the default grid)\n")
    print("| problem | process | sampler | default grid | GITS | pilot pick | refined |")
    print("|---|---|---|---:|---:|---:|---:|")
    ratios = {"GITS": [], "pilot pick": [], "refined": []}
    for pr in sample_problems(args.n, seed=2, max_dim=64):
        mix = pr.mixture
        for pname in args.processes.split(","):
            proc = P.make(pname)
            d = mix.denoiser(proc)
            shape = (args.starts, *mix.event_shape)
            x = proc.prior_sample(shape, torch.Generator().manual_seed(0), dtype=torch.float64)
            ref = pf_ode_reference(mix, proc, x, proc.t_max, rtol=1e-8, t_end=proc.t_min)[0]
            xp = proc.prior_sample((args.pilot, *mix.event_shape), torch.Generator().manual_seed(10),
                                   dtype=torch.float64)
            fine = schedules.make("logsnr", 128, proc)
            with torch.no_grad():
                target = SAMPLERS["dpm_solver_pp_3m"](d, proc, xp, fine)
            for name in SAMPLER_SET:
                fn = SAMPLERS[name]
                steps = max(2, round(args.nfe / fn.info.nfe_per_step))
                grids = {"default": schedules.make(default_schedule(name, proc), steps, proc),
                         "GITS": optimize_schedule(d, proc, steps, xp)}
                with torch.no_grad():  # the pilot's own check: which of the two is better on the model itself
                    pe = {k: float((fn(d, proc, xp, ts) - target).reshape(args.pilot, -1).pow(2).sum(1).mean())
                          for k, ts in grids.items()}
                grids["pilot pick"] = grids[min(pe, key=pe.get)]
                grids["refined"] = refine_schedule(fn, d, proc, grids["pilot pick"], xp, target)[0]
                errs = {}
                for k, ts in grids.items():
                    with torch.no_grad():
                        y = fn(d, proc, x, ts)
                    errs[k] = float((y - ref).reshape(args.starts, -1).pow(2).sum(1).mean().sqrt())
                cells = [f"{errs['default']:.4f}"]
                for k in ("GITS", "pilot pick", "refined"):
                    r = errs[k] / errs["default"]
                    ratios[k].append(r)
                    cells.append(f"{errs[k]:.4f} ({r:.2f})")
                print(f"| {pr.name} | {pname} | {name} | " + " | ".join(cells) + " |", flush=True)
    for k, v in ratios.items():
        t = torch.tensor(v)
        print(f"\n{k}: ratio to the default grid, median {t.median():.2f}, worst {t.max():.2f}, "
              f"better in {int((t < 1).sum())} of {t.numel()}")
    print(f"\nTotal time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
