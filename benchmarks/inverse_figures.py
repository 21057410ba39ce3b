"""The README's inpainting and SDEdit figures, from a trained digits run.

    scorediff train --out runs/digits            # the default digits model, a few minutes on a CPU
    python benchmarks/inverse_figures.py runs/digits [--out docs/img]

inverse_inpaint.png: one row per test digit (held-out rows of scikit-learn's digits): the digit, the input
with its right half unknown (black), then two completions each by replace, RePaint (j = 10, r = 10) and SMC
(64 particles per digit), all on 100 DDPM steps of the karras grid.
inverse_sdedit.png: one row per strength (0.25, 0.35, 0.45, 0.6) for a hand-drawn stroke "0" and "7": the guide,
then four edits each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from scorediff import data, inverse, plotting
from scorediff.training import load_run


def strokes() -> torch.Tensor:
    """Two crude stroke paintings in [-1, 1], (2, 1, 8, 8): a rectangle "0" and a "7", flat grey levels."""
    g = torch.full((2, 1, 8, 8), -1.0)
    g[0, 0, 1:7, 2] = g[0, 0, 1:7, 5] = 0.6
    g[0, 0, 1, 2:6] = g[0, 0, 6, 2:6] = 0.6
    g[1, 0, 1, 1:7] = 0.6
    for i in range(2, 7):
        g[1, 0, i, 7 - i] = 0.6
    return g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--out", default="docs/img")
    args = parser.parse_args()
    out = Path(args.out)
    r = load_run(args.run)
    den, proc = r.denoiser, r.process
    ds = data.make("digits")
    digits = torch.stack([ds[i][0] for i in (1790, 1791, 1792, 1793, 1794, 1796)])  # the last rows, 6 classes
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    mask[..., 4:] = False  # right half unknown
    n = len(digits)
    with torch.no_grad():
        known = digits.repeat_interleave(2, 0)
        rep = inverse.inpaint(den, proc, known, mask, method="replace", steps=100, schedule="karras", seed=0)
        rp = inverse.inpaint(den, proc, known, mask, method="repaint", steps=100, jumps=10, resample=10,
                                schedule="karras", seed=0)
        smc = inverse.inpaint(den, proc, digits.repeat_interleave(64, 0), mask, method="smc", steps=100,
                              schedule="karras", particles=64, seed=0)
    masked = torch.where(mask, digits, torch.full_like(digits, -1.0))
    rows = [torch.cat([digits[i : i + 1], masked[i : i + 1], rep[2 * i : 2 * i + 2], rp[2 * i : 2 * i + 2],
                       smc[64 * i : 64 * i + 2]]) for i in range(n)]
    plotting.save_image_grid(plotting.to_unit(torch.cat(rows)), out / "inverse_inpaint.png", nrow=8)
    guides = strokes()
    rows = []
    for strength in (0.25, 0.35, 0.45, 0.6):
        for g in guides:
            edits = inverse.sdedit(den, proc, g.expand(4, 1, 8, 8).contiguous(), strength, steps=100,
                                   schedule="karras", seed=1)
            rows.append(torch.cat([g[None], edits]))
    plotting.save_image_grid(plotting.to_unit(torch.cat(rows)), out / "inverse_sdedit.png", nrow=5)
    print(out / "inverse_inpaint.png", out / "inverse_sdedit.png")


if __name__ == "__main__":
    main()
