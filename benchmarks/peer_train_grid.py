"""Benchmark: a peer trainer at its defaults for the same CPU budget as the ``mnist-cpu`` measurement, side by side.

The peer is diffusers' ``examples/unconditional_image_generation/train_unconditional.py`` at its defaults
(Ho et al. 2020's DDPM: eps-prediction, linear betas over 1000 steps, simple loss), written out here because
the example script is not installed: its ``UNet2DModel`` (block_out_channels 128, 128, 256, 256, 512, 512,
two layers per block, attention at the fifth level), AdamW (lr 1e-4, betas (0.95, 0.999), weight decay 1e-6,
eps 1e-8), 500 linear warm-up steps then cosine decay over 100 epochs, batch 16, gradient clipping at 1,
no EMA (``--use_ema`` is off by default). Two departures, both in the peer's favour: one grey channel instead
of RGB, and resolution 32 instead of its default 64 (28 does not go through five halvings). The data are the
1200 training digits enlarged to 28x28 (bilinear, as ``train_default.py --upsample 28``), then resized to 32.

It trains until ``--cpu-seconds`` of process CPU time (default 300 = the 5-minute ``mnist-cpu`` measurement,
which ran on one thread), then draws ``--num`` samples with DDIM, 50 steps (from the same scheduler
config; the example's own 1000-step DDPM sampling would take far longer than the training on a CPU), and
writes a figure: ``--ours`` (a grid image of our run, e.g. docs/img/mnist_cpu_samples.png) next to the peer's.

    python benchmarks/peer_train_grid.py [--cpu-seconds 300] [--num 36] [--ours docs/img/mnist_cpu_samples.png]
                                         [--out docs/img/peer_train_grid.png]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # train_default's split
sys.path.insert(0, str(ROOT.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-seconds", type=float, default=300.0)
    ap.add_argument("--num", type=int, default=36)
    ap.add_argument("--ours", default=str(ROOT.parent / "docs" / "img" / "mnist_cpu_samples.png"))
    ap.add_argument("--out", default=str(ROOT.parent / "docs" / "img" / "peer_train_grid.png"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from train_default import split_digits

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    x_tr = split_digits()[0]
    images = torch.as_tensor(x_tr, dtype=torch.float32).reshape(-1, 1, 8, 8) * 2 - 1
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)

    model = UNet2DModel(
        sample_size=32, in_channels=1, out_channels=1, layers_per_block=2,
        block_out_channels=(128, 128, 256, 256, 512, 512),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    )
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    batch, epochs = 16, 100
    steps_per_epoch = math.ceil(len(images) / batch)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=500,
                                                   num_training_steps=steps_per_epoch * epochs)
    g = torch.Generator().manual_seed(args.seed)
    step, losses, c0, w0 = 0, [], time.process_time(), time.perf_counter()
    model.train()
    while time.process_time() - c0 < args.cpu_seconds:
        perm = torch.randperm(len(images), generator=g)
        for i in range(0, len(images), batch):
            x0 = images[perm[i:i + batch]]
            noise = torch.randn(x0.shape, generator=g)
            t = torch.randint(0, 1000, (len(x0),), generator=g)
            loss = F.mse_loss(model(noise_scheduler.add_noise(x0, noise, t), t).sample, noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            step += 1
            losses.append(loss.item())
            if time.process_time() - c0 >= args.cpu_seconds:
                break
    train_cpu, train_wall = time.process_time() - c0, time.perf_counter() - w0

    model.eval()
    ddim = DDIMScheduler.from_config(noise_scheduler.config)
    ddim.set_timesteps(50)
    x = torch.randn((args.num, 1, 32, 32), generator=torch.Generator().manual_seed(args.seed))
    t0 = time.perf_counter()
    with torch.no_grad():
        for t in ddim.timesteps:
            x = ddim.step(model(x, t).sample, t, x).prev_sample
    sample_s = time.perf_counter() - t0
    x = F.interpolate(x.clamp(-1, 1), size=(28, 28), mode="area")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    k = int(math.ceil(math.sqrt(args.num)))
    tiles = np.ones((k * 30, k * 30))
    for j, img in enumerate(((x[:, 0] + 1) / 2).numpy()):
        r, c = divmod(j, k)
        tiles[r * 30 + 1:r * 30 + 29, c * 30 + 1:c * 30 + 29] = img
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    axes[0].imshow(np.asarray(Image.open(args.ours).convert("L")), cmap="gray")
    axes[0].set_title("scorediff mnist-cpu, 5 min (1038 steps)", fontsize=10)
    axes[1].imshow(tiles, cmap="gray", vmin=0, vmax=1)
    axes[1].set_title(f"diffusers train_unconditional defaults, {train_cpu:.0f} CPU s ({step} steps)", fontsize=10)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    Image.open(args.out).convert("L").save(args.out, optimize=True)  # grey: 60 % of the RGBA file
    print(json.dumps({"peer_steps": step, "peer_train_cpu_s": train_cpu, "peer_train_wall_s": train_wall,
                      "peer_lr_last": lr_scheduler.get_last_lr()[0], "peer_loss_last_10": float(np.mean(losses[-10:])),
                      "peer_parameters": sum(p.numel() for p in model.parameters()),
                      f"peer_sample_{args.num}_s": sample_s, "out": args.out}, indent=2))


if __name__ == "__main__":
    main()
