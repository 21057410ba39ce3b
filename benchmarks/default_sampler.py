"""Choose the default sampler by protocol 3 of benchmarks/README.md ("Protocol 3: the default sampler").

Run: ``python benchmarks/default_sampler.py [--starts 2000] [--cache FILE]``. Two parts, both with exact
denoisers of Gaussian mixtures (``scorediff.analytic``), float64, CPU, every candidate on its process-aware
default grid (``scorediff.samplers.default_schedule``), at step counts matched to the model calls actually made:

1. **Gap.** On ``mixture64()`` (per-coordinate variances 0.005-0.05) at 50 model calls, on every process with
   sigma(0) = 0, the paired log-density gap mean_i [log p0(y*_i) - log p0(y_i)] (nats; + too spread, - too
   concentrated), y*_i the exact probability-flow ODE solution from the same start x_T (dopri5, rtol = atol =
   1e-9, to where the noise left is negligible: ``exact``), for each ending of ``scorediff.samplers.ENDINGS``
   (t_min; zero = ``denoise_to_zero``; midpoint). Pairing removes the Monte Carlo
   noise of the starts: E_p0[log p0] - mean_i log p0(y*_i) has mean 0, so the plain gap's expectation is the
   paired one's, with a standard error of sd_i / sqrt(n) (printed beside it).
2. **Error.** Protocol 1's problems (tuning and held-out sets) on every process configuration, NFE 10, 20 and
   50: the RMS distance to the exact PF-ODE solution at t_min (``benchmarks/defaults.py``'s error), and each
   candidate's worst ratio to the best candidate's error on that case.

Prints the two tables and the sampler the protocol selects.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # protocol 1's problems and process list

from defaults import ALL_PROCESSES, problems, process_key  # noqa: E402

import scorediff.analytic as A  # noqa: E402
import scorediff.processes as P  # noqa: E402
from scorediff.eval.bench import match_steps, pf_ode_reference  # noqa: E402
from scorediff.samplers import SAMPLERS, sample  # noqa: E402

# every deterministic sampler with a fixed number of model calls per step (``ode`` is adaptive)
CANDIDATES = tuple(n for n, f in SAMPLERS.items()
                   if not f.info.stochastic and f.info.denoiser == "any" and math.isfinite(f.info.nfe_per_step))
GAP_NFE = 50
GAP_LIMIT = 0.1  # nats: issue 13's goal
ENDINGS = ("t_min", "zero", "midpoint")  # ``scorediff.samplers.ENDINGS``
BUDGETS = (10, 20, 50)


@functools.cache
def steps_for(name: str, spec: str, nfe: int, ending: str) -> int:
    """The step count whose actual model calls (counted on a one-sample run) are closest to ``nfe`` (ties: fewer):
    a nominal ``nfe / nfe_per_step`` would give PNDM's Runge-Kutta warm-up and the endings' extra call for free."""
    pname, popts = next((n, o) for n, o in ALL_PROCESSES if process_key(n, o) == spec)
    proc = P.make(pname, **popts)
    d = A.ring2d().denoiser(proc)
    x = proc.prior_sample((1, 2), torch.Generator().manual_seed(0), dtype=torch.float64)

    def calls(steps: int) -> int:
        d.nfe = 0
        run(name, d, proc, x, steps, ending)
        return d.nfe

    return match_steps(calls, nfe, max_steps=2 * nfe)[0]


def run(name: str, d, proc, x: torch.Tensor, steps: int, ending: str) -> torch.Tensor:
    """The sampler on its process-aware default grid with the given ending (``scorediff.sample``)."""
    return sample(d, proc, x, sampler=name, steps=steps, dtype=torch.float64, ending=ending)


def exact(mix: A.GaussianMixture, proc, x: torch.Tensor, t_end: float, rtol: float) -> torch.Tensor:
    """The exact PF-ODE map of x (at t_max) to t_end (0: clean data). Where alpha(t_max) > 0,
    ``scorediff.eval.bench.pf_ode_reference`` (solved in log sigma~, smooth for every process); flow and cosine VP
    start from pure noise and are smooth in their own time (to t = 0: stopped at min(1e-8, t_min / 1000), where
    the noise left is negligible)."""
    if float(proc.alpha(torch.tensor(proc.t_max, dtype=torch.float64))) > 0:
        return pf_ode_reference(mix, proc, x, proc.t_max, rtol=rtol, t_end=t_end)[0]
    ts = torch.tensor([proc.t_max, t_end or min(1e-8, proc.t_min * 1e-3)], dtype=torch.float64)
    return SAMPLERS["ode"](mix.denoiser(proc), proc, x, ts, rtol=rtol, atol=rtol)


def paired_gap(mix: A.GaussianMixture, y_exact: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    d = mix.log_prob(y_exact) - mix.log_prob(y)
    if not bool(torch.isfinite(d).all()):
        return math.inf, math.nan
    return float(d.mean()), float(d.std() / math.sqrt(d.numel()))


def gap_table(n: int) -> dict[tuple[str, str, str], tuple[float, float]]:
    mix = A.mixture64()
    out = {}
    for pname, popts in ALL_PROCESSES:
        proc = P.make(pname, **popts)
        if float(proc._sigma(torch.tensor(0.0, dtype=torch.float64))) > 0:
            continue  # VE: no time with sigma = 0, so no sample of p0 itself
        key = process_key(pname, popts)
        x = proc.prior_sample((n, 64), torch.Generator().manual_seed(0), dtype=torch.float64)
        y_exact = exact(mix, proc, x, 0.0, rtol=1e-9)
        d = mix.denoiser(proc)
        for name in CANDIDATES:
            for ending in ENDINGS:
                try:
                    y = run(name, d, proc, x, steps_for(name, key, GAP_NFE, ending), ending)
                    out[(name, ending, key)] = paired_gap(mix, y_exact, y)
                except ValueError:
                    out[(name, ending, key)] = (math.inf, math.nan)
        print(f"  gap done on {key}", flush=True)
    return out


def error_table(n: int) -> dict[tuple[str, str, int], float]:
    """error[(sampler, case, nfe)], case = "problem on process"."""
    out = {}
    for held_out in (False, True):
        for prob, mix in problems(held_out).items():
            m = n // 2 if mix.means.shape[1] >= 64 else n
            for pname, popts in ALL_PROCESSES:
                proc = P.make(pname, **popts)
                case = f"{prob} on {process_key(pname, popts)}"
                d = mix.denoiser(proc)
                x = proc.prior_sample((m, *mix.event_shape), torch.Generator().manual_seed(0), dtype=torch.float64)
                ref = exact(mix, proc, x, proc.t_min, rtol=1e-7)
                for name in CANDIDATES:
                    for nfe in BUDGETS:
                        try:
                            y = run(name, d, proc, x, steps_for(name, process_key(pname, popts), nfe, "t_min"),
                                    "t_min")
                            err = float(((y - ref) ** 2).reshape(m, -1).sum(1).mean().sqrt())
                        except ValueError:
                            err = math.inf
                        out[(name, case, nfe)] = err if math.isfinite(err) else math.inf
            print(f"  errors done on {prob}", flush=True)
    return out


def worst_ratio(errors: dict[tuple[str, str, int], float], name: str, budgets=BUDGETS) -> tuple[float, str]:
    """The candidate's worst ratio to the per-case best candidate, and the case where it is reached."""
    worst, where = 1.0, ""
    for (s, case, nfe), e in errors.items():
        if s != name or nfe not in budgets:
            continue
        best = min(errors[(c, case, nfe)] for c in CANDIDATES)
        r = e / best if best > 0 else (1.0 if e == 0 else math.inf)
        if r > worst:
            worst, where = r, f"{case}, NFE {nfe}"
    return worst, where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=2000, help="starts of the gap part (the error part uses 128)")
    ap.add_argument("--cache", default="", help="JSON file of both tables, reused when present")
    args = ap.parse_args()
    t0 = time.time()
    path = Path(args.cache) if args.cache else None
    if path and path.exists():
        raw = json.loads(path.read_text())
        gaps = {tuple(k.split("|")): tuple(v) for k, v in raw["gaps"].items()}  # (sampler, ending, process)
        errors = {(s, c, int(n)): e for s, c, n, e in raw["errors"]}
    else:
        gaps = gap_table(args.starts)
        errors = error_table(128)
        if path:
            path.write_text(json.dumps({"gaps": {"|".join(k): v for k, v in gaps.items()},
                                        "errors": [[s, c, n, e] for (s, c, n), e in errors.items()]}))
    keys = sorted({k for _, _, k in gaps}, key=[process_key(n, o) for n, o in ALL_PROCESSES].index)
    print(f"\nGap at {GAP_NFE} model calls on mixture64 (nats, paired, ± standard error), per ending:\n")
    print("| sampler | ending | " + " | ".join(keys) + " | worst abs |")
    print("|---|---|" + "---:|" * (len(keys) + 1))
    worst_gap = {}
    for name in CANDIDATES:
        for ending in ENDINGS:
            cells = [gaps[(name, ending, k)] for k in keys]
            worst_gap[(name, ending)] = max(abs(g) for g, _ in cells)
            print(f"| {name} | {ending} | " + " | ".join(f"{g:+.3f} ± {s:.3f}" for g, s in cells)
                  + f" | {worst_gap[(name, ending)]:.3f} |")
    print(f"\nError (RMS to the exact PF-ODE at t_min): worst ratio to the best candidate, {len(problems(False))} "
          f"tuning + {len(problems(True))} held-out problems x {len(ALL_PROCESSES)} processes:\n")
    print("| sampler | worst ratio, NFE 10/20/50 | where | worst ratio, NFE 10/20 only | endings that meet the gap goal |")
    print("|---|---:|---|---:|---|")
    scores = {}
    for name in CANDIDATES:
        w, where = worst_ratio(errors, name)
        w_low, _ = worst_ratio(errors, name, (10, 20))
        scores[name] = w
        meets = [e for e in ENDINGS if worst_gap[(name, e)] <= GAP_LIMIT]
        print(f"| {name} | {w:.2f} | {where} | {w_low:.2f} | {', '.join(meets) or 'none'} |")
    eligible = [(n, e) for n in CANDIDATES for e in ENDINGS if worst_gap[(n, e)] <= GAP_LIMIT]
    if eligible:
        pick = min(eligible, key=lambda ne: (scores[ne[0]], worst_gap[ne]))
        print(f"\nSelected: **{pick[0]}, ending {pick[1]}** (|gap| <= {GAP_LIMIT} on every process, worst "
              f"{worst_gap[pick]:.3f}; worst error ratio {scores[pick[0]]:.2f})")
    else:
        pick = min(worst_gap, key=worst_gap.get)
        print(f"\nNo candidate meets |gap| <= {GAP_LIMIT} everywhere; smallest worst gap: {pick} "
              f"({worst_gap[pick]:.3f})")
    print(f"\nTotal time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
