"""``scorediff eval RUN [--ref NAME --ref-option K=V ...] [--features raw|inception:PATH|classifier:PATH]``.

Draws ``--num`` samples from the run (EMA weights) with ``--sampler`` / ``--steps`` (default: the run's own
sampling settings, and a grid ``scorediff fit-schedule`` kept for them where it won its held-out check, as
``scorediff sample`` does; ``--schedule NAME`` overrides it; the JSON's ``schedule`` says which grid), embeds them and the reference data with the chosen features, and prints FID (Frechet distance
of the features), KID, precision / recall and the sliced W2 of the data; the same goes as JSON to ``--out``
(default ``outputs/<run folder name>/eval.json`` under the current folder). The reference defaults to the run's own data set with
``split=test``. Nothing is written into the run folder: a reader never modifies a run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "score a trained run on held-out data: FID, KID, precision/recall, sliced W2"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder written by `scorediff train`")
    parser.add_argument("--ref", default=None, metavar="NAME",
                        help="reference dataset name (default: the run's data set with split=test)")
    parser.add_argument("--ref-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a reference dataset option, repeatable (default: the run's options, split=test)")
    parser.add_argument("--features", default="raw",
                        help="raw (the data, flattened), inception:PATH (FID Inception-v3 weights file) or "
                             "classifier:PATH (a classifier from `scorediff train-classifier`); default raw")
    parser.add_argument("--num", type=int, default=1000, help="samples to draw (default 1000)")
    parser.add_argument("--sampler", default=None, help="sampler (default: the run's sample.sampler)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the run's sample.steps)")
    parser.add_argument("--schedule", default=None,
                        help="time grid name (see scorediff.schedules); default: the grid `scorediff fit-schedule` "
                             "fitted for this sampler, step count and checkpoint if it is used, else the sampler's")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples and the KID subsets")
    parser.add_argument("--batch", type=int, default=500, help="samples per sampler call (default 500)")
    parser.add_argument("--guidance", type=float, default=None, metavar="SCALE",
                        help="a text-conditioned run: classifier-free guidance scale on its prompts (default: the "
                             "run's eval.guidance, else none = 1); the prompts are drawn, seeded by --seed, from the "
                             "captions of the run's data set's test split")
    parser.add_argument("--out", default=None, help="JSON file to write, or an existing folder to write eval.json in "
                        "(default outputs/<run folder name>/eval.json here; never inside the run folder)")
    parser.add_argument("--accept-data-change", action="store_true",
                        help="evaluate even though the run's data files changed since it was trained (their "
                             "fingerprint in info.json differs)")
    parser.add_argument("--cache", default=None,
                        help="folder for cached reference features (default $SCOREDIFF_CACHE/eval or "
                             "~/.cache/scorediff/eval)")
    parser.add_argument("--no-cache", action="store_true", help="recompute the reference features")
    parser.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA weights")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _reference(args, run):
    """The reference data (N, *event) and a description of it."""
    from .. import data
    from .likelihood import _data_options

    if args.ref is None:
        name, options = run.config["data"]["name"], dict(run.config["data"].get("options") or {})
        if options.get("split") != "train":
            print(f"note: the run trained on all of {name!r}; its test split was seen in training. Train with "
                  f"--set data.options.split=train to score on unseen examples")
        options["split"] = "test"
        options.update(_data_options(args.ref_option))
    else:
        name, options = args.ref, _data_options(args.ref_option)
    ds = data.make(name, **options)
    shape = tuple(run.info["latent"]["image_shape"]) if run.latent else tuple(run.shape)  # decoded samples
    if tuple(ds.info.shape) != shape:
        raise ValueError(f"reference {name!r} has examples of shape {tuple(ds.info.shape)}, the run's are {shape}")
    import torch

    x = ds.x if hasattr(ds, "x") else torch.stack([ds[i][0] for i in range(len(ds))])
    return x, {"name": name, "options": options}


def _prompts(args, run, guidance: float | None):
    """(Denoiser, encode, prompts, description) of a text-conditioned run: ``--num`` captions of its data set's test
    split (``data.captions.eval_prompts``, seeded by --seed), guided at ``guidance``."""
    from .. import data
    from ..data.captions import eval_prompts
    from ..eval import prompted

    if guidance is not None and not run.config["text"]["dropout"] > 0:
        raise ValueError(f"--guidance needs a run trained with prompt dropout (text.dropout > 0); {str(run.path)!r} "
                         "has text.dropout = 0")
    name, options = run.config["data"]["name"], {**(run.config["data"].get("options") or {}), "split": "test"}
    prompts = eval_prompts(data.make(name, **options), args.num, args.seed, f"data set {name!r} (split test)")
    denoiser, encode = prompted(run.denoiser, run.text_encoder, guidance)
    return denoiser, encode, prompts, {"source": f"{name} split=test captions", "seed": args.seed,
                                       "guidance": guidance, "first": prompts[:5]}


def run(args: argparse.Namespace) -> int:
    """Under torchrun the ranks share drawing and embedding the samples; rank 0 scores and writes."""
    from ..distributed import setup, teardown

    world, device = setup(args.device)
    args.device = str(device)  # under torchrun on GPUs: this rank's own device
    try:
        return _run(args)
    finally:
        teardown(world)


def _run(args: argparse.Namespace) -> int:
    from ..eval import evaluate, make_features
    from ..runs import load_run
    from ._outputs import output_path

    run_dir = Path(args.run)
    out = output_path(args.out, run_dir, "eval.json")
    for what, path in (("--cache", Path(args.cache) if args.cache else None),):
        if path is not None and _inside(path, run_dir):
            raise ValueError(f"{what} {str(path)!r} lies inside the run folder {str(run_dir)!r}; "
                             f"scorediff eval never writes into a run")
    if args.num < 4:
        raise ValueError(f"--num must be >= 4, got {args.num}")
    from ..samplers import SAMPLERS

    if args.sampler is not None and args.sampler not in SAMPLERS:  # before the minutes of loading and sampling
        from ..utils import unknown

        raise unknown("sampler", args.sampler, SAMPLERS)
    r = load_run(run_dir, ema=not args.raw_weights, device=args.device)
    r.require_task("diffusion", "scorediff eval")
    if args.ref is None:  # the run's own data: the files must still be the ones it was trained on
        from ..runs.repair import check_data

        check_data(run_dir, r.config["data"].get("options") or {}, args.accept_data_change, "scorediff eval")
    reference, ref_desc = _reference(args, r)
    features = make_features(args.features, args.device)
    from ..generate import sampling_options

    # as `scorediff sample` draws: the run's options for its own sampler, a fitted grid where it is used
    sampler, steps, opts, fitted = sampling_options(r, args.sampler, args.steps, None, args.schedule)
    num_classes = int(r.info.get("num_classes", 0)) if r.class_conditional else 0
    denoiser, prompting = r.denoiser, {}
    guidance = args.guidance if args.guidance is not None else r.config.get("eval", {}).get("guidance")
    if r.text_encoder is not None:  # prompts from the run's own caption distribution (its test split)
        denoiser, encode, prompts, prompt_desc = _prompts(args, r, guidance)
        prompting = {"prompts": prompts, "encode": encode}
    elif args.guidance is not None:
        raise ValueError(f"--guidance: run {str(run_dir)!r} has no prompts (text.encoder); scorediff eval guides "
                         "text-conditioned runs")
    res = evaluate(denoiser, r.process, r.shape, reference, features, num=args.num, sampler=sampler, steps=steps,
                   seed=args.seed, batch_size=args.batch, num_classes=num_classes, device=args.device,
                   cache_dir=args.cache, use_cache=not args.no_cache, decode=r.decode if r.latent else None,
                   **prompting, **opts)
    if res is None:  # not rank 0: its samples and features are with rank 0
        return 0
    if fitted is not None and fitted.note:
        print(fitted.note)
    used = fitted is not None and fitted.times is not None
    res.update(run=str(run_dir), step=r.step, ema=r.ema, reference=ref_desc,
               schedule=f"fitted {fitted.path}" if used else str(opts.get("schedule") or "default"))
    if used:
        res["schedule_times"] = fitted.times.tolist()
    if prompting:
        res.update(prompts=prompt_desc)
    print(f"run {run_dir} (step {r.step}): {res['num']} samples ({sampler}, {steps} steps) vs {res['num_ref']} "
          f"reference examples of {ref_desc['name']!r}, {res['features']} features")
    if prompting:
        print(f"  prompts: {args.num} captions of the test split (e.g. {prompts[0]!r}), guidance "
              f"{'none' if guidance is None else format(guidance, 'g')}")
    print(f"  FID        {res['fid']:.4g}")
    print(f"  KID        {res['kid']:.4g} +- {res['kid_std']:.2g}")
    print(f"  precision  {res['precision']:.3f}")
    print(f"  recall     {res['recall']:.3f}")
    print(f"  sliced W2  {res['sliced_w2']:.4g} (data space)")
    from ..atomic import write_atomic

    write_atomic(out, json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0
