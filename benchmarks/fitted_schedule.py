"""Benchmark: a fitted time grid kept in the run folder (``scorediff fit-schedule``) against the default grid, on a
trained digits run, scored on digits the model never saw.

The run must be trained on the 1200-digit training split (``python benchmarks/train_default.py --out DIR`` makes
one as DIR/run; ``--set optim.steps=300`` a short one). It is copied to a temporary folder (the given folder is
never written), the GITS grid is fitted there through ``scorediff.runs.fitting.fit_run`` (the code of
``scorediff fit-schedule``; pilot of ``--pilot`` prior draws) and read back through ``Run.fitted_schedule`` (the
path ``scorediff sample`` takes). For each sampler and step count, 597 samples from the same seeds on the default
grid and on the fitted grid are scored against the 597 held-out digits: the classifier-feature FID of
benchmarks/train_default.py (a scikit-learn MLP trained on the training split, 64-unit penultimate layer) and the
raw-pixel FID (``scorediff.eval.frechet_distance`` on the 64 pixels).

    python benchmarks/fitted_schedule.py RUN_DIR [--pilot 64] [--seeds 0 1] [--threads 1]
                                         [--cases heun:5 heun:10 dpm_solver_pp_2m:10 unipc_bh2:10]

Prints the pilot's cost and a Markdown table (mean over seeds; per-seed values in brackets).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_default import features, split_digits  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a run folder trained on the 1200-digit split (read only: a copy is fitted)")
    ap.add_argument("--pilot", type=int, default=64)
    ap.add_argument("--pilot-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", nargs="+", default=["heun:5", "heun:10", "dpm_solver_pp_2m:10", "unipc_bh2:10"],
                    metavar="SAMPLER:STEPS")
    args = ap.parse_args()

    import torch
    from sklearn.neural_network import MLPClassifier

    from scorediff import sample
    from scorediff.data import from_unit
    from scorediff.eval import frechet_distance
    from scorediff.runs import fitted, fitting, load_run
    from scorediff.samplers import SAMPLERS, default_schedule

    torch.set_num_threads(args.threads)
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases]
    x_tr, y_tr, x_held, _ = split_digits()
    clf = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=600, random_state=0).fit(x_tr, y_tr)
    f_held, n = features(clf, x_held), len(x_held)

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        shutil.copytree(args.run, run_dir, ignore=shutil.ignore_patterns(".lock", fitted.SCHEDULES))
        samplers = sorted({s for s, _ in cases})
        fitting.fit_run(run_dir, samplers, sorted({k for _, k in cases}), pilot=args.pilot, seed=args.pilot_seed)
        run = load_run(run_dir)
        found = fitted.lookup(run, *cases[0])
        assert found.times is not None, found.note
        record = json.loads(fitted.schedule_path(run_dir, *cases[0]).read_text())["pilot"]
        print(f"run {args.run}: step {run.step}; pilot {record['size']} draws, {record['model_calls']} batched model "
              f"calls, {record['cpu_s']:.1f} CPU s ({record['wall_s']:.1f} s wall), {args.threads} thread(s)")

        def scores(sampler: str, steps: int, grid, seed: int) -> tuple[float, float]:
            x = sample(run.denoiser, run.process, (n, *run.shape), sampler=sampler, steps=steps, seed=seed,
                       schedule=grid)
            gen = from_unit(x).numpy().reshape(n, -1) / 255.0
            return frechet_distance(features(clf, gen), f_held), frechet_distance(gen, x_held)

        rows = []
        for sampler, steps in cases:
            ts = run.fitted_schedule(sampler, steps)
            nfe = f"{steps * SAMPLERS[sampler].info.nfe_per_step:g}"
            res = {g: [scores(sampler, steps, grid, s) for s in args.seeds]
                   for g, grid in (("default", None), ("fitted", ts))}
            rows.append((sampler, steps, nfe, default_schedule(sampler, run.process), res, ts))
            print(f"{sampler} {steps}: fitted sigma {[round(float(t), 3) for t in ts]}", file=sys.stderr)

    def cell(vals: list[float]) -> str:
        return f"{np.mean(vals):.2f} ({' / '.join(f'{v:.2f}' for v in vals)})"

    print("\n| sampler | steps (NFE) | default grid | classifier FID default | classifier FID fitted "
          "| pixel FID default | pixel FID fitted |")
    print("|---|---|---|---|---|---|---|")
    for sampler, steps, nfe, name, res, _ in rows:
        d, f = res["default"], res["fitted"]
        print(f"| {sampler} | {steps} ({nfe}) | {name} | {cell([v[0] for v in d])} | {cell([v[0] for v in f])} "
              f"| {cell([v[1] for v in d])} | {cell([v[1] for v in f])} |")


if __name__ == "__main__":
    main()
