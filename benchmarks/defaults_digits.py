"""Protocol 5e: the default grids, and the run's own fitted grid, on the trained digits model
(docs/results/defaults-protocol-5.md).

    python benchmarks/defaults_digits.py RUN [--seeds 0,1] [--nfe 5,10,20] [--pilot 64]

RUN: the default digits run trained on the 1200-digit split (``benchmarks/train_default.py --out DIR`` makes
DIR/run). For {ddim, heun, dpm_solver_pp_2m, unipc_bh2} at each NFE: classifier-feature FID (train_default's judge)
of 597 samples against the 597 held-out digits on protocol 5's six grids, and on the grid ``scorediff
fit-schedule`` keeps (refined, used where it won its held-out pilot check; fitted on a copy of RUN). Prints a
Markdown table: FID (mean over seeds) per grid, the default's and the best's, and the counts of the protocol.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_default import features, split_digits  # noqa: E402  (the shared digits judge)

from scorediff import sample  # noqa: E402
from scorediff.data import from_unit  # noqa: E402
from scorediff.eval import frechet_distance  # noqa: E402
from scorediff.runs import load_run  # noqa: E402
from scorediff.runs.fitted import lookup  # noqa: E402
from scorediff.runs.fitting import fit_run  # noqa: E402
from scorediff.samplers import SAMPLERS, default_schedule  # noqa: E402

SAMPLER_SET = ("ddim", "heun", "dpm_solver_pp_2m", "unipc_bh2")
GRIDS = ("uniform", "logsnr", "karras", "logsnr_cosine", "quadratic", "power")
WITHIN = 1.3  # issue 28's threshold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--nfe", default="5,10,20")
    ap.add_argument("--pilot", type=int, default=64)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [int(v) for v in args.nfe.split(",")]
    from sklearn.neural_network import MLPClassifier

    t0, c0 = time.perf_counter(), time.process_time()
    x_tr, y_tr, x_held, _ = split_digits()
    clf = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=600, random_state=0).fit(x_tr, y_tr)
    f_held = features(clf, x_held)
    n = len(x_held)
    steps_of = {(s, nfe): max(2, round(nfe / SAMPLERS[s].info.nfe_per_step)) for s in SAMPLER_SET for nfe in budgets}
    with tempfile.TemporaryDirectory() as tmp:  # the given run is never written: fit on a copy
        copy = Path(tmp) / "run"
        shutil.copytree(args.run, copy)
        fit_c0 = time.process_time()
        fit_run(copy, list(SAMPLER_SET), sorted({v for v in steps_of.values()}), pilot=args.pilot, seed=0)
        fit_cpu = time.process_time() - fit_c0
        run = load_run(copy)
        fitted = {key: lookup(run, key[0], st) for key, st in steps_of.items()}
    print(f"Run {args.run} (step {run.step}); {n} samples per seed, seeds {seeds}; fit-schedule (refined, pilot "
          f"{args.pilot}) {fit_cpu:.1f} CPU s\n")
    print("| sampler | NFE | steps | default grid | " + " | ".join(GRIDS) + " | fitted (used?) | default / best | "
          "fitted / default |")
    print("|---|---:|---:|---|" + "---:|" * len(GRIDS) + "---:|---:|---:|")
    far, wins, cells = 0, 0, 0
    for (name, nfe), steps in steps_of.items():
        def fid(schedule, name=name, steps=steps) -> float:
            out = []
            for seed in seeds:
                with torch.no_grad():
                    x = sample(run.denoiser, run.process, (n, *run.shape), sampler=name, steps=steps, seed=seed,
                               schedule=schedule)
                gen = from_unit(x.clamp(-1, 1)).numpy().reshape(n, -1) / 255.0
                out.append(frechet_distance(features(clf, gen), f_held))
            return float(np.mean(out))

        fids = {g: fid(g) for g in GRIDS}
        default = default_schedule(name, run.process)
        best = min(fids, key=fids.get)
        look = fitted[(name, nfe)]
        used = look.times is not None
        f_fit = fid(look.times) if used else fids[default]
        cells += 1
        far += fids[default] > WITHIN * fids[best]
        wins += f_fit < fids[default]
        row = " | ".join(f"**{fids[g]:.2f}**" if g == best else f"{fids[g]:.2f}" for g in GRIDS)
        print(f"| {name} | {nfe} | {steps} | {default} | {row} | {f_fit:.2f} ({'yes' if used else 'no'}) | "
              f"{fids[default] / fids[best]:.2f} | {f_fit / fids[default]:.2f} |", flush=True)
    print(f"\nDefault grid more than {WITHIN}x its best: {far} of {cells} cells. Fitted grid (as sampling uses it) "
          f"better than the default grid: {wins} of {cells}.")
    print(f"\nTotal {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU")


if __name__ == "__main__":
    main()
