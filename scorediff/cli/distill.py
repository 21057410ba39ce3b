"""``scorediff distill {progressive,consistency,reflow} RUN --out DIR [options]``: a few-step run from a trained one."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "distil a trained run into a 1-4 step generator (progressive or consistency distillation)"


def _steps_list(text: str) -> int | list[int]:
    """``500`` -> 500; ``100,200,500`` -> [100, 200, 500] (one per halving)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", choices=["progressive", "consistency", "reflow"],
                        help="progressive (Salimans & Ho 2022) or consistency (Song et al. 2023) distillation, or "
                             "reflow (rectified flow, Liu et al. 2023; flow runs)")
    parser.add_argument("run", nargs="?", default=None, help="the teacher's run folder (not needed with --resume)")
    parser.add_argument("--out", required=True, help="the student's run folder")
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out exactly")
    g = parser.add_argument_group("progressive")
    g.add_argument("--to-steps", type=int, default=4, help="the student's final number of DDIM steps (default 4)")
    g.add_argument("--teacher-steps", type=int, default=16,
                   help="the teacher's steps in the first stage (to-steps times a power of two; default 16)")
    g.add_argument("--steps-per-stage", type=_steps_list, default=1000,
                   help="optimizer steps per halving: one number, or one per halving, e.g. 800,1200 "
                        "(default 1000)")
    g.add_argument("--schedule", default="karras", help="the time grid of teacher and student (default karras)")
    g.add_argument("--weighting", default="snr_trunc", help="snr_trunc (max(SNR, 1)) or snr_plus_one")
    g.add_argument("--teacher-solver", default="heun",
                   help="the trained teacher's two steps in the first halving: heun (default), dpm_solver_pp or ddim "
                        "(the paper's)")
    g.add_argument("--lr-anneal", action=argparse.BooleanOptionalAction, default=True,
                   help="learning rate falls linearly to 0 within each halving, as in Salimans & Ho (default on)")
    g = parser.add_argument_group("consistency")
    g.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    g.add_argument("--solver", default="heun", help="the teacher's ODE step: heun, ddim or dpm_solver_pp")
    g.add_argument("--mu", type=float, default=0.95, help="EMA decay of the target network (default 0.95)")
    g.add_argument("--s0", type=int, default=18, help="curriculum: initial N - 1 (default 18)")
    g.add_argument("--s1", type=int, default=18, help="curriculum: final N - 1 (default 18; = s0: a fixed N)")
    g.add_argument("--distance", default="l2", help="l2 or pseudo_huber")
    g.add_argument("--sample-steps", type=int, default=1, help="the run's default sampling steps (default 1)")
    g = parser.add_argument_group("reflow (also --steps, --sample-steps: Euler steps)")
    g.add_argument("--pairs", type=int, default=4096, help="(noise, sample) pairs drawn from the teacher (default 4096)")
    g.add_argument("--pair-sampler", default="heun", help="the teacher's deterministic sampler for the pairs (heun)")
    g.add_argument("--pair-steps", type=int, default=32, help="its steps (default 32)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: a quarter of the teacher's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the student's config, e.g. --set optim.batch_size=128")


def run(args: argparse.Namespace) -> int:
    import sys

    from ..training.distillation import distill
    from ..training.loop import NonFiniteLossError

    if args.run is None and not args.resume:
        raise ValueError("a teacher run folder is required (or --resume with --out holding a distillation run)")
    if args.run is not None and not (Path(args.run) / "config.json").exists():
        raise FileNotFoundError(f"{args.run!r} is not a run folder (no config.json)")
    options = dict(lr=args.lr, overrides=args.overrides)
    if args.method == "progressive":
        options.update(to_steps=args.to_steps, teacher_steps=args.teacher_steps, steps_per_stage=args.steps_per_stage,
                       schedule=args.schedule, weighting=args.weighting, teacher_solver=args.teacher_solver,
                       lr_anneal=args.lr_anneal)
    elif args.method == "reflow":
        options.update(steps=args.steps, sample_steps=args.sample_steps, pairs=args.pairs,
                       pair_sampler=args.pair_sampler, pair_steps=args.pair_steps)
    else:
        options.update(steps=args.steps, solver=args.solver, mu=args.mu, s0=args.s0, s1=args.s1,
                       distance=args.distance, sample_steps=args.sample_steps)
    try:
        trainer = distill(args.run, args.method, args.out, resume=args.resume, **options)
    except NonFiniteLossError as e:
        print(f"scorediff distill: {e}", file=sys.stderr)
        return 1
    if not trainer.is_main:
        return 0
    if trainer.stopped_by == "signal":
        print(f"stopped at step {trainer.step}; checkpoint saved in {args.out}. Continue with: "
              f"scorediff distill {args.method} --out {args.out} --resume", file=sys.stderr)
        return 0
    s = trainer.cfg["sample"]
    print(f"run folder: {args.out} (step {trainer.step}); sample it with `scorediff sample {args.out}` "
          f"({s['sampler']}, {s['steps']} steps)", file=sys.stderr)
    if trainer.last_sample_path is not None:
        print(trainer.last_sample_path)
    return 0
