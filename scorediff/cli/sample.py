"""``scorediff sample RUN --sampler NAME --steps N --num K --seed S --out FILE``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "draw samples from a trained run: a PNG grid (images) or scatter plot (2-D points) plus an .npz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder written by `scorediff train`")
    parser.add_argument("--sampler", default=None, help="a sampler name (see `scorediff samplers`); default: the run's")
    parser.add_argument("--steps", type=int, default=None, help="number of sampler steps; default: the run's")
    parser.add_argument("--schedule", default=None, help="time grid name (see scorediff.schedules); default: the sampler's")
    parser.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help="a sampler option, repeatable, value parsed as JSON (e.g. --option eta=1.0, "
                             "--option s_churn=40, --option rtol=1e-4)")
    parser.add_argument("--num", type=int, default=64, help="number of samples (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default=None, help="output picture (.png); the raw samples go beside it as .npz "
                        "(default: RUN/samples/sample_<sampler>_<steps>.png)")
    parser.add_argument("--class", dest="label", type=int, default=None,
                        help="class label for a class-conditional run (default: cycle through the classes)")
    parser.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"samples per batch (default: about {AUTO_BATCH_ELEMENTS} values per batch, at most "
                             f"{MAX_AUTO_BATCH}: 32 of 28x28, 392 of 8x8; larger batches are slower on a CPU)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar over the steps")


# On a CPU a batch whose activations exceed glibc's largest mmap threshold (32 MB) is allocated and freed
# through mmap on every layer: the page faults made sampling 500 28x28 images at batch 500 2.3x slower in
# CPU time, mostly system time, than at batch 32 (benchmarks/sample_throughput.py).
AUTO_BATCH_ELEMENTS = 32 * 28 * 28
MAX_AUTO_BATCH = 1000


def auto_batch(shape: tuple[int, ...]) -> int:
    """Samples per batch for ``--batch`` not given: about AUTO_BATCH_ELEMENTS values, 1..MAX_AUTO_BATCH."""
    numel = 1
    for n in shape:
        numel *= int(n)
    return max(1, min(MAX_AUTO_BATCH, AUTO_BATCH_ELEMENTS // numel))


EMA_DOMINATED = 0.5  # warn when the EMA still puts more than this weight on the initial weights


def weights_note(run_path: Path, raw: bool, step: int) -> tuple[str, str | None]:
    """Which weights sampling uses, and a warning when the EMA average is still mostly the initial weights.

    Reads the averaging state the trainer saves in state.json (``ema``: steps, init_weight, age); a run
    saved before it existed averaged with a fixed decay, so its initial weight is decay ** step.
    """
    if raw:
        return f"sampled with the raw weights of step {step}", None
    state_path = run_path / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    ema = state.get("ema")
    if ema is None:
        decay = float(state.get("ema_decay", 0.0))
        init_weight, age = decay ** step, None
    else:
        init_weight, age = float(ema["init_weight"]), float(ema["age"])
    age_text = f", average age {age:.0f} steps" if age is not None else ""
    note = f"sampled with the EMA weights of step {step}{age_text}, {100 * init_weight:.3g}% initial weights"
    warning = None
    if init_weight > EMA_DOMINATED:
        warning = (f"the EMA average of step {step} is still {100 * init_weight:.0f}% the network's initial random "
                   "weights (a run much shorter than its EMA half-life, without EMA warm-up): its samples will be "
                   "noise-like. Use --raw for the raw weights, or train longer")
    return note, warning


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .. import plotting
    from ..samplers import sample
    from ..training import load_run

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    r = load_run(args.run, ema=not args.raw, device=args.device)
    sampler = args.sampler or r.config["sample"]["sampler"]
    steps = args.steps or int(r.config["sample"]["steps"])
    options = dict(r.config["sample"]["options"]) if sampler == r.config["sample"]["sampler"] else {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    if args.schedule is not None:
        options["schedule"] = args.schedule
    num_classes = int(r.info.get("num_classes") or 0)
    if args.label is not None:
        if not r.class_conditional:
            raise ValueError(f"--class given but run {args.run!r} is not class-conditional")
        if not 0 <= args.label < num_classes:
            raise ValueError(f"--class must lie in 0..{num_classes - 1}, got {args.label}")
    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    batch = args.batch or auto_batch(r.shape)
    generator = torch.Generator(args.device).manual_seed(args.seed)
    chunks, labels = [], []
    for start in range(0, args.num, batch):
        n = min(batch, args.num - start)
        cond = {}
        if r.class_conditional:
            y = (torch.full((n,), args.label) if args.label is not None
                 else torch.arange(start, start + n) % num_classes).to(args.device)
            cond, labels = {"y": y}, labels + [y.cpu()]
        chunks.append(sample(r.denoiser, r.process, (n, *r.shape), sampler=sampler, steps=steps, seed=args.seed,
                             generator=generator, device=args.device, progress=args.progress, cond=cond,
                             **options).cpu())
    x = torch.cat(chunks)
    note, warning = weights_note(r.path, args.raw, r.step)  # after sampling: a bad option is one line alone
    print(note, file=sys.stderr)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    out = Path(args.out) if args.out else r.path / "samples" / f"sample_{sampler}_{steps}.png"
    if out.suffix.lower() != ".png":
        out = out.with_suffix(out.suffix + ".png") if out.suffix else out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"samples": x.numpy()}
    if labels:
        arrays["labels"] = torch.cat(labels).numpy()
    np.savez(out.with_suffix(".npz"), **arrays)
    plotting.save_samples(x, r.kind, out, title=f"{sampler}, {steps} steps")
    print(out)
    return 0
