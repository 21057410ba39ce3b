"""``scorediff export RUN --diffusers DIR``: a run's U-Net and training setup as a diffusers folder.

The folder holds ``unet/`` (a ``UNet2DModel`` computing the same function as the run's network) and
``scheduler/`` (``DDPMScheduler`` for vp-discrete runs, with a ``DDPMPipeline`` ``model_index.json``;
``EDMEulerScheduler`` for edm runs). A run that does not map exactly is refused with one line naming
every mismatch (``scorediff.interop.to_diffusers``).
"""

from __future__ import annotations

import argparse

HELP = "export a run's network and training setup to another library's format (diffusers)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder written by `scorediff train`")
    parser.add_argument("--diffusers", required=True, metavar="DIR",
                        help="write a diffusers folder (unet/, scheduler/) here; it must be new or empty")
    parser.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA weights")


def run(args: argparse.Namespace) -> int:
    try:  # the optional extra, checked first: one line saying what to install (scorediff.cli.main)
        import diffusers  # noqa: F401
    except ImportError:
        raise ImportError("scorediff export --diffusers needs the diffusers package: "
                          "pip install 'scorediff[diffusers]'") from None
    from ..interop import save_diffusers
    from ..runs import load_run

    run = load_run(args.run, ema=not args.raw)
    print(save_diffusers(run.denoiser, run.shape, args.diffusers))
    return 0
