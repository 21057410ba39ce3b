"""``scorediff train-classifier RUN [--out DIR] [--steps N]``."""

from __future__ import annotations

import argparse

HELP = "train a noisy classifier p(y | x_t) on a run's data at its noise levels (for classifier guidance)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder written by `scorediff train` whose data has class labels")
    parser.add_argument("--out", default=None, help="the classifier folder (default: RUN/classifier)")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    parser.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, decayed to 0 (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")


def run(args: argparse.Namespace) -> int:
    from ..training.classifier import train_classifier

    if args.steps < 1 or args.batch < 1:
        raise ValueError(f"--steps and --batch must be >= 1, got {args.steps}, {args.batch}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    out, info = train_classifier(args.run, args.out, steps=args.steps, batch_size=args.batch, lr=args.lr,
                                 seed=args.seed, device=args.device, progress=args.progress)
    acc = ", ".join(f"t={t}: {a:.3f}" for t, a in info["accuracy_on_training_data"].items())
    print(f"accuracy on the training data ({acc})")
    print(out)
    return 0
