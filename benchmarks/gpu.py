"""Benchmark for a CUDA machine: training throughput and peak memory of scorediff's 35.7 M-parameter 32x32
U-Net (the ``ddpm-cifar10`` preset) against diffusers' ``UNet2DModel`` of the same layout and size, in the same
process, in fp32 and bf16 autocast, with and without ``torch.compile`` and channels_last (and fused AdamW for
ours); sampler overhead per step at batch 1 and 256 against diffusers' schedulers; and a host-sync count of
a sampling run. Prints one Markdown table per part. Under 10 minutes on one recent GPU (compilation is most of it;
``--no-compile`` skips those rows).

Training step (both networks alike): eps-prediction MSE on x_t = cos(pi t / 2) x0 + sin(pi t / 2) eps with
t ~ U(0, 1), AdamW (lr 1e-4), batch ``--batch`` of 3x32x32; images/s over ``--steps`` steps after
``--warmup`` steps (the compilation is in ``warmup_s``); peak memory is ``torch.cuda.max_memory_allocated``.
Sampler overhead: a network that costs nothing (x0_hat = x), so the time per step is the sampler's own
(scorediff.sample vs the diffusers scheduler's ``step`` loop), synchronised at the end of each run.
Host syncs: ``torch.cuda.set_sync_debug_mode("warn")`` counts the device-to-host synchronisations of one
scorediff.sample run with the U-Net (entry checks included).

    python benchmarks/gpu.py                 # CUDA: the full tables
    python benchmarks/gpu.py --smoke         # CPU, tiny network, seconds: checks the script runs (CI)
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unet_pair(preset: str, size: int, channels: int):
    """Our preset and a diffusers UNet2DModel of the same layout (channels per level, blocks, attention)."""
    from diffusers import UNet2DModel

    from scorediff import nets

    torch.manual_seed(0)
    ours = nets.make(preset, shape=(channels, size, size))
    c = ours.config
    levels, attn = len(c["channel_mult"]), set(c["attention_levels"])
    theirs = UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=c["num_res_blocks"],
        block_out_channels=tuple(c["channels"] * m for m in c["channel_mult"]),
        down_block_types=tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(levels)),
        up_block_types=tuple("AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(range(levels))),
        norm_num_groups=c.get("norm_groups", 32), dropout=c.get("dropout", 0.0),
    )
    return ours, theirs


def train_rate(net, call, device, batch: int, size: int, channels: int, steps: int, warmup: int, precision: str,
               channels_last: bool, compile_mode: str | None, fused: bool) -> dict:
    net = copy.deepcopy(net).to(device).train()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    fn = torch.compile(call(net), mode=compile_mode) if compile_mode else call(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, **({"fused": True} if fused else {}))
    g = torch.Generator(device).manual_seed(0)
    x0 = torch.rand(batch, channels, size, size, generator=g, device=device) * 2 - 1
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if precision == "bf16" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    w0 = time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
            warm_s = t0 - w0
        t = torch.rand(batch, generator=g, device=device)
        eps = torch.randn(x0.shape, generator=g, device=device)
        a, s = torch.cos(t * torch.pi / 2)[:, None, None, None], torch.sin(t * torch.pi / 2)[:, None, None, None]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.mse_loss(fn(a * x0 + s * eps, 1000 * t).float(), eps)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    sec = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"images_per_s": steps * batch / sec, "peak_gib": peak, "warmup_s": warm_s}


class Free:
    """A denoiser that costs nothing (x0_hat = x)."""

    def __call__(self, x, t, **cond):
        return x


def sampler_overhead(device, batches, steps: int, repeats: int) -> list[dict]:
    import diffusers

    from scorediff import processes, sample

    process = processes.make("vp-discrete")
    pairs = {"ddim": ("DDIMScheduler", {}), "dpm_solver_pp_2m": ("DPMSolverMultistepScheduler", {}),
             "unipc_bh2": ("UniPCMultistepScheduler", {})}
    rows = []
    for name, (cls, cfg) in pairs.items():
        for b in batches:
            x = torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)

            def ours(x=x, name=name):
                sample(Free(), process, x, sampler=name, steps=steps, seed=0, device=device)

            def theirs(x=x, cls=cls, cfg=cfg):
                sched = getattr(diffusers, cls)(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                                                beta_end=0.02, **cfg)
                sched.set_timesteps(steps, device=device)
                y = x * sched.init_noise_sigma
                for k in sched.timesteps:
                    y = sched.step(sched.scale_model_input(y, k), k, y).prev_sample

            times = {}
            for label, fn in (("ours", ours), ("theirs", theirs)):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fn()
                    best = float("inf")
                    for _ in range(repeats):
                        _sync(device)
                        t0 = time.perf_counter()
                        fn()
                        _sync(device)
                        best = min(best, time.perf_counter() - t0)
                times[label] = 1e6 * best / steps
            rows.append({"sampler": name, "peer": cls, "batch": b, "ours_us": times["ours"],
                         "theirs_us": times["theirs"]})
    return rows


def host_syncs(net, device, size: int, channels: int, steps: int) -> str:
    """Device-to-host synchronisations of one sampling run with the network (CUDA only)."""
    if device.type != "cuda":
        return "n/a (CPU: no device to synchronise with)"
    from scorediff import parameterizations, processes, sample
    from scorediff.parameterizations import NetDenoiser

    process = processes.make("edm")
    den = NetDenoiser(copy.deepcopy(net).to(device).eval(), process, parameterizations.make("edm"))
    x = process.prior_sample((4, channels, size, size), torch.Generator(device).manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            sample(den, process, x, sampler="heun", steps=steps, seed=0, device=device)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    n = sum("synchroniz" in str(w.message) for w in caught)
    return f"{n} synchronisation(s) in one {steps}-step Heun run ({2 * steps - 1} network calls)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny network, a few steps: the script runs (CI)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--compile-mode", default="max-autotune-no-cudagraphs",
                    help="torch.compile mode of the compiled rows (default max-autotune-no-cudagraphs)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        device, preset, size, channels = torch.device("cpu"), "unet-tiny", 8, 1
        batch, steps, warmup, compile_modes, batches, s_steps, repeats = 4, 2, 1, [None], (1, 4), 5, 1
    else:
        if not torch.cuda.is_available():
            sys.exit("benchmarks/gpu.py: no CUDA device here; use --smoke for the CPU check")
        device, preset, size, channels = torch.device("cuda"), "ddpm-cifar10", 32, 3
        batch, steps, warmup, batches, s_steps, repeats = args.batch, args.steps, args.warmup, (1, 256), 50, 5
        compile_modes = [None] if args.no_compile else [None, args.compile_mode]
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # the usual GPU setting
    ours, theirs = unet_pair(preset, size, channels)
    nets = {"scorediff " + preset: (ours, lambda m: m), "diffusers UNet2DModel": (theirs, lambda m: lambda x, t:
                                                                                 m(x, t).sample)}
    print(f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"torch {torch.__version__}, batch {batch}, {steps} timed steps after {warmup}\n")
    print("| network | params (M) | precision | channels_last | compile | fused AdamW | images/s | peak GiB | "
          "warm-up s | ours / diffusers |")
    print("|---|---:|---|---|---|---|---:|---:|---:|---:|")
    rates: dict[tuple, float] = {}
    for precision in ("fp32", "bf16"):
        for mode in compile_modes:
            for cl in (False, True):
                for label, (net, call) in nets.items():
                    for fused in ((False, True) if label.startswith("scorediff") else (False,)):
                        r = train_rate(net, call, device, batch, size, channels, steps, warmup, precision, cl, mode,
                                       fused)
                        key = (precision, mode, cl)
                        if not label.startswith("scorediff"):
                            rates[key] = r["images_per_s"]
                        ratio = ""
                        if label.startswith("scorediff") and not fused:
                            rates[("ours",) + key] = r["images_per_s"]
                        params = sum(p.numel() for p in net.parameters()) / 1e6
                        print(f"| {label} | {params:.2f} | {precision} | {'yes' if cl else 'no'} | {mode or 'no'} | "
                              f"{'yes' if fused else 'no'} | {r['images_per_s']:.1f} | {r['peak_gib']:.2f} | "
                              f"{r['warmup_s']:.1f} | {ratio} |", flush=True)
                key = (precision, mode, cl)
                if ("ours",) + key in rates and key in rates:
                    print(f"| ratio ours / diffusers | | {precision} | {'yes' if cl else 'no'} | {mode or 'no'} | no | | "
                          f"| | {rates[('ours',) + key] / rates[key]:.2f} |", flush=True)
    print(f"\n### Sampler overhead per step (free network, (B, 3, 32, 32), {s_steps} steps, best of {repeats})\n")
    print("| sampler | diffusers scheduler | batch | ours µs/step | diffusers µs/step | ours / diffusers |")
    print("|---|---|---:|---:|---:|---:|")
    for r in sampler_overhead(device, batches, s_steps, repeats):
        print(f"| {r['sampler']} | {r['peer']} | {r['batch']} | {r['ours_us']:.0f} | {r['theirs_us']:.0f} | "
              f"{r['ours_us'] / r['theirs_us']:.2f} |", flush=True)
    print(f"\nhost syncs: {host_syncs(ours, device, size, channels, 10)}")


if __name__ == "__main__":
    main()
