"""CLD against VP and EDM: sample error against the number of model calls, on the closed-form mixtures.

    python benchmarks/cld.py                 # about 10 minutes on one thread
    python benchmarks/cld.py --nfe 10 20     # a smoke run

Critically-damped Langevin diffusion (Dockhorn et al. 2022; ``scorediff.processes.cld``) with its SSCS and
Euler-Maruyama samplers, next to VP (linear, Song et al. 2021) and EDM (Karras et al. 2022) with a stochastic sampler
(Euler-Maruyama, the like-for-like comparison) and the library's deterministic ones (VP: the default ``plms``; EDM:
``heun``), every sampler on its default grid, each with the exact denoiser of the same mixture (for CLD the exact
phase-space E[x0 | x_t, v_t]), float64, model calls counted. Problems and metrics (lower is better):

* ``ring2d`` (8 anisotropic 2-D Gaussians): sliced W2 (256 projections) of 2000 samples to 2000 fresh data draws; the
  floor (two fresh data draws) is printed.
* ``mixture64`` (64-D, ten components with a fine per-coordinate variance): the log-density gap
  E_p0[log p0] - mean log p0(samples) in nats (+ too spread, - too concentrated), 500 samples, |gap| reported.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import scorediff  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

import scorediff.analytic as A  # noqa: E402
from scorediff import processes  # noqa: E402
from scorediff.samplers import SAMPLERS, sample  # noqa: E402

ROWS = [("cld", "sscs"), ("cld", "cld_euler_maruyama"), ("vp", "euler_maruyama"), ("edm", "euler_maruyama"),
        ("vp", "plms"), ("edm", "heun")]


def run(nfes: list[int], n_ring: int, n_mix: int) -> None:
    torch.set_num_threads(1)
    ring, mix = A.ring2d(), A.mixture64()
    floor = float(A.sliced_wasserstein(ring.sample(n_ring, torch.Generator().manual_seed(1)),
                                       ring.sample(n_ring, torch.Generator().manual_seed(2)), 256,
                                       torch.Generator().manual_seed(3)))
    ref_ring = ring.sample(n_ring, torch.Generator().manual_seed(4))
    ref_lp = float(mix.log_prob(mix.sample(20000, torch.Generator().manual_seed(5))).mean())
    print(f"ring2d: sliced W2 to data (floor {floor:.4f}); mixture64: |log-density gap| in nats; columns: model calls")
    header = " | ".join(f"{n:>13d}" for n in nfes)
    print(f"| {'process / sampler':28s} | {header} |")
    print("|" + "-" * 30 + "|" + "|".join(["-" * 15] * len(nfes)) + "|")
    for pname, sname in ROWS:
        p = processes.make(pname)
        cells = []
        for nfe in nfes:
            steps = max(2, round(nfe / SAMPLERS[sname].info.nfe_per_step))
            d = ring.denoiser(p)
            x = sample(d, p, (n_ring, 2), sampler=sname, steps=steps, seed=0, dtype=torch.float64)
            sw = float(A.sliced_wasserstein(x, ref_ring, 256, torch.Generator().manual_seed(3)))
            d2 = mix.denoiser(p)
            y = sample(d2, p, (n_mix, 64), sampler=sname, steps=steps, seed=0, dtype=torch.float64)
            gap = ref_lp - float(mix.log_prob(y).mean())
            cells.append(f"{sw:6.3f} /{abs(gap):6.1f}" if abs(gap) < 1e4 else f"{sw:6.3f} /  >1e4")
            assert d.nfe == d2.nfe
        print(f"| {pname + ' / ' + sname:28s} | " + " | ".join(f"{c:>13s}" for c in cells) + " |", flush=True)
    print("cells: ring2d sliced W2 / mixture64 |gap| (nats); model calls counted (Heun's last step is one call)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50, 100, 200])
    ap.add_argument("--ring", type=int, default=2000, help="samples on ring2d")
    ap.add_argument("--mix", type=int, default=500, help="samples on mixture64")
    args = ap.parse_args()
    t0 = time.time()
    run(args.nfe, args.ring, args.mix)
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
