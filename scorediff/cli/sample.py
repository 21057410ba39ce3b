"""``scorediff sample RUN --sampler NAME --steps N --num K --seed S --out FILE [--class Y --guidance S]``."""

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
    parser.add_argument("--out", default=None, help="output picture (.png); the raw samples go beside it as .npz "
                        "(default: RUN/samples/sample_<sampler>_<steps>.png)")
    parser.add_argument("--class", dest="label", type=int, default=None,
                        help="class label for a class-conditional run (default: cycle through the classes)")
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
                        help=f"samples per batch (default: about {AUTO_BATCH_ELEMENTS} values per batch, at most "
                             f"{MAX_AUTO_BATCH}: 32 of 28x28, 392 of 8x8; larger batches are slower on a CPU)")
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
    from ..samplers import parallel, sample
    from ..training import load_run
    from ..training.components import check_sampler_options

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    r = load_run(args.run, ema=not args.raw, device=args.device)
    if r.kind == "tokens":  # discrete diffusion / autoregressive: text (and pixel-token grids)
        from ._tokens import sample_run

        return sample_run(args, r)
    r.require_task("diffusion", "scorediff sample")
    stages = [load_run(p, ema=not args.raw, device=args.device) for p in args.cascade]
    for st in stages:
        st.require_task("super_resolution", "scorediff sample --cascade")
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
    if args.ending is not None:
        options["ending"] = args.ending
    check_sampler_options(sampler, options)
    fitted = None
    named = args.schedule is not None or any(item.partition("=")[0] == "schedule" for item in args.options)
    if not named:  # a grid fitted by `scorediff fit-schedule` for this sampler, step count and checkpoint
        # replaces the default grid (and one in the run's config): fitting it was an explicit act for this run
        from ..training.fitted import lookup

        fitted = lookup(r, sampler, steps)
        if fitted.times is not None:
            options["schedule"] = fitted.times
            options.pop("schedule_options", None)  # they shape a named grid; a fitted grid is given whole
    num_classes = int(r.info.get("num_classes") or 0)
    clf = None
    if args.classifier is not None and args.classifier_guidance is None:
        raise ValueError("--classifier needs --classifier-guidance SCALE")
    if args.classifier_guidance is not None:
        from ..guidance import load_classifier

        if args.guidance is not None:
            raise ValueError("give --guidance (classifier-free) or --classifier-guidance, not both")
        if not args.classifier_guidance >= 0:  # before the classifier is loaded
            raise ValueError(f"classifier guidance scale must be >= 0, got {args.classifier_guidance:g}")
        if r.class_conditional and not r.config["net"]["label_dropout"] > 0:
            raise ValueError(f"--classifier-guidance needs an unconditional model; run {args.run!r} is "
                             f"class-conditional without label dropout, so it has none")
        clf = load_classifier(args.classifier or r.path / "classifier", device=args.device)
        if clf.shape != r.shape:
            raise ValueError(f"classifier {str(args.classifier or r.path / 'classifier')!r} is for data of shape "
                             f"{clf.shape}, run {args.run!r} makes {r.shape}")
        if clf.process.config() != r.process.config():  # the same t must mean the same noise level
            raise ValueError(f"classifier was trained for process {clf.process.config()}, run {args.run!r} uses "
                             f"{r.process.config()}")
        num_classes = clf.num_classes
    if args.label is not None:
        if not r.class_conditional and clf is None:
            raise ValueError(f"--class given but run {args.run!r} is not class-conditional")
        if not 0 <= args.label < num_classes:
            raise ValueError(f"--class must lie in 0..{num_classes - 1}, got {args.label}")
    if args.parallel is not None and args.parallel < 1:
        raise ValueError(f"--parallel WINDOW must be >= 1, got {args.parallel}")
    denoiser = r.denoiser
    extras = [name for name, given in (("--guidance-interval", args.guidance_interval is not None),
                                       ("--guidance-threshold", args.guidance_threshold is not None),
                                       ("--guidance-rescale", args.guidance_rescale != 0.0)) if given]
    if extras and args.guidance is None:
        raise ValueError(f"{', '.join(extras)} need(s) --guidance SCALE")
    if args.guidance is not None:
        from ..guidance import classifier_free

        if not r.class_conditional:
            raise ValueError(f"--guidance given but run {args.run!r} is not class-conditional (net.class_conditional)")
        if not r.config["net"]["label_dropout"] > 0:
            raise ValueError(f"--guidance needs a run trained with label dropout (net.label_dropout > 0) for its "
                             f"unconditional branch; {args.run!r} has net.label_dropout = 0")
        denoiser = classifier_free(r.denoiser, args.guidance, interval=args.guidance_interval,
                                   rescale=args.guidance_rescale, threshold=args.guidance_threshold)
    if clf is not None:
        from ..guidance import classifier

        denoiser = classifier(r.denoiser, r.process, clf.log_prob, args.classifier_guidance)
    batch = args.batch or auto_batch(r.shape)
    generator = torch.Generator(args.device).manual_seed(args.seed)
    chunks, labels, rounds = [], [], 0
    for start in range(0, args.num, batch):
        n = min(batch, args.num - start)
        cond = {}
        if r.class_conditional or clf is not None:
            y = (torch.full((n,), args.label) if args.label is not None
                 else torch.arange(start, start + n) % num_classes).to(args.device)
            cond, labels = {"y": y}, labels + [y.cpu()]
        if args.parallel is not None:  # each batch from its own seed (seed + index of its first sample)
            xb, pinfo = parallel(denoiser, r.process, (n, *r.shape), sampler=sampler, steps=steps, device=args.device,
                                 seed=args.seed + start, window=args.parallel, tol=args.parallel_tol, cond=cond,
                                 progress=args.progress, **options)
            chunks.append(xb.cpu())
            rounds += pinfo["rounds"]
            continue
        chunks.append(sample(denoiser, r.process, (n, *r.shape), sampler=sampler, steps=steps, seed=args.seed,
                             generator=generator, device=args.device, progress=args.progress, cond=cond,
                             **options).cpu())
    if args.parallel is not None:
        print(f"parallel sampling: {rounds} rounds of up to {args.parallel} batched model calls", file=sys.stderr)
    x = torch.cat(chunks)
    kind, latents = r.kind, None
    if r.latent:  # latent diffusion: the picture and "samples" hold the decoded data, "latents" the model's
        latents = x
        x, kind = torch.cat([r.decode(x[i:i + batch].to(args.device)).cpu()
                             for i in range(0, len(x), batch)]), r.info["latent"]["image_kind"]
    if stages:
        x = _cascade(x, stages, labels, args, batch)
    bad = int((~torch.isfinite(x.flatten(1))).any(1).sum())
    if bad:  # never hand out NaN pictures as if they were samples
        print(f"scorediff sample: error: {bad} of {len(x)} samples are not finite (NaN or inf), nothing written; "
              f"the weights of run {args.run!r} (step {r.step}) may have diverged", file=sys.stderr)
        return 1
    note, warning = weights_note(r.path, args.raw, r.step)  # after sampling: a bad option is one line alone
    print(note, file=sys.stderr)
    if fitted is not None and fitted.note:
        print(fitted.note, file=sys.stderr)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    out = Path(args.out) if args.out else r.path / "samples" / f"sample_{sampler}_{steps}.png"
    if out.suffix.lower() != ".png":
        out = out.with_suffix(out.suffix + ".png") if out.suffix else out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"samples": x.numpy()}
    if latents is not None:
        arrays["latents"] = latents.numpy()
    if labels:
        arrays["labels"] = torch.cat(labels).numpy()
    np.savez(out.with_suffix(".npz"), **arrays)
    title = (f"{sampler}, {steps} steps" + (", fitted grid" if fitted is not None and fitted.times is not None else "")
             + (f", {len(stages)} super-resolution stage(s)" if stages else ""))
    plotting.save_samples(x, kind, out, title=title)
    print(out)
    return 0


def _cascade(x, stages, labels, args, batch: int):
    """Each super-resolution stage in turn on the samples x (batches of --batch, the stage run's own sampler)."""
    import torch

    from ..cascade import Stage, upsample

    y = torch.cat(labels) if labels else None
    for k, st in enumerate(stages, start=1):
        C, H, W = st.shape
        f = int(st.config["cascade"]["factor"])
        if tuple(x.shape[1:]) != (C, H // f, W // f):
            raise ValueError(f"--cascade {str(st.path)!r} upsamples {(C, H // f, W // f)} to {(C, H, W)}, but the "
                             f"previous stage gives {tuple(x.shape[1:])}")
        stage = Stage(st.denoiser, st.process, f, float(st.config["cascade"]["aug_level"]))
        s = st.config["sample"]
        out = []
        for i in range(0, len(x), batch):
            cond = {"y": y[i:i + batch].to(args.device)} if (y is not None and st.class_conditional) else {}
            out.append(upsample(stage, x[i:i + batch].to(args.device), sampler=s["sampler"], steps=int(s["steps"]),
                                seed=args.seed + 7919 * k + i, cond=cond, **s["options"]).cpu())
        x = torch.cat(out)
    return x
