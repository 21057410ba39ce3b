"""``scorediff sample RUN --sampler NAME --steps N --num K --seed S --out FILE [--class Y --guidance S]``.

RUN may also be a local diffusers pipeline folder (``interop.generate_pipeline``): ``scorediff sample SD_FOLDER
--prompt "..." [--negative-prompt ...] --guidance G --sampler S --steps N --num K --out DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "draw samples from a trained run: a PNG grid (images) or scatter plot (2-D points) plus an .npz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder written by `scorediff train`, or a local diffusers pipeline folder "
                        "(model_index.json with unet/ and scheduler/; Stable-Diffusion-style with text_encoder/, "
                        "tokenizer/ and vae/ as well) sampled with any scorediff sampler")
    parser.add_argument("--sampler", default=None, help="a sampler name (see `scorediff samplers`); default: the run's")
    parser.add_argument("--steps", type=int, default=None, help="number of sampler steps; default: the run's")
    parser.add_argument("--schedule", default=None,
                        help="time grid name (see scorediff.schedules); default: the grid `scorediff fit-schedule` "
                             "fitted for this sampler, step count and checkpoint if there is one, else the sampler's")
    parser.add_argument("--ending", default=None, choices=("t_min", "zero", "midpoint"),
                        help="how the grid ends: t_min (noise of size sigma(t_min) left in), zero (the last step "
                             "returns the denoiser's x0), midpoint (the probability-flow ODE's last stretch, "
                             "deterministic samplers); default: the sampler's (scorediff.samplers.default_ending)")
    parser.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help="a sampler option, repeatable, value parsed as JSON (e.g. --option eta=1.0, "
                             "--option s_churn=40, --option rtol=1e-4)")
    parser.add_argument("--num", type=int, default=64, help="number of samples (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default=None, help="output picture (.png), or an existing folder to write it in; the "
                        "raw samples go beside it as .npz (default: outputs/<run folder name>/sample_<sampler>_<steps>"
                        ".png under the current folder; never inside the run folder)")
    parser.add_argument("--class", dest="label", type=int, default=None,
                        help="class label for a class-conditional run (default: cycle through the classes)")
    parser.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                        help="a prompt for a text-conditioned run, repeatable (cycled over the samples); default: the "
                             "null prompt (unconditional)")
    parser.add_argument("--negative-prompt", default=None, metavar="TEXT",
                        help="with --guidance on a text-conditioned run: guide away from this prompt instead of the "
                             "null prompt")
    parser.add_argument("--guidance", type=float, default=None, metavar="SCALE",
                        help="classifier-free guidance scale for a run trained with label dropout: 1 = the "
                             "conditional model, 0 = unconditional, > 1 guided (default: none, i.e. 1)")
    parser.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                        help="guide only for times t in [LO, HI] (Kynkaanniemi et al. 2024); scale 1 elsewhere")
    parser.add_argument("--guidance-threshold", type=float, default=None, metavar="P",
                        help="dynamic thresholding of the guided x0 at percentile P, e.g. 0.995 (Saharia et al. "
                             "2022; images in [-1, 1])")
    parser.add_argument("--guidance-rescale", type=float, default=0.0, metavar="PHI",
                        help="std-rescale of the guided x0, PHI in [0, 1] (Lin et al. 2024; default 0 = off)")
    parser.add_argument("--classifier-guidance", type=float, default=None, metavar="SCALE",
                        help="classifier guidance (Dhariwal & Nichol 2021) with the run's noisy classifier "
                             "(`scorediff train-classifier`); works for unconditional runs too")
    parser.add_argument("--classifier", default=None, metavar="DIR",
                        help="the classifier folder for --classifier-guidance (default: RUN/classifier)")
    parser.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    parser.add_argument("--batch", type=int, default=None,
                        help="samples per batch (default: about 25088 values per batch, at most 1000: 32 of 28x28, "
                             "392 of 8x8; larger batches are slower on a CPU; scorediff.generate.auto_batch)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar over the steps")
    parser.add_argument("--cascade", nargs="+", default=[], metavar="SR_RUN",
                        help="cascaded generation: super-resolution stage runs applied in turn to the samples "
                             "(each sampled with its own run's sampler and steps)")
    parser.add_argument("--parallel", type=int, default=None, metavar="WINDOW",
                        help="parallel (Picard / ParaDiGMS) sampling: WINDOW model calls batched per round")
    parser.add_argument("--prefix", default=None, metavar="TEXT",
                        help="token runs (discrete diffusion): keep TEXT at the start of every sample and infill the rest")
    parser.add_argument("--parallel-tol", type=float, default=1e-3,
                        help="tolerance of parallel sampling, relative to each step's noise level (default 1e-3)")


def run(args: argparse.Namespace) -> int:
    """Under torchrun each rank draws its share of the batches (``scorediff.distributed``); rank 0 writes."""
    from ..distributed import setup, teardown

    world, device = setup(args.device)
    args.device = str(device)  # under torchrun on GPUs: this rank's own device
    try:
        return _run(args, world)
    finally:
        teardown(world)


def _run(args: argparse.Namespace, world) -> int:
    import numpy as np

    from .. import plotting
    from ..atomic import write_atomic
    from ..generate import Guidance, NonFiniteSamplesError, auto_batch, generate
    from ..runs import load_run
    from ..utils import parse_key_values

    options = parse_key_values(args.options, "--option")
    _check_numbers(args)
    if not (Path(args.run) / "config.json").is_file():  # not a run: a diffusers pipeline folder, or an error
        return _run_pipeline(args, options) if world.is_main else 0
    r = load_run(args.run, ema=not args.raw, device=args.device)
    if r.kind == "tokens":  # discrete diffusion / autoregressive: text (and pixel-token grids)
        from ._tokens import sample_run

        return sample_run(args, r) if world.is_main else 0
    stages = [load_run(p, ema=not args.raw, device=args.device) for p in args.cascade]
    sampler = args.sampler or r.config["sample"]["sampler"]
    steps = args.steps or int(r.config["sample"]["steps"])
    out_path = _out_path(args, r.path, sampler, steps)  # before the minutes of sampling
    _warn_long(r.denoiser, r, sampler, steps, args.batch or auto_batch(r.shape), args)
    guide = Guidance(args.guidance, args.guidance_interval, args.guidance_threshold, args.guidance_rescale,
                     args.classifier_guidance, args.classifier)
    try:
        out = generate(r, args.num, sampler=args.sampler, steps=args.steps, seed=args.seed, options=options,
                       schedule=args.schedule, ending=args.ending, label=args.label, guide=guide, batch=args.batch,
                       device=args.device, progress=args.progress, cascade_stages=stages,
                       parallel_window=args.parallel, parallel_tol=args.parallel_tol,
                       prompts=args.prompt, negative_prompt=args.negative_prompt, world=world)
    except NonFiniteSamplesError as e:
        print(f"scorediff sample: error: {e}", file=sys.stderr)
        return 1
    if out is None:  # not rank 0: its batches went to rank 0, which writes
        return 0
    if args.parallel is not None:
        print(f"parallel sampling: {out.rounds} rounds of up to {args.parallel} batched model calls", file=sys.stderr)
    note, warning = r.weights_note()  # after sampling: a bad option is one line alone
    print(note, file=sys.stderr)
    if out.fitted is not None and out.fitted.note:
        print(out.fitted.note, file=sys.stderr)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    path = out_path
    arrays = {"samples": out.x.numpy()}
    if out.latents is not None:
        arrays["latents"] = out.latents.numpy()
    if out.labels is not None:
        arrays["labels"] = out.labels.numpy()
    # which grid drew them: "fitted <file>" (its times beside it), the grid named, or "default"
    arrays["schedule"] = np.array(_grid_used(out.fitted, args.schedule or options.get("schedule")))
    if out.fitted is not None and out.fitted.times is not None:
        arrays["schedule_times"] = out.fitted.times.numpy()
    write_atomic(path.with_suffix(".npz"), lambda f: np.savez(f, **arrays))
    fitted = out.fitted is not None and out.fitted.times is not None
    title = (f"{out.sampler}, {out.steps} steps" + (", fitted grid" if fitted else "")
             + (f", {out.stages} super-resolution stage(s)" if out.stages else ""))
    try:
        plotting.save_samples(out.x, out.kind, path, title=title)  # written whole (scorediff.atomic)
    except OSError:  # a full disk: no .npz without its picture
        path.with_suffix(".npz").unlink(missing_ok=True)
        raise
    print(path)
    return 0


def _run_pipeline(args: argparse.Namespace, options: dict) -> int:
    """``scorediff sample FOLDER`` on a local diffusers pipeline folder (``interop.generate_pipeline``)."""
    import numpy as np
    import torch

    from .. import interop, plotting
    from ..atomic import write_atomic

    folder = Path(args.run)
    if not interop.is_pipeline_folder(folder):
        raise ValueError(f"{args.run!r} is not a run folder (no config.json) nor a diffusers pipeline folder (no "
                         "model_index.json, no unet/)")
    unsupported = [flag for flag, given in (
        ("--class", args.label is not None), ("--classifier-guidance", args.classifier_guidance is not None),
        ("--guidance-interval", args.guidance_interval is not None),
        ("--guidance-threshold", args.guidance_threshold is not None), ("--guidance-rescale", args.guidance_rescale),
        ("--cascade", args.cascade), ("--parallel", args.parallel is not None), ("--prefix", args.prefix is not None),
        ("--raw", args.raw), ("--ending", args.ending is not None)) if given]
    if unsupported:
        raise ValueError(f"{', '.join(unsupported)}: not available for a diffusers pipeline folder ({args.run!r})")
    if args.schedule is not None:
        options["schedule"] = args.schedule
    pipe = interop.load_pipeline(folder, device=args.device)
    sampler = args.sampler or interop.default_sampler(pipe)
    steps = args.steps or interop.DEFAULT_STEPS
    path = _out_path(args, folder, sampler, steps)  # before the sampling; never inside the folder read
    out = interop.generate_pipeline(pipe, args.num, prompts=args.prompt, negative_prompt=args.negative_prompt,
                                    guidance=args.guidance, sampler=sampler, steps=steps, seed=args.seed,
                                    batch=args.batch, options=options)
    bad = int((~torch.isfinite(out.x)).sum())
    if bad:
        print(f"scorediff sample: error: {bad} values of the samples of {args.run!r} are not finite (NaN or inf), "
              "nothing written", file=sys.stderr)
        return 1
    arrays = {"samples": out.x.numpy()}
    if out.latents is not None:
        arrays["latents"] = out.latents.numpy()
    if out.prompts is not None:
        arrays["prompts"] = np.array(out.prompts, dtype=str)
    write_atomic(path.with_suffix(".npz"), lambda f: np.savez(f, **arrays))
    title = f"{out.sampler}, {out.steps} steps" + (f", guidance {args.guidance:g}" if args.guidance is not None else "")
    try:
        plotting.save_samples(out.x.clamp(-1, 1), "images", path, title=title)
    except OSError:  # a full disk: no .npz without its picture
        path.with_suffix(".npz").unlink(missing_ok=True)
        raise
    print(path)
    return 0


def _grid_used(fitted, named) -> str:
    """The output's record of its grid: ``fitted <file>``, the grid named, or ``default``."""
    if fitted is not None and fitted.times is not None:
        return f"fitted {fitted.path}"
    return str(named) if named is not None else "default"


# -- fault handling (issue 22): inputs checked at the door, outputs never in a run folder, long runs announced --

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
LONG_SAMPLING_S = 120.0  # warn when sampling is estimated to take longer than this


def _check_numbers(args: argparse.Namespace) -> None:
    """Seeds and guidance scales the sampler could not use, named now rather than as an overflow or NaN later."""
    import math

    if not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed must be an integer in 0..{MAX_SEED}, got {args.seed}")
    for name, value in (("--guidance", args.guidance), ("--classifier-guidance", args.classifier_guidance),
                        ("--guidance-rescale", args.guidance_rescale), ("--parallel-tol", args.parallel_tol)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")


def _out_path(args: argparse.Namespace, run_path: Path, sampler: str, steps: int) -> Path:
    """The picture's path (see ``cli._outputs``), always ending in .png."""
    from ._outputs import output_path

    out = output_path(args.out, run_path, f"sample_{sampler}_{steps}.png", reads=tuple(Path(p) for p in args.cascade))
    if out.suffix.lower() != ".png":
        out = out.with_suffix(out.suffix + ".png") if out.suffix else out.with_suffix(".png")
    return out


def _warn_long(denoiser, r, sampler: str, steps: int, batch: int, args: argparse.Namespace) -> None:
    """For a long sampling job, one timed model call gives an estimate of the whole, printed as a warning."""
    import math
    import time

    import torch

    from ..samplers import SAMPLERS

    nfe = SAMPLERS[sampler].info.nfe_per_step if sampler in SAMPLERS else 1
    nfe = nfe if math.isfinite(nfe) else 1
    batches = math.ceil(args.num / batch)
    calls = round(steps * nfe * batches)
    if calls < 1000:  # a few seconds at most on any run we ship: no measurement needed
        return
    x = torch.zeros((min(batch, args.num), *r.shape), device=args.device)
    t = torch.full((len(x),), 0.5 * r.process.t_max, device=args.device)
    y = torch.zeros(len(x), dtype=torch.long, device=args.device)
    start = time.perf_counter()
    try:
        with torch.enable_grad() if args.classifier_guidance is not None else torch.no_grad():
            denoiser(x, t, y=y) if (r.class_conditional or args.classifier_guidance is not None) else denoiser(x, t)
    except Exception:  # an estimate only: the sampling itself reports real errors
        return
    per_call = time.perf_counter() - start
    total = per_call * calls
    if total > LONG_SAMPLING_S:
        print(f"warning: {steps} steps x {nfe:g} model call(s) per step x {batches} batch(es) = {calls} model calls, "
              f"about {total / 60:.0f} minutes at {per_call * 1000:.3g} ms per call (measured once); Ctrl-C stops",
              file=sys.stderr)

