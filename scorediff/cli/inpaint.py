"""``scorediff inpaint RUN --image x.png --mask m.png --method repaint``: complete the masked part of an image.

On a series or video run, ``--image`` is the series (.npy/.npz (C, L), .csv rows = steps) or clip (.npy
(T, H, W[, C])) with its missing entries NaN, or marked False in ``--mask`` (a .npy of the same shape);
``scorediff.forecast.impute_run`` fills them in the data's units and an imputation plot is written."""

from __future__ import annotations

import argparse

from ._outputs import png_output_path

HELP = "fill in the unknown pixels of an image with a trained image model (replace, RePaint or SMC)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder written by `scorediff train` (an image model)")
    parser.add_argument("--image", required=True, help="the image to complete (.png etc.), the run's size")
    parser.add_argument("--mask", default=None, help="a mask image of the same size: white (>= 128) = known pixel "
                        "(series / video: optional .npy, True = known; default: the non-NaN entries)")
    parser.add_argument("--method", default=None, help="replace | repaint | smc, or conditional for a run trained "
                        "with conditioning.task (default repaint; conditional for such runs)")
    parser.add_argument("--sampler", default="ddpm", help="the sampler for replace / repaint (default ddpm)")
    parser.add_argument("--schedule", default="karras",
                        help="time grid (see scorediff.schedules; default karras: even in noise level on every process)")
    parser.add_argument("--steps", type=int, default=None,
                        help="grid steps (default: per method, replace 400, repaint 200, smc 400; protocols 5b and 5d)")
    parser.add_argument("--jumps", type=int, default=10, help="RePaint jump length in steps (default 10)")
    parser.add_argument("--resample", type=int, default=10, help="RePaint passes per block (default 10)")
    parser.add_argument("--guidance", type=float, default=1.0, metavar="SCALE",
                        help="series / video, method conditional: classifier-free guidance on the observed entries "
                             "(1 = the conditional model, default)")
    parser.add_argument("--num", type=int, default=8, help="number of completions (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default=None, help="output picture (.png) or an existing folder, the raw samples beside it as .npz "
                        "(default: outputs/<run folder name>/inpaint_<method>.png; never inside the run)")
    parser.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")


def read_image(path: str, shape: tuple[int, ...], what: str = "image"):
    """An image file as a (C, H, W) tensor in [-1, 1] for a run of ``shape``; ValueError naming the file."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"the run's data are not images with 1 or 3 channels (shape {shape})")
    c, h, w = shape
    try:
        with Image.open(path) as img:
            img = img.convert("L" if c == 1 or what == "mask" else "RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{what} {path} could not be decoded ({e.__class__.__name__})") from None
    if img.size != (w, h):
        raise ValueError(f"{what} {path} is {img.size[0]}x{img.size[1]} pixels, the run's images are {w}x{h}")
    a = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    a = a[None] if a.ndim == 2 else a.permute(2, 0, 1)
    return a * 2 - 1


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .. import inverse, plotting
    from ..runs import load_run
    from ..utils import cycle_labels

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    r = load_run(args.run, ema=not args.raw)
    if r.info.get("kind") in ("series", "video"):
        return _run_sequence(args, r)
    if args.guidance != 1.0:
        raise ValueError("--guidance applies to series and video runs trained with conditioning.task (method "
                         "conditional); this is an image run")
    args.method = args.method or "repaint"
    if args.method not in inverse.INPAINT_METHODS:
        raise ValueError(f"--method {args.method!r} unknown; one of: {', '.join(inverse.INPAINT_METHODS)}")
    if args.mask is None:
        raise ValueError("--mask is required for an image run (a mask image: white = known pixel)")
    image = read_image(args.image, r.shape)
    mask = read_image(args.mask, r.shape, what="mask")[:1] > 0  # white = known, one mask for all channels
    mask = mask.expand(r.shape)
    known = image.expand(args.num, *r.shape).contiguous()
    cond = {"y": cycle_labels(0, args.num, int(r.info.get("num_classes") or 1))} if r.class_conditional else None
    x = inverse.inpaint(r.denoiser, r.process, known, mask, method=args.method, sampler=args.sampler,
                        steps=args.steps, schedule=args.schedule, jumps=args.jumps, resample=args.resample,
                        seed=args.seed, cond=cond)
    out = png_output_path(args.out, r.path, f"inpaint_{args.method}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out.with_suffix(".npz"), samples=x.numpy(), image=image.numpy(), mask=mask.numpy())
    shown = torch.where(mask, image, torch.full_like(image, -1.0))  # the input, unknown pixels black
    plotting.save_image_grid(plotting.to_unit(torch.cat([image[None], shown[None], x])), out, nrow=args.num + 2)
    print(out)
    return 0


def _run_sequence(args: argparse.Namespace, r) -> int:
    """Imputation / interpolation on a series or video run (module docstring)."""
    import numpy as np
    import torch

    from ..data.series import read_series_file
    from ..forecast import impute_run
    from ..plotting import sequences as sequence_plots
    from .forecast import read_context

    shape = tuple(r.shape)
    observed = read_context(args.image, shape)
    mask = None
    if args.mask is not None:
        mask = torch.from_numpy(np.asarray(read_series_file(args.mask)) != 0)
        if len(shape) == 4 and mask.ndim == 3:
            mask = mask[None]
    options = {"sampler": args.sampler, "steps": args.steps, "schedule": args.schedule, "seed": args.seed}
    if args.guidance != 1.0:
        options["guidance"] = args.guidance
    conditional = bool((r.config.get("conditioning") or {}).get("task"))
    if args.method in (None, "repaint") and not conditional:
        options.update(jumps=args.jumps, resample=args.resample)
    x = impute_run(r, observed, mask, num=args.num, method=args.method, **options)
    used = args.method or ("conditional" if conditional else "repaint")
    out = png_output_path(args.out, r.path, f"inpaint_{used}.png")  # never into the run folder
    out.parent.mkdir(parents=True, exist_ok=True)
    m = torch.isfinite(observed) if mask is None else mask
    np.savez(out.with_suffix(".npz"), samples=x.numpy(), observed=observed.numpy(), mask=m.numpy())
    if len(shape) == 4:
        shown = torch.where(m, observed, torch.full_like(observed, -1.0)).float()
        sequence_plots.save_video_strip(torch.cat([shown[None], x[:7].float()]), out)
    else:
        sequence_plots.save_imputation(observed, m, x, out, title=f"{used}: {args.num} imputations")
    print(out)
    return 0
