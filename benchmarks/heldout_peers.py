"""Held-out check of the defaults against diffusers' defaults: a problem no default was chosen on.

    python benchmarks/heldout_peers.py            # about 3 minutes on one thread
    python benchmarks/heldout_peers.py --starts 128 --nfe 10   # a smoke run

The problem the sampler-defaults issue was measured on: ``image64`` (benchmarks/defaults.py: an image-like 64-D
Gaussian mixture of 10 components with smooth means, rank-4 smooth covariances and a fine per-pixel variance), the
DDPM linear schedule (``vp-discrete``), the exact denoiser, the same starts x_T for every row, float64. Each of
scorediff's samplers runs with every default a user who names only the sampler and the budget gets
(``scorediff.samplers.sample(d, process, x_T, sampler=name, steps=NFE / nfe_per_step)``: the process-aware grid,
the default ending and order); diffusers' UniPC, DPM-Solver++(2M) and DDIM run with their library defaults
(``timestep_spacing`` "linspace", which starts at step 999; DDIM's default "leading" does not, so it runs
"trailing") and with "trailing".

Metrics (lower is better): RMS distance to the exact probability-flow ODE image of each start at sigma = 0
(``eval.bench.pf_ode_reference``; deterministic samplers only: the paired error, without a sampling floor), and
sliced W2 (256 projections) to as many draws of the data as there are starts (its floor, fresh data draws of the
same size, is printed).
Model calls are counted, not assumed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import scorediff  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

import scorediff.analytic as A  # noqa: E402
from scorediff import processes  # noqa: E402
from scorediff.eval.bench import pf_ode_reference  # noqa: E402
from scorediff.samplers import SAMPLERS, default_ending, default_schedule, sample  # noqa: E402

EXCLUDED = ("ode", "annealed_langevin")  # adaptive; NCSN's noise levels (100 calls each)


class Counting:
    def __init__(self, d):
        self.d, self.calls = d, 0

    def __call__(self, x, t, **cond):
        self.calls += 1
        return self.d(x, t, **cond)


def sw(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(A.sliced_wasserstein(x.reshape(len(x), -1), y.reshape(len(y), -1), projections=256,
                                      generator=torch.Generator().manual_seed(1)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=1024)
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from defaults import image64

    t0 = time.time()
    mix, proc = image64(), processes.make("vp-discrete")
    d = mix.denoiser(proc)
    x_T = proc.prior_sample((args.starts, *mix.event_shape), torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = pf_ode_reference(mix, proc, x_T, proc.t_max, rtol=1e-9)[0]
    data = mix.sample(args.starts, torch.Generator().manual_seed(5))
    floor = sw(mix.sample(args.starts, torch.Generator().manual_seed(6)), data)

    rows: list[tuple[str, str, dict[int, tuple[float, float, int]]]] = []
    for name, fn in SAMPLERS.items():
        if name in EXCLUDED or fn.info.denoiser != "any":
            continue
        cells = {}
        for nfe in args.nfe:
            steps = max(2, round(nfe / fn.info.nfe_per_step))
            c = Counting(d)
            y = sample(c, proc, x_T, sampler=name, steps=steps, dtype=torch.float64)
            rms = float("nan") if fn.info.stochastic else float(((y - ref) ** 2).flatten(1).sum(1).mean().sqrt())
            cells[nfe] = (rms, sw(y, data), c.calls)
        label = f"{default_schedule(name, proc)}, ending {default_ending(name, proc)}"
        rows.append((f"scorediff {name}", label, cells))
        print(f"  {name} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)

    notes = []
    if not args.no_peers:
        try:
            import peers_diffusers as pd

            peers = []
            for cls, pname, extra in (("UniPCMultistepScheduler", "UniPC", {}),
                                      ("DPMSolverMultistepScheduler", "DPM-Solver++(2M)", {}),
                                      ("DDIMScheduler", "DDIM", {"clip_sample": False})):
                for spacing in ("linspace", "trailing"):
                    if cls == "DDIMScheduler" and spacing == "linspace":
                        continue
                    cfg = {**extra} if spacing == "linspace" else {**extra, "timestep_spacing": "trailing"}
                    peers.append((f"diffusers {pname}", "library default" if spacing == "linspace" and not extra
                                  else spacing, pd.DPeer(pname, cls, False, False, cfg)))
            for label, grid, peer in peers:
                cells = {}
                for nfe in args.nfe:
                    y, calls = pd.run(peer, d, proc, x_T, nfe, seed=0)
                    cells[nfe] = (float(((y - ref) ** 2).flatten(1).sum(1).mean().sqrt()), sw(y, data), calls)
                rows.append((label, grid, cells))
        except Exception as e:  # noqa: BLE001 - a peer that cannot run is a table note
            notes.append(f"diffusers could not run: {type(e).__name__}: {e}")

    print(f"\nimage64 on vp-discrete, {args.starts} starts; each cell: RMS to the exact ODE image / sliced W2 to the "
          f"data (model calls); sliced W2 floor {floor:.4f}\n")
    print("| sampler | grid, ending | " + " | ".join(f"NFE {n}" for n in args.nfe) + " |")
    print("|---|---|" + "---:|" * len(args.nfe))
    for label, grid, cells in rows:
        out = []
        for n in args.nfe:
            rms, w, calls = cells[n]
            out.append(("-" if rms != rms else f"{rms:.4f}") + f" / {w:.4f} ({calls})")
        print(f"| {label} | {grid} | " + " | ".join(out) + " |")
    for n in args.nfe:
        ours = min((c[n][1], lbl) for lbl, _, c in rows if lbl.startswith("scorediff"))
        theirs = [(c[n][1], lbl + " " + g) for lbl, g, c in rows if lbl.startswith("diffusers")]
        if theirs:
            best = min(theirs)
            print(f"\nNFE {n}: best scorediff default {ours[1]} {ours[0]:.4f}; best diffusers {best[1]} {best[0]:.4f}"
                  f" (ratio {ours[0] / best[0]:.2f})", end="")
    print()
    for n in notes:
        print(n)
    print(f"\nTotal time {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
