"""Inpainting and linear inverse problems against the exact posterior: every method's error, per model call.

    python benchmarks/inverse.py [--seeds 3] [--quick]

Problems (the exact denoiser of a Gaussian mixture as the model, VP process, so every error is the method's):
  ring2d-inpaint   ring2d, observe x[0] = 0.6 exactly (the free x[1] has three modes)
  ring2d-linear    ring2d, y = 0.7 x[0] + 0.5 x[1] + 0.05 n, y = 0.3
  mix64-inpaint    mixture64, half the coordinates (a fixed random half) of a prior draw observed exactly
  mix64-cs         mixture64, compressed sensing: y = A x + 0.1 n, A 16 x 64 Gaussian, x a prior draw
Columns: tv = total variation between the samples' mode weights (mean p(k | x) under the exact posterior) and
the exact posterior weights; gap = E_exact[log p] - E_samples[log p] under the exact posterior (nats; for the
inpainting problems on the free coordinates, where the exact conditional is a density); nfe = model calls per
sample path. Mean +- standard deviation over seeds. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time

import torch

from scorediff import inverse, processes
from scorediff.analytic import mixture64, ring2d


def problems():
    g = torch.Generator().manual_seed(0)
    ring = ring2d()
    mask2 = torch.tensor([True, False])
    known2 = torch.tensor([0.6, 0.0])
    yield "ring2d-inpaint", ring, dict(kind="inpaint", mask=mask2, known=known2,
                                         truth=ring.condition(known2, mask2), free=~mask2)
    a2 = torch.tensor([[0.7, 0.5]], dtype=torch.float64)
    yield "ring2d-linear", ring, dict(kind="linear", A=a2, y=torch.tensor([0.3]), s=0.05,
                                        truth=ring.posterior(a2, [0.3], 0.05))
    mix = mixture64()
    x = mix.sample(1, g)[0]
    mask = torch.zeros(64, dtype=torch.bool)
    mask[torch.randperm(64, generator=g)[:32]] = True
    yield "mix64-inpaint", mix, dict(kind="inpaint", mask=mask, known=x.float(), truth=mix.condition(x, mask),
                                       free=~mask)
    a = inverse.gaussian_operator(16, 64, seed=1)
    y = a @ x + 0.1 * torch.randn(16, generator=g, dtype=torch.float64)
    yield "mix64-cs", mix, dict(kind="linear", A=a, y=y.float(), s=0.1, truth=mix.posterior(a, y, 0.1))


def methods(kind: str, quick: bool):
    s = 2 if quick else 1
    if kind == "inpaint":
        return [
            ("replace, ddpm 250", "replace", 2000, dict(steps=250 // s)),
            ("replace, ddpm 1000", "replace", 2000, dict(steps=1000 // s)),
            ("RePaint j=10 r=10, 250 steps", "repaint", 2000, dict(steps=250 // s, jumps=10, resample=10)),
            ("RePaint j=1 r=10, 100 steps", "repaint", 2000, dict(steps=100 // s, jumps=1, resample=10)),
            ("SMC, 4000 particles, 200 steps", "smc", 4000, dict(steps=200 // s)),
            ("SMC, 4000 particles, 1000 steps", "smc", 4000, dict(steps=1000 // s)),
        ]
    return [
        ("DPS zeta=1, ddpm 1000", "dps", 2000, dict(steps=1000 // s, scale=1.0)),
        ("DPS zeta=0.1, ddpm 1000", "dps", 2000, dict(steps=1000 // s, scale=0.1)),
        ("Pi-GDM, ddpm 250", "pigdm", 2000, dict(steps=250 // s)),
        ("Pi-GDM, heun 50", "pigdm", 2000, dict(steps=50 // s, sampler="heun")),
        ("SMC, 4000 particles, 200 steps", "smc", 4000, dict(steps=200 // s)),
        ("SMC, 4000 particles, 1000 steps", "smc", 4000, dict(steps=1000 // s)),
    ]


def run_one(mix, spec, method, n, kw, seed, proc):
    den = mix.denoiser(proc)
    if spec["kind"] == "inpaint":
        known = spec["known"].reshape(1, -1).repeat(n, 1)
        x = inverse.inpaint(den, proc, known, spec["mask"], method=method, seed=seed, **kw)
        x = x[:, spec["free"]]
    else:
        x = inverse.solve_linear(den, proc, spec["A"], spec["y"], spec["s"], shape=(n, mix.dim), method=method, seed=seed,
                           **kw)
    if not torch.isfinite(x).all():
        return {"tv": float("nan"), "gap": float("nan")}, den.nfe
    return inverse.posterior_errors(x.double(), spec["truth"]), den.nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="half the steps (a smoke run)")
    parser.add_argument("--only", default=None, help="run only the problems whose name contains this")
    args = parser.parse_args()
    proc = processes.make("vp")
    print("| problem | method | samples | nfe | TV of mode weights | log-density gap (nats) | s / seed |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, mix, spec in problems():
        if args.only and args.only not in name:
            continue
        for label, method, n, kw in methods(spec["kind"], args.quick):
            tvs, gaps = [], []
            t0 = time.perf_counter()
            for seed in range(args.seeds):
                err, nfe = run_one(mix, spec, method, n, kw, seed, proc)
                tvs.append(err["tv"])
                gaps.append(err["gap"])
            tv, gap = torch.tensor(tvs), torch.tensor(gaps)
            sd = (lambda v: float(v.std())) if args.seeds > 1 else (lambda v: 0.0)
            print(f"| {name} | {label} | {n} | {nfe} | {float(tv.mean()):.3f} ± {sd(tv):.3f} | "
                  f"{float(gap.mean()):.3f} ± {sd(gap):.3f} | {(time.perf_counter() - t0) / args.seeds:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
