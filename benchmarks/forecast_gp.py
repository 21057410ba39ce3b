"""Forecasting a Gaussian process with its exact denoiser: each conditioning method's error against steps.

    python benchmarks/forecast_gp.py [--num 2000] [--steps 10 25 50 100 200] [--quick]

Problem: a Matern-5/2 GP (lengthscale 0.2 on [0, 1]) on L = 32 steps, one channel (the law of the built-in
``gp-series`` data and of the ``series-gp`` config); a fixed draw's first 16 steps are the context, the next 16
are forecast. The model is the exact denoiser (``analytic``), VP process, so every error is the method's own:
``conditional`` (the exact CSDI-style denoiser ``analytic.MaskedDenoiser``, DDPM sampler), ``replace`` and
``repaint`` (jumps 5, 5 passes: 5x the model calls) with the DDPM sampler, and ``smc`` (``num`` particles).
Columns (``inverse.moment_errors`` against the exact conditional ``GaussianMixture.condition``): max |mean error|,
max |covariance error|, sliced W2 to ``num`` exact draws (the floor, two sets of exact draws, is printed below),
nfe = model calls per sample. A second table: SMC at 100 steps against the number of particles. Prints markdown.
"""

from __future__ import annotations

import argparse
import time

import torch

from scorediff import forecast, inverse, masking, processes
from scorediff.analytic import MaskedDenoiser
from scorediff.data.series import gp_oracle

L, K = 32, 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=2000, help="samples (SMC: particles) per method and grid")
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50, 100, 200])
    ap.add_argument("--particles", type=int, nargs="+", default=[500, 2000, 8000],
                    help="second table: SMC at 100 steps with these particle counts")
    ap.add_argument("--quick", action="store_true", help="num 500, steps 10 50")
    a = ap.parse_args()
    if a.quick:
        a.num, a.steps, a.particles = 500, [10, 50], [500]
    torch.set_num_threads(1)
    gp = gp_oracle(L, 1, "matern52", 0.2)
    x = gp.sample(1, torch.Generator().manual_seed(5))[0].float()
    mask = masking.forecast_mask((1, L), K)
    truth = gp.condition(x, mask)
    proc = processes.make("vp")
    methods = {
        "conditional": (lambda: MaskedDenoiser(gp, proc), {}),
        "replace": (lambda: gp.denoiser(proc), {}),
        "repaint": (lambda: gp.denoiser(proc), {"jumps": 5, "resample": 5}),
        "smc": (lambda: gp.denoiser(proc), {}),
    }
    print("| method | steps | nfe | mean err | cov err | sliced W2 | seconds |")
    print("|---|---|---|---|---|---|---|")
    floor = None
    for name, (make_den, kw) in methods.items():
        for steps in a.steps:
            den = make_den()
            t0 = time.perf_counter()
            s = forecast.forecast(den, proc, x[:, :K], L - K, (1, L), num=a.num, method=name, steps=steps, **kw)
            dt = time.perf_counter() - t0
            e = inverse.moment_errors(s, truth)
            floor = e["sw2_floor"]
            print(f"| {name} | {steps} | {den.nfe} | {e['mean']:.3f} | {e['cov']:.3f} | {e['sw2']:.3f} | {dt:.1f} |",
                  flush=True)
    print("\n| smc particles (100 steps) | mean err | cov err | sliced W2 | sliced W2 floor | seconds |")
    print("|---|---|---|---|---|---|")
    for p in a.particles:
        t0 = time.perf_counter()
        s = forecast.forecast(gp.denoiser(proc), proc, x[:, :K], L - K, (1, L), num=p, method="smc", steps=100)
        e = inverse.moment_errors(s, truth)
        print(f"| {p} | {e['mean']:.3f} | {e['cov']:.3f} | {e['sw2']:.3f} | {e['sw2_floor']:.3f} | "
              f"{time.perf_counter() - t0:.1f} |", flush=True)
    print(f"\nsliced W2 floor (two sets of {a.num} exact draws): {floor:.3f}; exact conditional: max std "
          f"{float(truth.covariance().diagonal().sqrt().max()):.3f}")


if __name__ == "__main__":
    main()
