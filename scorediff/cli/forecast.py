"""``scorediff forecast RUN --context FILE --horizon H``: probabilistic forecasts with a series or video run."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "forecast the next steps (frames) of a series (video) with a trained run: samples and a fan chart"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder written by `scorediff train` on series or video data")
    parser.add_argument("--context", required=True,
                        help="the known past: series .npy/.npz (C, k) or (k,), or .csv (rows = steps, columns = "
                             "channels); video .npy (k, H, W) or (k, H, W, C) frames (uint8, or floats in [-1, 1])")
    parser.add_argument("--horizon", type=int, required=True, help="steps (frames) to forecast")
    parser.add_argument("--method", default=None,
                        help="conditional | repaint | replace | smc (default: conditional for a run trained with "
                             "conditioning.task, else repaint)")
    parser.add_argument("--guidance", type=float, default=1.0, metavar="SCALE",
                        help="classifier-free guidance on the context for a conditional run trained with "
                             "conditioning.p_uncond > 0: 1 = the conditional model (default), > 1 sharper")
    parser.add_argument("--num", type=int, default=100, help="sampled forecasts (default 100)")
    parser.add_argument("--sampler", default="ddpm", help="sampler (default ddpm)")
    parser.add_argument("--schedule", default="karras", help="time grid (default karras: even in noise level)")
    parser.add_argument("--steps", type=int, default=100, help="grid steps (default 100)")
    parser.add_argument("--jumps", type=int, default=10, help="RePaint jump length in steps (default 10)")
    parser.add_argument("--resample", type=int, default=10, help="RePaint passes per block (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--key", default=None, help="the array's name in an .npz context")
    parser.add_argument("--out", default=None,
                        help="output picture (.png), the samples beside it as .npz (default outputs/<run>/forecast_<method>.png)")
    parser.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")


def read_context(path: str, shape: tuple[int, ...], key: str | None = None):
    """A context file as (C, k) (series) or (C, k, H, W) (video, in [-1, 1]) for a run of example ``shape``."""
    import numpy as np
    import torch

    from ..data.base import to_unit
    from ..data.series import read_series_file

    arr = read_series_file(path, key)
    if len(shape) == 2:  # series
        if Path(path).suffix.lower() == ".csv":
            arr = arr.T  # rows are steps
        return torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float64)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"video context {path} has shape {arr.shape}; expected frames (k, H, W) or (k, H, W, C)")
    x = to_unit(arr) if arr.dtype == np.uint8 else torch.from_numpy(np.ascontiguousarray(arr)).float()
    return x.permute(3, 0, 1, 2)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..forecast import forecast_run
    from ..plotting import sequences as sequence_plots
    from ..runs import load_run
    from ._outputs import png_output_path

    r = load_run(args.run, ema=not args.raw)
    context = read_context(args.context, tuple(r.shape), args.key)
    method = args.method
    options = {"sampler": args.sampler, "steps": args.steps, "schedule": args.schedule, "seed": args.seed}
    if args.guidance != 1.0:
        options["guidance"] = args.guidance
    if method in (None, "repaint") and not (r.config.get("conditioning") or {}).get("task"):
        options.update(jumps=args.jumps, resample=args.resample)
    x = forecast_run(r, context, args.horizon, num=args.num, method=method, **options)
    used = method or ("conditional" if (r.config.get("conditioning") or {}).get("task") else "repaint")
    out = png_output_path(args.out, r.path, f"forecast_{used}.png")  # never into the run folder (cli._outputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out.with_suffix(".npz"), samples=x.numpy(), context=context.numpy())
    if r.info.get("kind") == "video":
        k = min(context.shape[1], 6)  # the last context frames, then each sample's forecast
        rows = torch.cat([context[:, -k:][None].expand(min(args.num, 8), -1, -1, -1, -1).float(), x[:8].float()], 2)
        sequence_plots.save_video_strip(rows, out)
    else:
        sequence_plots.save_fan_chart(context, x, out, title=f"{used}: {args.num} forecasts")
    median = x.median(0).values
    print(out)
    print("median forecast (channel 0): " + " ".join(f"{v:.4g}" for v in median[0].flatten()[: args.horizon]))
    return 0
