"""``scorediff report RUN [--out FILE] [--compare heun,ddim --nfe 10,20] [--num N]``.

Writes one self-contained HTML page about a run (``scorediff.report``): config, training curves, sample
grids, evaluations logged during training, an optional sampler comparison and the environment.
"""

from __future__ import annotations

import argparse

HELP = "one self-contained HTML page about a run: curves, sample grids, sampler comparison, environment"


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder written by `scorediff train`")
    parser.add_argument("--out", default=None, help="the HTML file (default: <run>-report.html beside the run folder)")
    parser.add_argument("--compare", default="", metavar="S1,S2,...",
                        help="samplers to compare (quality against NFE), e.g. heun,ddim,dpm_solver_pp_2m")
    parser.add_argument("--nfe", type=_ints, default=[10, 20], metavar="N1,N2,...",
                        help="model-evaluation budgets for --compare (default 10,20)")
    parser.add_argument("--num", type=int, default=500, help="samples per comparison point (default 500)")
    parser.add_argument("--schedule", default=None,
                        help="time grid for every compared sampler (a scorediff.schedules name; default: each sampler's own)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the comparison's prior draw (default 0)")
    parser.add_argument("--results", action="append", default=[], metavar="FILE",
                        help="a JSON results file to show (e.g. from `scorediff eval --out`), repeatable")
    parser.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    parser.add_argument("--device", default="cpu", help="torch device for the comparison (default cpu)")


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    compare = [s.strip() for s in args.compare.split(",") if s.strip()]
    path = write_report(args.run, args.out, compare=compare, nfe=args.nfe, num=args.num, seed=args.seed,
                        schedule=args.schedule, results=args.results, device=args.device, ema=not args.raw)
    print(path)
    return 0
