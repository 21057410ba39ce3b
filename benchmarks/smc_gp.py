"""SMC on a 32-D Gaussian-process forecast against the exact conditional, as its step count grows (issue 28).

    python benchmarks/smc_gp.py [--particles 1024] [--seeds 3] [--steps 50,100,400,1000]

``gaussian_process(32)`` (rbf, lengthscale 0.2), a prior draw's first 16 values observed exactly, VP process,
exact denoiser, one particle system. Columns: the RMS error of the forecast's mean and of its standard deviation
over the 16 free values, in units of the exact forecast's RMS standard deviation (``GaussianMixture.condition``),
mean +- sd over seeds; and how many times the particle system resampled (each resampling at small noise cuts
the number of distinct ancestors that the rest of the run cannot restore).
"""

from __future__ import annotations

import argparse
import time

import torch

from scorediff import inverse, processes
from scorediff.analytic import gaussian_process
from scorediff.inverse import smc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--particles", type=int, default=1024)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", default="50,100,400,1000")
    args = ap.parse_args()
    proc = processes.make("vp")
    gp = gaussian_process(32)
    x = gp.sample(1, torch.Generator().manual_seed(0))[0]
    mask = torch.zeros(1, 32, dtype=torch.bool)
    mask[0, :16] = True
    truth = gp.condition(x, mask)
    mu, sd = truth.means[0], truth.covs[0].diagonal().sqrt()
    rs = sd.pow(2).mean().sqrt()
    count = [0]
    resample = smc._resample

    def counting(logw, generator, adaptive):  # counts the resamplings the run makes (not the final one)
        idx = resample(logw, generator, adaptive)
        count[0] += int(adaptive and idx is not None)
        return idx

    smc._resample = counting
    n = args.particles
    print(f"GP forecast, {n} particles, {args.seeds} seeds\n")
    print("| steps | mean error | sd error | resamplings | CPU s / run |")
    print("|---:|---:|---:|---:|---:|")
    for steps in [int(s) for s in args.steps.split(",")]:
        em, es, rc = [], [], []
        t0 = time.process_time()
        for seed in range(args.seeds):
            count[0] = 0
            s = inverse.inpaint(gp.denoiser(proc), proc, x.expand(n, 1, 32).double(), mask, method="smc",
                                steps=steps, seed=seed)
            f = s.reshape(n, 32)[:, 16:].double()
            em.append(float((f.mean(0) - mu).pow(2).mean().sqrt() / rs))
            es.append(float((f.std(0) - sd).pow(2).mean().sqrt() / rs))
            rc.append(count[0])
        e1, e2 = torch.tensor(em), torch.tensor(es)
        print(f"| {steps} | {e1.mean():.3f} ± {e1.std():.3f} | {e2.mean():.3f} ± {e2.std():.3f} | "
              f"{sum(rc) / len(rc):.0f} | {(time.process_time() - t0) / args.seeds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
