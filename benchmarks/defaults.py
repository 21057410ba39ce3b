"""Choose each sampler's default time grid by the protocol in benchmarks/README.md ("Default time grids").

Run: ``python benchmarks/defaults.py`` (``--quick``: 64 starts, tuning set only, for a smoke test). Prints, per
sampler, every candidate grid's worst error ratio to the per-case best over the tuning set and over the held-out
set, the current default and the grid the rule selects. Exact denoisers of Gaussian mixtures, float64, CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import scorediff.analytic as A
import scorediff.processes as P
from scorediff import schedules
from scorediff.eval.bench import pf_ode_reference
from scorediff.samplers import SAMPLERS

CANDIDATES = ("uniform", "logsnr", "karras", "logsnr_cosine", "quadratic", "power")  # power: protocol 2b
PROCESSES = (("vp-discrete", {}), ("vp", {"schedule": "cosine"}), ("ve", {}), ("edm", {}), ("flow", {}))
# --per-process (protocol 2): every registered process configuration, each selected on its own
ALL_PROCESSES = (("vp-discrete", {}), ("vp-discrete", {"schedule": "cosine"}), ("vp", {}), ("vp", {"schedule": "cosine"}),
                 ("sub-vp", {}), ("ve", {}), ("edm", {}), ("flow", {}))
BUDGETS = (10, 20)
EXCLUDED = ("ode", "annealed_langevin")
KEEP_WITHIN = 1.10  # the current default stays if its score is within 10% of the best score


def _smooth(w: torch.Tensor, passes: int = 2) -> torch.Tensor:
    """Smooth (n, 8, 8) fields by repeated 3x3 binomial filtering (reflect padding)."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=w.dtype)
    k = (k[:, None] * k[None, :] / 16).reshape(1, 1, 3, 3)
    x = w[:, None]
    for _ in range(passes):
        x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k)
    return x[:, 0]


def image64(seed: int = 7, components: int = 10, rank: int = 4, fine: float = 1e-3) -> A.GaussianMixture:
    """An image-like 64-D mixture: 8x8 smooth random fields (means), rank-``rank`` smooth covariances + fine variance."""
    g = torch.Generator().manual_seed(seed)
    means = _smooth(torch.randn(components, 8, 8, generator=g, dtype=torch.float64)).reshape(components, 64)
    means = means / means.std(dim=1, keepdim=True) * 0.5
    v = _smooth(torch.randn(components * rank, 8, 8, generator=g, dtype=torch.float64)).reshape(components, rank, 64)
    v = v / v.std(dim=2, keepdim=True)
    covs = 0.3 * v.transpose(1, 2) @ v / rank + fine * torch.eye(64, dtype=torch.float64)
    return A.GaussianMixture(torch.ones(components, dtype=torch.float64), means, covs, event_shape=(1, 8, 8))


def scaled(mix: A.GaussianMixture, c: float) -> A.GaussianMixture:
    return A.GaussianMixture(mix.weights, mix.means * c, mix.covs * c * c, mix.event_shape)


def problems(held_out: bool) -> dict[str, A.GaussianMixture]:
    if not held_out:
        return {"ring2d": A.ring2d(), "mixture16": A.mixture64(dim=16, components=6)}
    return {"image64": image64(), "ring2d x4": scaled(A.ring2d(), 4.0), "mixture8 rank-1": A.mixture64(dim=8, components=4, rank=1)}


def sw(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(A.sliced_wasserstein(x, y, projections=256, generator=torch.Generator().manual_seed(1)))


def errors(mix: A.GaussianMixture, proc, n: int, grids=CANDIDATES) -> dict[tuple[str, str, int], float]:
    """error[(sampler, grid, nfe)] on one problem and process, for the candidate ``grids``."""
    d = mix.denoiser(proc)
    shape = (n, *mix.event_shape)
    out: dict[tuple[str, str, int], float] = {}
    t_min = proc.t_min
    # every candidate grid starts at t_max and ends at t_min: one reference per problem and process
    x_det = proc.prior_sample(shape, torch.Generator().manual_seed(0), dtype=torch.float64)
    if float(proc.alpha(torch.tensor(proc.t_max, dtype=torch.float64))) > 0:
        # protocol 2c: solved in log sigma~, independent of the samplers (vp-discrete's own time is piecewise:
        # the ode sampler at rtol 1e-7 was off by ~1e-4 there)
        ref = pf_ode_reference(mix, proc, x_det, proc.t_max, rtol=1e-9, t_end=t_min)[0]
    else:  # flow: pure noise at t_max; its own time is smooth
        ts_ref = torch.tensor([proc.t_max, t_min], dtype=torch.float64)
        ref = SAMPLERS["ode"](d, proc, x_det, ts_ref, rtol=1e-9, atol=1e-9)
    n_sto = 2 * n
    x_sto = proc.prior_sample((n_sto, *mix.event_shape), torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor(t_min, dtype=torch.float64)
    truth = float(proc.alpha(t)) * mix.sample(n_sto, torch.Generator().manual_seed(5)).reshape(x_sto.shape)
    truth = truth + float(proc.sigma(t)) * torch.randn(x_sto.shape, generator=torch.Generator().manual_seed(6),
                                                       dtype=torch.float64)
    for name, fn in SAMPLERS.items():
        if name in EXCLUDED or fn.info.denoiser != "any":  # the consistency sampler needs a consistency model
            continue
        info = fn.info
        for nfe in BUDGETS:
            steps = max(2, round(nfe / info.nfe_per_step))
            for grid in grids:
                try:
                    ts = schedules.make(grid, steps, proc)
                    if info.stochastic:
                        y = fn(d, proc, x_sto, ts, generator=torch.Generator().manual_seed(3))
                        err = sw(y, truth)
                    else:
                        y = fn(d, proc, x_det, ts)
                        err = float(((y - ref) ** 2).reshape(n, -1).sum(1).mean().sqrt())
                    if not math.isfinite(err):
                        err = math.inf
                except ValueError:
                    err = math.inf
                out[(name, grid, nfe)] = err
    return out


def worst_ratios(table: dict[tuple[str, str, str, int], float], name: str, process: str | None = None
                 ) -> dict[str, float]:
    """For one sampler: each candidate's worst ratio to the per-case best over the cases in ``table`` (those on
    ``process`` only, when given)."""
    cases = sorted({(prob, nfe) for (s, prob, _, nfe) in table
                    if s == name and (process is None or prob.endswith(f" on {process}"))})
    worst = dict.fromkeys(CANDIDATES, 1.0)
    for prob, nfe in cases:
        errs = {g: table[(name, prob, g, nfe)] for g in CANDIDATES}
        best = min(errs.values())
        for g, e in errs.items():
            r = e / best if best > 0 else (1.0 if e == 0 else math.inf)
            worst[g] = max(worst[g], r)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cache", default="", help="JSON file of per-case errors, reused when present")
    ap.add_argument("--per-process", action="store_true",
                    help="protocol 2: select a default per sampler and process, over every registered process")
    ap.add_argument("--starts", type=int, default=1024,
                    help="prior draws per problem (half on the 64-D problem); protocols 1, 2 and 2b used 128")
    args = ap.parse_args()
    processes = ALL_PROCESSES if args.per_process else PROCESSES
    n = 64 if args.quick else args.starts
    t0 = time.time()
    tables = {}
    cache_path = Path(args.cache) if args.cache else None
    cache = json.loads(cache_path.read_text()) if cache_path and cache_path.exists() else {}
    for held_out in ([False] if args.quick else [False, True]):
        table = {}
        for pname, popts in processes:
            proc = P.make(pname, **popts)
            for prob, mix in problems(held_out).items():
                case = f"{prob} on {process_key(pname, popts)}"
                missing = [g for g in CANDIDATES if not any(row[1] == g for row in cache.get(case, []))]
                if missing:  # a cache of an earlier candidate list: compute only the new grids
                    # the held-out 64-D problem is the costly one: half the starts
                    m = n // 2 if mix.means.shape[1] >= 64 else n
                    cache[case] = cache.get(case, []) + [[s, g, nfe, e] for (s, g, nfe), e
                                                         in errors(mix, proc, m, missing).items()]
                    if cache_path:
                        cache_path.write_text(json.dumps(cache))
                for s, g, nfe, e in cache[case]:
                    table[(s, case, g, nfe)] = e
                print(f"  done {case} ({time.time() - t0:.0f} s)", flush=True)
        tables[held_out] = table
    if args.per_process:
        per_process_table(tables, processes)
        print(f"\nTotal time {time.time() - t0:.0f} s")
        return
    print()
    print("| sampler | current default | " + " | ".join(f"{g} tune / held-out" for g in CANDIDATES)
          + " | selected | its held-out worst ratio |")
    print("|---|---|" + "---:|" * len(CANDIDATES) + "---|---:|")
    for name, fn in SAMPLERS.items():
        if name in EXCLUDED or fn.info.denoiser != "any":
            continue
        tune = worst_ratios(tables[False], name)
        held = worst_ratios(tables[True], name) if True in tables else dict.fromkeys(CANDIDATES, math.nan)
        current = fn.info.default_schedule
        best = min(CANDIDATES, key=lambda g: tune[g])
        chosen = current if current in tune and tune[current] <= KEEP_WITHIN * tune[best] else best
        cells = " | ".join(f"{tune[g]:.2f} / {held[g]:.2f}" for g in CANDIDATES)
        print(f"| {name} | {current} | {cells} | **{chosen}** | {held[chosen]:.2f} |")
    print(f"\nTotal time {time.time() - t0:.0f} s")


def process_key(name: str, options: dict) -> str:
    return f"{name}-cosine" if options.get("schedule") == "cosine" else name


def per_process_table(tables: dict, processes) -> None:
    """Protocol 2: per sampler and process, the candidate with the lowest worst ratio over that process's tuning
    cases (the sampler's global default kept when within KEEP_WITHIN); the held-out worst ratio beside it."""
    keys = [process_key(n, o) for n, o in processes]
    print("\n| sampler | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    chosen: dict[str, dict[str, str]] = {}
    for name, fn in SAMPLERS.items():
        if name in EXCLUDED or fn.info.denoiser != "any":
            continue
        cells = []
        for key in keys:
            tune = worst_ratios(tables[False], name, key)
            held = worst_ratios(tables[True], name, key) if True in tables else dict.fromkeys(CANDIDATES, math.nan)
            current = fn.info.default_schedule
            best = min(CANDIDATES, key=lambda g: tune[g])
            pick = current if current in tune and tune[current] <= KEEP_WITHIN * tune[best] else best
            if pick != current:
                chosen.setdefault(name, {})[key] = pick
            cells.append(f"{pick} {tune[pick]:.2f} / {held[pick]:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nPROCESS_DEFAULTS =", json.dumps(chosen, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
