"""Benchmark: training steps/s of the digits U-Net (``unet-digits``) on CPU, next to a diffusers
``UNet2DModel`` of the same layout (the preset's channels per level, one ResNet block per level,
attention at the lowest resolution, the same GroupNorm groups), in the same process, with the same
step: eps-prediction MSE on
x_t = alpha x0 + sigma eps, AdamW, batch 64 of 1x8x8, fp32. diffusers is only used here.

    python benchmarks/train_throughput.py [--threads N] [--steps 30] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F


def bench(net_call, params, batch: int, steps: int, warmup: int = 3) -> float:
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch, 1, 8, 8, generator=g) * 2 - 1
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        t = torch.rand(batch, generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a = torch.cos(t * torch.pi / 2)[:, None, None, None]
        s = torch.sin(t * torch.pi / 2)[:, None, None, None]
        loss = F.mse_loss(net_call(a * x0 + s * eps, 1000 * t), eps)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers import UNet2DModel

    from scorediff import nets

    torch.manual_seed(0)
    ours = nets.make("unet-digits", shape=(1, 8, 8))
    c = ours.config
    levels = len(c["channel_mult"])
    attn = set(c["attention_levels"])
    theirs = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=c["num_res_blocks"],
        block_out_channels=tuple(c["channels"] * m for m in c["channel_mult"]),
        down_block_types=tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(levels)),
        up_block_types=tuple("AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(range(levels))),
        norm_num_groups=c["norm_groups"],
    )
    rows = {}
    for name, net, call in [
        ("scorediff unet-digits", ours, lambda x, s: ours(x, s)),
        ("diffusers UNet2DModel", theirs, lambda x, s: theirs(x, s).sample),
    ]:
        n = sum(p.numel() for p in net.parameters())
        rate = bench(call, list(net.parameters()), args.batch, args.steps)
        rows[name] = {"parameters": n, "steps_per_s": rate, "examples_per_s": rate * args.batch,
                      "steps_per_s_x_Mparams": rate * n / 1e6}
    print(json.dumps({"threads": torch.get_num_threads(), "batch": args.batch, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
