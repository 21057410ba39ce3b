"""``scorediff edit RUN --image strokes.png --strength 0.5``: SDEdit, a rough picture made realistic."""

from __future__ import annotations

import argparse

HELP = "SDEdit: noise an image (e.g. a stroke painting) to strength * t_max and denoise it with a trained model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder written by `scorediff train` (an image model)")
    parser.add_argument("--image", required=True, help="the guide image (.png etc.), the run's size")
    parser.add_argument("--strength", type=float, default=0.5,
                        help="in [0, 1]: 0 returns the guide, 1 ignores it (default 0.5)")
    parser.add_argument("--sampler", default="ddpm", help="sampler (default ddpm)")
    parser.add_argument("--schedule", default="karras",
                        help="time grid (see scorediff.schedules; default karras: even in noise level on every process)")
    parser.add_argument("--steps", type=int, default=100, help="steps of the full grid (default 100)")
    parser.add_argument("--num", type=int, default=8, help="number of edits (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default=None, help="output picture (.png) or an existing folder, the raw samples beside it as .npz "
                        "(default: outputs/<run folder name>/edit_<strength>.png; never inside the run)")
    parser.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .. import inverse, plotting
    from ..runs import load_run
    from ..utils import cycle_labels
    from ._outputs import png_output_path
    from .inpaint import read_image

    if not 0.0 <= args.strength <= 1.0:
        raise ValueError(f"--strength must lie in [0, 1], got {args.strength}")
    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    r = load_run(args.run, ema=not args.raw)
    guide = read_image(args.image, r.shape)
    cond = {"y": cycle_labels(0, args.num, int(r.info.get("num_classes") or 1))} if r.class_conditional else None
    x = inverse.sdedit(r.denoiser, r.process, guide.expand(args.num, *r.shape).contiguous(), args.strength,
                       sampler=args.sampler, steps=args.steps, schedule=args.schedule, seed=args.seed, cond=cond)
    out = png_output_path(args.out, r.path, f"edit_{args.strength:g}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out.with_suffix(".npz"), samples=x.numpy(), guide=guide.numpy())
    plotting.save_image_grid(plotting.to_unit(torch.cat([guide[None], x])), out, nrow=args.num + 1)
    print(out)
    return 0
