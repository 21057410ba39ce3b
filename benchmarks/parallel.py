"""Benchmark: parallel (Picard / ParaDiGMS) sampling against the sequential sampler at batch 1, on CPU, with a
real network: rounds (batched network calls), model evaluations, wall time and the distance between the two
results, for a few samplers, step counts and window sizes.

    python benchmarks/parallel.py [--run RUN] [--threads 2] [--steps 50,100] [--windows 8,16,32]

RUN is a run folder of ``scorediff train`` (default: the default digits run is trained into a temporary
folder first, a few minutes). Times are the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from scorediff.samplers import parallel, sample
from scorediff.training import load_run, train


def timed(fn, repeat: int, **kwargs):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(**kwargs)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samplers", default="ddim,dpm_solver_pp_2m,ddpm")
    ap.add_argument("--steps", default="50,100")
    ap.add_argument("--windows", default="8,16,32")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = args.run
    if run is None:
        run = Path(tempfile.mkdtemp()) / "digits"
        train(None, out=run)
    r = load_run(run)
    shape = (1, *r.shape)
    print(f"run {Path(run).name}: {r.net.config['type']} on {tuple(r.shape)}, {torch.get_num_threads()} threads, "
          f"tol {args.tol}, batch 1\n")
    print("| sampler | steps | window | rounds | model evals | sequential calls | parallel s | sequential s "
          "| speed-up | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with torch.inference_mode():
        for name in args.samplers.split(","):
            for steps in map(int, args.steps.split(",")):
                ref, t_seq = timed(sample, args.repeat, denoiser=r.denoiser, process=r.process, shape=shape,
                                   sampler=name, steps=steps, seed=0)
                for window in map(int, args.windows.split(",")):
                    (out, info), t_par = timed(parallel, args.repeat, denoiser=r.denoiser, process=r.process,
                                               x=shape, sampler=name, steps=steps, seed=0, window=window,
                                               tol=args.tol)
                    print(f"| {name} | {steps} | {window} | {info['rounds']} | {info['nfe']} | "
                          f"{info['sequential_nfe']} | {t_par:.2f} | {t_seq:.2f} | {t_seq / t_par:.2f}x | "
                          f"{float((out - ref).abs().max()):.1e} |", flush=True)


if __name__ == "__main__":
    main()
