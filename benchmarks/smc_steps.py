"""Protocols 5b and 5d: the default step counts of inpainting (docs/results/defaults-protocol-5.md).

    python benchmarks/smc_steps.py [--seeds 2] [--n 2000] [--methods smc,repaint,replace] [--held-out SEED]

Exact denoisers on the VP process; truth ``GaussianMixture.condition``. Prints each method's error per problem and
step count, and the count the rule selects. With ``--held-out SEED`` (protocol 5d's check) the problems are
``sample_problems(4, seed=SEED, max_dim=64)`` instead, and each method's current default
(``inverse._common.DEFAULT_STEPS``) is compared with its best candidate on every problem.
"""

from __future__ import annotations

import argparse
import time

import torch

from scorediff import inverse, processes
from scorediff.analytic import gaussian_process, mixture64, ring2d
from scorediff.eval.problems import sample_problems
from scorediff.inverse._common import DEFAULT_STEPS

CANDIDATES = {"smc": (50, 100, 200, 400), "repaint": (25, 50, 100, 200), "replace": (50, 100, 200, 400, 800)}
WITHIN, NOISE = 1.25, 0.02


def problems():
    ring = ring2d()
    m2 = torch.tensor([True, False])
    yield "ring2d x0=0.6", ring, m2, torch.tensor([0.6, 0.0], dtype=torch.float64)
    mix = mixture64()
    g = torch.Generator().manual_seed(0)
    x = mix.sample(1, g)[0]
    mask = torch.zeros(64, dtype=torch.bool)
    mask[torch.randperm(64, generator=g)[:32]] = True
    yield "mixture64 half", mix, mask, x
    gp = gaussian_process(32)
    xg = gp.sample(1, torch.Generator().manual_seed(0))[0].reshape(-1)
    mg = torch.zeros(32, dtype=torch.bool)
    mg[:16] = True
    yield "gp32 forecast", gp, mg, xg
    for p in sample_problems(3, seed=5, max_dim=64):
        xp = p.mixture.sample(1, torch.Generator().manual_seed(p.seed))[0].reshape(-1)
        mp = torch.zeros(p.mixture.dim, dtype=torch.bool)
        mp[: p.mixture.dim // 2] = True
        yield p.name, p.mixture, mp, xp


def held_out_problems(seed: int):
    """Protocol 5d's held-out problems: drawn after the selection, observed as 5b's generated problems."""
    for p in sample_problems(4, seed=seed, max_dim=64):
        xp = p.mixture.sample(1, torch.Generator().manual_seed(p.seed))[0].reshape(-1)
        mp = torch.zeros(p.mixture.dim, dtype=torch.bool)
        mp[: p.mixture.dim // 2] = True
        yield p.name, p.mixture, mp, xp


def error(samples: torch.Tensor, mix, mask: torch.Tensor, x: torch.Tensor) -> float:
    truth = mix.condition(x, mask)
    free = samples.reshape(samples.shape[0], -1)[:, ~mask].to(torch.float64)
    if truth.num_components == 1:  # a Gaussian: forecast errors of mean and sd, in units of its RMS sd
        mu, sd = truth.means[0], truth.covs[0].diagonal().sqrt()
        rs = sd.pow(2).mean().sqrt()
        return float((free.mean(0) - mu).pow(2).mean().sqrt() / rs + (free.std(0) - sd).pow(2).mean().sqrt() / rs)
    e = inverse.posterior_errors(free, truth)
    return e["tv"] + abs(e["gap"]) / 10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--methods", default="smc,repaint")
    ap.add_argument("--smc-seeds", type=int, default=None, help="seeds for smc (default: --seeds)")
    ap.add_argument("--held-out", type=int, default=None, metavar="SEED",
                    help="protocol 5d's check: sample_problems(4, seed=SEED, max_dim=64), defaults against the best")
    args = ap.parse_args()
    proc = processes.make("vp")
    t0, c0 = time.perf_counter(), time.process_time()
    probs = list(problems() if args.held_out is None else held_out_problems(args.held_out))
    if args.held_out is not None:
        print("Held-out problems: " + "; ".join(n for n, *_ in probs))
    checks = []
    for method in args.methods.split(","):
        counts = CANDIDATES[method]
        seeds = args.smc_seeds if method == "smc" and args.smc_seeds is not None else args.seeds
        print(f"\n### {method}: error per problem (mean of {seeds} seeds, {args.n} samples) and step count\n")
        print("| problem | " + " | ".join(f"{c} steps" for c in counts) + " |")
        print("|---|" + "---:|" * len(counts))
        table = {}
        for name, mix, mask, x in probs:
            row = []
            for c in counts:
                errs = []
                for seed in range(seeds):
                    known = x.reshape(1, *mix.event_shape).expand(args.n, *mix.event_shape).to(torch.float64)
                    kw = dict(jumps=10, resample=10) if method == "repaint" else {}
                    s = inverse.inpaint(mix.denoiser(proc), proc, known, mask.reshape(mix.event_shape),
                                        method=method, steps=c, seed=seed, **kw)
                    errs.append(error(s, mix, mask, x))
                table[(name, c)] = sum(errs) / len(errs)
                row.append(f"{table[(name, c)]:.3f}")
            print(f"| {name} | " + " | ".join(row) + " |", flush=True)
        best = {n: min(table[(n, k)] for k in counts) for n, *_ in probs}
        if args.held_out is None:
            ok = [c for c in counts if all(table[(n, c)] <= WITHIN * best[n] + NOISE for n, *_ in probs)]
            pick = ok[0] if ok else counts[-1]
            print(f"\n{method}: counts within {WITHIN}x (+{NOISE}) of the best on every problem: {ok}; "
                  f"selected **{pick}**")
        else:
            d = DEFAULT_STEPS[method]
            checks += [(n, method, d, table[(n, d)], best[n]) for n, *_ in probs]
    if checks:
        print(f"\n### Held-out check: each default against its best candidate (passes: within {WITHIN}x + {NOISE})\n")
        print("| problem | method | default steps | error at default | best candidate's error | ratio | passes |")
        print("|---|---|---:|---:|---:|---:|---|")
        for n, method, d, e, b in checks:
            ok = e <= WITHIN * b + NOISE
            print(f"| {n} | {method} | {d} | {e:.3f} | {b:.3f} | {e / max(b, 1e-12):.2f} | {'yes' if ok else '**no**'} |")
    print(f"\nTotal time {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU (this process)")


if __name__ == "__main__":
    main()
