"""``scorediff fit-schedule RUN --sampler S [S ...] --steps N [N ...] [--pilot 64] [--seed 0] [--method refined]``:
a time grid fitted on the run's EMA denoiser (``scorediff.runs.fitting``), written into ``RUN/schedules/`` for
``scorediff sample`` and ``eval`` to use where it beat the default grid on held-out pilot draws."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "fit a time grid to a trained run (GITS, from pilot prior draws) and keep it in the run folder for sampling"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder written by `scorediff train` (not while it trains)")
    parser.add_argument("--sampler", nargs="+", required=True, metavar="S",
                        help="the sampler(s) the grid is for (see `scorediff samplers`); one file each")
    parser.add_argument("--steps", nargs="+", type=int, required=True, metavar="N",
                        help="the step count(s) the grid is for; one pilot serves them all")
    parser.add_argument("--pilot", type=int, default=64, help="pilot prior draws (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pilot draws (default 0)")
    parser.add_argument("--fine-steps", type=int, default=128,
                        help="intervals of the candidate grid the pilot integrates (default 128 = model calls)")
    parser.add_argument("--method", default="refined",
                        help="refined (default): GITS on half the pilot, refined for the sampler, checked against "
                             "the default grid on the other half and used only where it wins; gits: GITS on the "
                             "whole pilot, unchecked")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args: argparse.Namespace) -> int:
    from ..runs.fitting import fit_run

    paths = fit_run(args.run, args.sampler, args.steps, pilot=args.pilot, seed=args.seed, fine_steps=args.fine_steps,
                  method=args.method, device=args.device, log=lambda line: print(line, file=sys.stderr))
    pilot = json.loads(paths[0].read_text())["pilot"]
    print(f"pilot: {pilot['model_calls']} batched model calls, {pilot['cpu_s']:.1f} CPU s, {pilot['wall_s']:.1f} s",
          file=sys.stderr)
    for path in paths:
        heldout = json.loads(path.read_text()).get("heldout")
        if heldout is not None:
            print(f"{path.name}: held-out error {heldout['fitted_error']:.4g} against {heldout['default_error']:.4g} "
                  f"on {heldout['default_grid']}: " + ("used by default" if heldout["wins"] else "not used"),
                  file=sys.stderr)
        print(path)
    return 0
