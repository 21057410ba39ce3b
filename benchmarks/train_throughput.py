"""Benchmark: training steps/s of the digits U-Net (``unet-digits``) on CPU, next to a diffusers
``UNet2DModel`` of the same layout (the preset's channels per level, one ResNet block per level,
attention at the lowest resolution, the same GroupNorm groups), in the same process, with the same
step: eps-prediction MSE on
x_t = alpha x0 + sigma eps, AdamW, batch 64 of 1x8x8, fp32. diffusers is only used here. Reports steps per
wall second and per CPU second of the process.

``--variants`` also times our network with AdamW's ``foreach`` and ``fused`` implementations and with
``channels_last`` memory format (candidate cheap wins; each is deterministic, so resume stays exact);
``--compile`` times ``torch.compile`` of our network (its compilation is the ``warmup_s`` of that row).
``--preset unet-28 --size 28`` (with ``--overrides`` JSON) measures another network at 28x28.

    python benchmarks/train_throughput.py [--threads N] [--steps 30] [--batch 64] [--variants] [--compile]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F


def bench(net_call, params, batch: int, steps: int, warmup: int = 3, size: int = 8, opt_kwargs: dict | None = None,
          channels_last: bool = False) -> float:
    opt = torch.optim.AdamW(params, lr=1e-4, **(opt_kwargs or {}))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch, 1, size, size, generator=g) * 2 - 1
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    w0 = time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup:
            t0, c0 = time.perf_counter(), time.process_time()
            warmup_s = t0 - w0  # with torch.compile: the compilation
        t = torch.rand(batch, generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a = torch.cos(t * torch.pi / 2)[:, None, None, None]
        s = torch.sin(t * torch.pi / 2)[:, None, None, None]
        loss = F.mse_loss(net_call(a * x0 + s * eps, 1000 * t), eps)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    # steps per wall second, and per CPU second of this process (fairer on a machine shared with other jobs)
    return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0), warmup_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--preset", default="unet-digits")
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--overrides", default="{}", help="JSON constructor options over the preset")
    ap.add_argument("--variants", action="store_true", help="also foreach / fused AdamW and channels_last")
    ap.add_argument("--compile", action="store_true", help="also torch.compile of our network (inductor, CPU)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers import UNet2DModel

    from scorediff import nets

    torch.manual_seed(0)
    ours = nets.make(args.preset, shape=(1, args.size, args.size), **json.loads(args.overrides))
    c = ours.config
    levels = len(c["channel_mult"])
    attn = set(c["attention_levels"])
    theirs = UNet2DModel(
        sample_size=args.size, in_channels=1, out_channels=1, layers_per_block=c["num_res_blocks"],
        block_out_channels=tuple(c["channels"] * m for m in c["channel_mult"]),
        down_block_types=tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(levels)),
        up_block_types=tuple("AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(range(levels))),
        norm_num_groups=c["norm_groups"],
    )
    import copy

    rows = {}
    cases = [(f"scorediff {args.preset}", ours, lambda x, s: ours(x, s), {}, False),
             ("diffusers UNet2DModel", theirs, lambda x, s: theirs(x, s).sample, {}, False)]
    if args.variants:
        for label, kw in (("foreach AdamW", {"foreach": True}), ("fused AdamW", {"fused": True})):
            net = copy.deepcopy(ours)
            cases.append((f"scorediff {args.preset}, {label}", net, net, kw, False))
        net = copy.deepcopy(ours).to(memory_format=torch.channels_last)
        cases.append((f"scorediff {args.preset}, channels_last", net, net, {}, True))
    if args.compile:
        net = copy.deepcopy(ours)
        cases.append((f"scorediff {args.preset}, torch.compile", net, torch.compile(net), {}, False))
    for name, net, call, kw, cl in cases:
        n = sum(p.numel() for p in net.parameters())
        rate, cpu_rate, warm_s = bench(call, list(net.parameters()), args.batch, args.steps, size=args.size,
                                       opt_kwargs=kw, channels_last=cl)
        rows[name] = {"parameters": n, "steps_per_s": rate, "steps_per_cpu_s": cpu_rate, "examples_per_s": rate * args.batch,
                      "steps_per_s_x_Mparams": rate * n / 1e6, "warmup_s": warm_s}
    print(json.dumps({"threads": torch.get_num_threads(), "batch": args.batch, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
