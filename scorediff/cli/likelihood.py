"""``scorediff likelihood RUN --data NAME --method ode|vlb [--probes K] [--num N] [--rtol R]``.

Prints the mean log-likelihood in nats, bits/dim and their standard errors over the evaluated examples.
Images are evaluated as 8-bit data (uniform dequantization, the [0, 255] -> [-1, 1] log-det included);
points as continuous data (bits/dim = -log p / (D ln 2) of the density). ``--oracle ring2d|mixture64``
evaluates the exact denoiser of an analytic mixture instead of a run (its data drawn from the mixture),
so the command can be checked against the closed-form log p. Under ``torchrun`` each rank evaluates its
own shard and the results are gathered at the end.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "log-likelihood (nats) and bits/dim of data under a trained run (probability-flow ODE or DDPM bound)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", default=None, help="a run folder written by `scorediff train`")
    parser.add_argument("--oracle", choices=["ring2d", "mixture64"], default=None,
                        help="use an analytic mixture's exact denoiser instead of a run")
    parser.add_argument("--process", default="vp", help="with --oracle: the process name (default vp)")
    parser.add_argument("--data", default=None, help="dataset name (default: the run's training data)")
    parser.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a dataset option, repeatable (default: the run's options when --data is not given)")
    parser.add_argument("--method", choices=["ode", "vlb"], default="ode",
                        help="ode: probability-flow ODE (any process); vlb: DDPM bound (vp-discrete)")
    parser.add_argument("--trace", choices=["exact", "hutchinson"], default=None,
                        help="divergence: exact (D backward passes) or hutchinson (default: exact if D <= 16)")
    parser.add_argument("--probes", type=int, default=1, help="Hutchinson probes per example (default 1)")
    parser.add_argument("--noise", choices=["rademacher", "gaussian"], default="rademacher", help="probe distribution")
    parser.add_argument("--dequantize", type=int, default=1, help="uniform dequantizations per image (default 1)")
    parser.add_argument("--num", type=int, default=256, help="number of examples (default 256)")
    parser.add_argument("--batch", type=int, default=64, help="examples per ODE solve (default 64)")
    parser.add_argument("--rtol", type=float, default=1e-5, help="ODE relative tolerance (default 1e-5)")
    parser.add_argument("--atol", type=float, default=1e-5, help="ODE absolute tolerance (default 1e-5)")
    parser.add_argument("--stride", type=int, default=None, help="vlb: evaluate the strided sub-chain")
    parser.add_argument("--variance", choices=["beta", "beta_tilde"], default="beta", help="vlb: reverse variance")
    parser.add_argument("--seed", type=int, default=0, help="seed for data subset, dequantization and probes")
    parser.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--json", default=None, help="also write the results (and per-example values) to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--elbo-samples", type=int, default=16,
                        help="token runs: Monte Carlo times per sequence of the discrete diffusion bound (default 16)")


def _data_options(items: list[str]) -> dict:
    from ..utils import parse_key_values

    return parse_key_values(items, "--data-option")


def _load(args):
    """(denoiser, process, x, info, mix): the model and the examples to evaluate (x in the model's coordinates)."""
    import torch

    from .. import analytic, processes

    g = torch.Generator().manual_seed(args.seed)
    if args.oracle is not None:
        if args.run is not None:
            raise ValueError("give either a RUN folder or --oracle, not both")
        mix = analytic.ring2d() if args.oracle == "ring2d" else analytic.mixture64()
        process = processes.make(args.process)
        return mix.denoiser(process), process, mix.sample(args.num, g).to(torch.float64), None, mix
    if args.run is None:
        raise ValueError("give a RUN folder (written by `scorediff train`) or --oracle ring2d|mixture64")
    from .. import data
    from ..runs import load_run

    r = load_run(args.run, ema=not args.raw, device=args.device)
    if r.kind == "tokens":  # bits/token of the test split (discrete diffusion bound or autoregressive)
        return None, r, None, None, None
    r.require_task("diffusion", "scorediff likelihood")
    if r.latent:
        raise ValueError(f"scorediff likelihood: run {args.run!r} is a latent diffusion model; its decoder is not "
                         "invertible, so the likelihood of the data cannot be computed from it (the latent model's "
                         "likelihood of latents is scorediff.likelihood.log_likelihood on encoded data)")
    if args.data is None:
        name, opts = r.config["data"]["name"], dict(r.config["data"]["options"])
        opts.update(_data_options(args.data_option))
    else:
        name, opts = args.data, _data_options(args.data_option)
    ds = data.make(name, **opts)
    if not hasattr(ds, "x"):
        xs = torch.stack([ds[i][0] for i in range(min(len(ds), 4 * args.num))])
    else:
        xs = ds.x
    if tuple(xs.shape[1:]) != r.shape:
        raise ValueError(f"data {name!r} has examples of shape {tuple(xs.shape[1:])}, the run expects {r.shape}")
    idx = torch.randperm(xs.shape[0], generator=g)[: args.num]
    return r.denoiser, r.process, xs[idx], ds.info, None


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import likelihood as L
    from ..processes.vp import VPDiscrete

    if args.num < 1 or args.batch < 1:
        raise ValueError(f"--num and --batch must be >= 1, got {args.num} and {args.batch}")
    if args.probes < 1 or args.dequantize < 1:
        raise ValueError(f"--probes and --dequantize must be >= 1, got {args.probes} and {args.dequantize}")
    if args.method == "vlb" and args.stride is not None and args.stride < 1:
        raise ValueError(f"--stride must be >= 1, got {args.stride}")
    denoiser, process, x, info, mix = _load(args)
    if denoiser is None:  # a token run: under torchrun rank 0 computes and writes (as ``sample`` does for tokens)
        from .. import distributed as ddp
        from ._tokens import likelihood_run

        world, _ = ddp.setup(args.device)
        try:
            return likelihood_run(args, process, _data_options(args.data_option), args.elbo_samples) \
                if world.is_main else 0
        finally:
            ddp.teardown(world)
    if args.method == "vlb" and not isinstance(process, VPDiscrete):
        raise ValueError(f"--method vlb needs a vp-discrete process, got '{process.name}'")

    from .. import distributed as ddp

    world, _ = ddp.setup(args.device)
    images = info is not None and info.kind == "images"
    res = L.evaluate_dataset(denoiser, process, x, images=images, levels=info.levels if images else 256,
                             method=args.method, batch=args.batch, seed=args.seed, device=args.device, trace=args.trace,
                             probes=args.probes, noise=args.noise, rtol=args.rtol, atol=args.atol,
                             dequantize=args.dequantize, variance=args.variance, stride=args.stride, mixture=mix,
                             progress=world.is_main and not args.no_progress)
    ddp.teardown(world)
    if not world.is_main:
        return 0
    result = res.summary()
    logp, levels = res.logp, res.levels
    bits = "8-bit data" if levels == 256 else f"data on {levels} levels"
    what = f"{bits}, dequantized" if images and args.method == "ode" else (bits if images else "continuous data")
    print(f"method {args.method} ({res.trace if args.method == 'ode' else args.variance}), {result['num']} examples, "
          f"{what}")
    print(f"log-likelihood  {result['logp_nats']:.4f} nats  (standard error {result['logp_stderr']:.4f} over examples)")
    print(f"bits/dim        {result['bits_per_dim']:.4f}       (standard error {result['bpd_stderr']:.4f})")
    if not torch.isnan(res.stderr).all():
        print(f"per-example Hutchinson standard error (mean) {res.stderr.nanmean().item():.4f} nats")
    if res.exact is not None:
        exact = res.exact
        if args.method == "ode":
            print(f"exact log p_t_min (oracle) {exact.mean().item():.4f} nats; mean error {(logp - exact).mean().item():+.2e}")
        else:
            print(f"exact log p0 (oracle) {exact.mean().item():.4f} nats; the bound's gap {(exact - logp).mean().item():.4f}")
    if args.json:
        result["per_example_logp"] = logp.tolist()
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    sys.stdout.flush()
    return 0
