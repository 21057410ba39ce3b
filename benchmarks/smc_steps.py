"""Protocols 5b, 5d and 5f: the default step counts of inpainting and of the linear solvers DPS and Pi-GDM
(docs/results/defaults-protocol-5.md).

    python benchmarks/smc_steps.py [--seeds 2] [--n 2000] [--methods smc,repaint,replace,dps,pigdm] [--held-out SEED]

Exact denoisers on the VP process. Inpainting methods (smc, repaint, replace; protocols 5b, 5d) observe part of a
draw exactly, truth ``GaussianMixture.condition``; the linear solvers (dps, pigdm; protocol 5f) observe a draw
through y = A x + s n, truth ``GaussianMixture.posterior``. Prints each method's error per problem and step count,
and the count the rule selects. With ``--held-out SEED`` (the check of 5d / 5f) the problems are drawn from
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

CANDIDATES = {"smc": (50, 100, 200, 400), "repaint": (25, 50, 100, 200), "replace": (50, 100, 200, 400, 800),
              "dps": (25, 50, 100, 200, 400), "pigdm": (25, 50, 100, 200, 400)}
LINEAR = ("dps", "pigdm")
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


def linear_problems():
    """Protocol 5f's selection problems: (name, mixture, A, y, s), noisy linear observations of one draw."""
    ring = ring2d()
    a2 = torch.tensor([[0.7, 0.5]], dtype=torch.float64)
    yield "ring2d 0.7x0+0.5x1=0.3 s=0.05", ring, a2, torch.tensor([0.3], dtype=torch.float64), 0.05
    for name, mix, mask, x in list(problems())[1:3]:  # 5b's mixture64 half and gp32 forecast, now noisy
        yield _observe(f"{name}, noisy", mix, inverse.mask_operator(mask), x, seed=0)
        if name.startswith("mixture64"):
            yield _observe("mixture64 cs 16x64", mix, inverse.gaussian_operator(16, 64, seed=1), x, seed=0)
    yield from _generated(sample_problems(3, seed=5, max_dim=64))


def held_out_linear_problems(seed: int):
    """Protocol 5f's held-out problems: drawn after the selection, observed as its generated problems."""
    yield from _generated(sample_problems(4, seed=seed, max_dim=64))


def _generated(drawn):
    """The i-th drawn problem observed by noisy inpainting of its first half (i even) or a Gaussian operator."""
    for i, p in enumerate(drawn):
        d = p.mixture.dim
        x = p.mixture.sample(1, torch.Generator().manual_seed(p.seed))[0].reshape(-1)
        if i % 2 == 0:
            mask = torch.zeros(d, dtype=torch.bool)
            mask[: d // 2] = True
            yield _observe(f"{p.name}, noisy half", p.mixture, inverse.mask_operator(mask), x, seed=p.seed)
        else:
            m = max(1, d // 2)
            yield _observe(f"{p.name}, cs {m}x{d}", p.mixture, inverse.gaussian_operator(m, d, seed=p.seed), x,
                           seed=p.seed)


def _observe(name: str, mix, a: torch.Tensor, x: torch.Tensor, seed: int):
    """y = A x + s n with s = 0.1 x the prior's RMS standard deviation per coordinate (protocol 5f)."""
    s = 0.1 * float(mix.covariance().diagonal().mean().sqrt())
    n = torch.randn(a.shape[0], generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return f"{name} s={s:.2g}", mix, a, a @ x.to(torch.float64) + s * n, s


def error(samples: torch.Tensor, truth) -> float:
    """Protocol 5b's error of samples (N, D_free) against the exact conditional ``truth``."""
    free = samples.reshape(samples.shape[0], -1).to(torch.float64)
    if not torch.isfinite(free).all():
        return float("inf")
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
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in CANDIDATES]
    if unknown:
        ap.error(f"--methods: {unknown[0]!r} unknown; one of {', '.join(CANDIDATES)}")
    h = args.held_out
    inpaint_probs = list(problems() if h is None else held_out_problems(h)) if set(methods) - set(LINEAR) else []
    linear_probs = list(linear_problems() if h is None else held_out_linear_problems(h)) \
        if set(methods) & set(LINEAR) else []
    if h is not None:
        print("Held-out problems: " + "; ".join(n for n, *_ in inpaint_probs + linear_probs))
    checks = []
    for method in methods:
        counts = CANDIDATES[method]
        seeds = args.smc_seeds if method == "smc" and args.smc_seeds is not None else args.seeds
        print(f"\n### {method}: error per problem (mean of {seeds} seeds, {args.n} samples) and step count\n")
        print("| problem | " + " | ".join(f"{c} steps" for c in counts) + " |")
        print("|---|" + "---:|" * len(counts))
        table = {}
        probs = linear_probs if method in LINEAR else inpaint_probs
        for name, mix, *obs in probs:
            row = []
            if method in LINEAR:
                a, y, s_obs = obs
                truth = mix.posterior(a, y, s_obs)
            else:
                mask, x = obs
                truth = mix.condition(x, mask)
            for c in counts:
                errs = []
                for seed in range(seeds):
                    if method in LINEAR:
                        s = inverse.solve_linear(mix.denoiser(proc), proc, a, y, s_obs, shape=(args.n, *mix.event_shape),
                                                 method=method, steps=c, seed=seed)
                    else:
                        known = x.reshape(1, *mix.event_shape).expand(args.n, *mix.event_shape).to(torch.float64)
                        kw = dict(jumps=10, resample=10) if method == "repaint" else {}
                        s = inverse.inpaint(mix.denoiser(proc), proc, known, mask.reshape(mix.event_shape),
                                            method=method, steps=c, seed=seed, **kw)
                        s = s.reshape(args.n, -1)[:, ~mask]
                    errs.append(error(s, truth))
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
