"""Protocol 5: default grids chosen on a generated distribution of problems (docs/results/defaults-protocol-5.md).

    python benchmarks/defaults_protocol5.py [--n 10] [--max-dim 256] [--starts 256] [--cache FILE]

Draws a selection sample (``scorediff.eval.problems.sample_problems(n, seed=1)``) and, after the choice, a
fresh sample (seed 2). On each problem and process, every candidate grid of every sampler named is measured at
each budget: RMS distance of the samples to the exact probability-flow ODE solution from the same starts at the
grid's end t_min (``eval.bench.pf_ode_reference``). The score of a candidate is its 95th percentile (and worst)
ratio to the per-case best; the rule and its constants are the protocol's. Prints the selection table, the
fresh-sample generalisation table and the cells that change ``PROCESS_DEFAULTS``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import scorediff.processes as P
from scorediff import schedules
from scorediff.eval.bench import pf_ode_reference
from scorediff.eval.problems import sample_problems
from scorediff.samplers import SAMPLERS, default_schedule
from scorediff.samplers._defaults import process_key

CANDIDATES = ("uniform", "logsnr", "karras", "logsnr_cosine", "quadratic", "power")
SAMPLER_SET = ("ddim", "heun", "dpm_solver_pp_2m", "unipc_bh2")  # issue 28's four
PROCESS_SET = ("vp-discrete", "edm", "ve")  # issue 28's three
BUDGETS = (10, 20)
KEEP_WITHIN = 1.10  # the current default stays if its 95th-percentile ratio is within 10% of the best one's
QUANTILE = 0.95
# protocol 2c's grids for these cells (the defaults before protocol 5): protocol 5c's baseline (``--baseline 2c``)
PROTOCOL_2C = {
    ("ddim", "vp-discrete"): "quadratic", ("ddim", "edm"): "logsnr_cosine", ("ddim", "ve"): "logsnr_cosine",
    ("heun", "vp-discrete"): "power", ("heun", "edm"): "logsnr", ("heun", "ve"): "uniform",
    ("dpm_solver_pp_2m", "vp-discrete"): "quadratic", ("dpm_solver_pp_2m", "edm"): "logsnr_cosine",
    ("dpm_solver_pp_2m", "ve"): "logsnr_cosine", ("unipc_bh2", "vp-discrete"): "quadratic",
    ("unipc_bh2", "edm"): "logsnr_cosine", ("unipc_bh2", "ve"): "logsnr_cosine",
}


def case_errors(mix, proc, n: int, samplers, budgets) -> dict[tuple[str, str, int], float]:
    """error[(sampler, grid, nfe)] for one problem on one process (same starts for every grid)."""
    d = mix.denoiser(proc)
    x = proc.prior_sample((n, *mix.event_shape), torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = pf_ode_reference(mix, proc, x, proc.t_max, rtol=1e-8, t_end=proc.t_min)[0]
    out = {}
    for name in samplers:
        fn = SAMPLERS[name]
        for nfe in budgets:
            steps = max(2, round(nfe / fn.info.nfe_per_step))
            for grid in CANDIDATES:
                try:
                    y = fn(d, proc, x, schedules.make(grid, steps, proc))
                    err = float(((y - ref) ** 2).reshape(n, -1).sum(1).mean().sqrt())
                    err = err if math.isfinite(err) else math.inf
                except ValueError:
                    err = math.inf
                out[(name, grid, nfe)] = err
    return out


def measure(problems, n: int, samplers, processes, budgets, cache: dict) -> dict:
    """table[(sampler, process, problem seed, nfe, grid)] = error; cached by key in ``cache``."""
    table = {}
    for pr in problems:
        for pname in processes:
            key = f"{pr.seed}|{pname}|{n}"
            if key not in cache:
                t0 = time.perf_counter()
                errs = case_errors(pr.mixture, P.make(pname), n, samplers, budgets)
                cache[key] = {f"{s}|{g}|{b}": e for (s, g, b), e in errs.items()}
                print(f"  {pr.name} on {pname}: {time.perf_counter() - t0:.1f} s", flush=True)
            for k, e in cache[key].items():
                s, g, b = k.split("|")
                table[(s, pname, pr.seed, int(b), g)] = e
    return table


def ratios(table: dict, sampler: str, process: str) -> dict[str, list[float]]:
    """Each candidate's ratio to the per-case best, over the cases (problem, budget) of one sampler and process."""
    cases = sorted({(seed, b) for (s, p, seed, b, _) in table if s == sampler and p == process})
    out: dict[str, list[float]] = {g: [] for g in CANDIDATES}
    for seed, b in cases:
        errs = {g: table[(sampler, process, seed, b, g)] for g in CANDIDATES}
        best = min(errs.values())
        for g, e in errs.items():
            out[g].append(e / best if best > 0 else (1.0 if e == 0 else math.inf))
    return out


def q(v: list[float], level: float = QUANTILE) -> float:
    t = torch.tensor(v, dtype=torch.float64)
    if torch.isinf(t).any():
        k = math.ceil(level * len(v)) - 1
        return float(t.sort().values[k])
    return float(torch.quantile(t, level))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10, help="problems per sample seed")
    ap.add_argument("--max-dim", type=int, default=256)
    ap.add_argument("--starts", type=int, default=256)
    ap.add_argument("--samplers", default=",".join(SAMPLER_SET))
    ap.add_argument("--processes", default=",".join(PROCESS_SET))
    ap.add_argument("--cache", default=None, help="JSON file of measured errors (read and extended)")
    ap.add_argument("--select-seeds", default="1", help="sample seeds of the selection sample (protocol 5c: 1,2)")
    ap.add_argument("--fresh-seed", type=int, default=2, help="sample seed of the fresh sample (protocol 5c: 3)")
    ap.add_argument("--baseline", choices=("current", "2c"), default="current",
                    help="the grid the keep-margin protects: the current default, or protocol 2c's (protocol 5c)")
    args = ap.parse_args()
    samplers, processes = args.samplers.split(","), args.processes.split(",")
    cache = json.loads(Path(args.cache).read_text()) if args.cache and Path(args.cache).exists() else {}
    cache = {(k.split("|", 1)[1] if k.startswith(("sel|", "fresh|")) else k): v for k, v in cache.items()}
    t0 = time.perf_counter()
    sel = [p for seed in args.select_seeds.split(",") for p in sample_problems(args.n, int(seed), args.max_dim)]
    fresh = sample_problems(args.n, seed=args.fresh_seed, max_dim=args.max_dim)
    if {p.seed for p in sel} & {p.seed for p in fresh}:
        raise SystemExit("the fresh sample must not overlap the selection sample")
    print("Selection sample:", "; ".join(p.name for p in sel))
    sel_table = measure(sel, args.starts, samplers, processes, BUDGETS, cache)
    if args.cache:
        Path(args.cache).write_text(json.dumps(cache))

    # -- selection (the rule), before the fresh sample is drawn into the measurements
    chosen = {}
    print(f"\n### Selection ({len(sel)} problems x {len(BUDGETS)} budgets per cell; each cell: 95th-percentile / worst "
          "ratio to the per-case best)\n")
    print("| sampler | process | current | " + " | ".join(CANDIDATES) + " | selected |")
    print("|---|---|---|" + "---:|" * len(CANDIDATES) + "---|")
    for s in samplers:
        for pname in processes:
            r = ratios(sel_table, s, pname)
            score = {g: (q(v), max(v)) for g, v in r.items()}
            best = min(CANDIDATES, key=lambda g: score[g])
            current = PROTOCOL_2C[(s, pname)] if args.baseline == "2c" else default_schedule(s, P.make(pname))
            pick = current if score[current][0] <= KEEP_WITHIN * score[best][0] else best
            chosen[(s, pname)] = (current, pick)
            cells = " | ".join(f"{score[g][0]:.2f} / {score[g][1]:.2f}" for g in CANDIDATES)
            print(f"| {s} | {pname} | {current} | {cells} | **{pick}** |")

    print("\nFresh sample:", "; ".join(p.name for p in fresh))
    fresh_table = measure(fresh, args.starts, samplers, processes, BUDGETS, cache)
    if args.cache:
        Path(args.cache).write_text(json.dumps(cache))
    print(f"\n### Generalisation on the fresh sample ({args.n} problems drawn after the choice; 95th-percentile / "
          "worst ratio to the per-case best)\n")
    print("| sampler | process | baseline | its fresh ratio | selected | its fresh ratio | change |")
    print("|---|---|---|---:|---|---:|---|")
    changes = []
    for (s, pname), (current, pick) in chosen.items():
        r = ratios(fresh_table, s, pname)
        rc, rp = r[current], r[pick]
        change = pick != current
        if change:
            changes.append((s, process_key(P.make(pname)), pick))
        print(f"| {s} | {pname} | {current} | {q(rc):.2f} / {max(rc):.2f} | {pick} | {q(rp):.2f} / {max(rp):.2f} | "
              f"{'yes' if change else '-'} |")
    print("\nChanges to PROCESS_DEFAULTS:", changes if changes else "none")
    print(f"\nTotal time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
