"""``scorediff bench samplers [RUN]``: parses the arguments and prints the tables of ``scorediff.eval.bench``.

The engine (problems, NFE matching, metrics, tables) is library code in ``scorediff.eval.bench``; see its
docstring for what is measured and how.
"""

from __future__ import annotations

import argparse

HELP = "benchmark samplers: accuracy vs NFE against the exact oracle (or a trained RUN against held-out data)"


def _csv(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["samplers"], help="what to benchmark (samplers)")
    parser.add_argument("run_dir", nargs="?", metavar="RUN", help="a training run folder (default: the exact oracle)")
    parser.add_argument("--mixtures", default="ring2d,mixture64", help="oracle mixtures (default: ring2d,mixture64)")
    parser.add_argument("--process", default="vp-discrete", help="process for the oracle (default: vp-discrete)")
    parser.add_argument("--nfe", default="5,10,20,50", help="target NFEs (default: 5,10,20,50)")
    parser.add_argument("--grids", default="default,karras,logsnr",
                        help="time grids; 'default' is each sampler's own, 'all' every applicable one; "
                             "'optimized' is fitted to the mixture on a pilot batch (GITS); "
                             "NAME@t_min ends at t_min without the denoise-to-zero call")
    parser.add_argument("--samplers", default="all", help="registered sampler names, or 'all'")
    parser.add_argument("--n", type=int, default=1024, help="samples per run (default 1024)")
    parser.add_argument("--ref-points", type=int, default=256, help="starts with an exact ODE reference (0: no rms)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metrics", default="sw,gap,rms", help="tables to print (sw, gap, rms)")


def run(args: argparse.Namespace) -> int:
    from ..eval import bench
    from ..samplers import SAMPLERS

    samplers = ([n for n, f in SAMPLERS.items() if f.info.denoiser == "any"] if args.samplers == "all"
                else _csv(args.samplers))
    for s in samplers:
        if s not in SAMPLERS:
            from ..utils import unknown

            raise unknown("sampler", s, SAMPLERS)
    try:
        nfes = [int(v) for v in _csv(args.nfe)]
    except ValueError:
        raise ValueError(f"--nfe must be comma-separated integers, got {args.nfe!r}") from None
    if not nfes or min(nfes) < 1:
        raise ValueError(f"--nfe values must be >= 1, got {args.nfe!r}")
    if args.n < 2:
        raise ValueError(f"--n must be >= 2, got {args.n}")
    metrics = _csv(args.metrics)
    for m in metrics:
        if m not in ("sw", "gap", "rms"):
            raise ValueError(f"--metrics: {m!r} unknown; one of: sw, gap, rms")
    log = lambda line: print(line, flush=True)  # noqa: E731
    if args.run_dir:
        from ..runs import load_run

        r = load_run(args.run_dir)
        r.require_task("diffusion", "scorediff bench")
        if r.latent:
            raise ValueError(f"scorediff bench: run {str(args.run_dir)!r} is a latent diffusion run; the trained-run "
                             "benchmark compares samples with data directly (use scorediff eval)")
        rows = bench.trained_rows(r, str(args.run_dir), samplers, args.grids, nfes,
                                  n=args.n, seed=args.seed, log=log)
        metrics = ["sw"]
    else:
        from .. import processes

        rows = bench.oracle_rows(processes.make(args.process), _csv(args.mixtures), args.grids, samplers, nfes,
                                 n=args.n, seed=args.seed, ref_points=args.ref_points, log=log)
    for problem in dict.fromkeys(r.problem for r in rows):
        sub = [r for r in rows if r.problem == problem]
        for m in metrics:
            if m == "rms" and all(r.rms is None for r in sub):
                continue
            print(f"\n{problem}: {m}\n")
            print(bench.format_table(sub, m, nfes))
    for line in bench.failures(rows):
        print("failed:", line)
    return 0
