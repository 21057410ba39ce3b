"""Whole benchmark runs (``scorediff bench samplers`` parses its arguments and calls these): every sampler on the
oracle mixtures, or on a trained run against held-out data; and the sampler comparison of ``scorediff report``."""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ... import data
from ...analytic import sliced_wasserstein
from ...processes import Process
from ...samplers import SAMPLERS, sample
from ...utils import Counted, cycle_labels, unknown
from .configs import default_grids, our_configs
from .measure import ADAPTIVE_STEPS, Row, accuracy, match_steps
from .problems import make_problem
from .tables import problem_summary

if TYPE_CHECKING:  # a run object is passed in; its folder is read by scorediff.runs, above this layer
    from ...runs import Run


def grid_names(spec: str | Iterable[str], process) -> list[str]:
    """``"all"``: the sampler's own grid and every applicable one; else the names given (a list or comma-separated)."""
    if spec == "all":
        return ["default", *default_grids(process)]
    return [v.strip() for v in spec.split(",") if v.strip()] if isinstance(spec, str) else list(spec)


def oracle_rows(process, mixtures: Iterable[str], grids: str | Iterable[str], samplers: Iterable[str],
                nfes: Iterable[int], n: int = 1024, seed: int = 0, ref_points: int = 256,
                log: Callable[[str], None] = print) -> list[Row]:
    """Every sampler on every grid at every target NFE, on each oracle mixture (its summary goes to ``log``)."""
    rows = []
    for name in mixtures:
        problem = make_problem(name, process, n, seed=seed, ref_points=ref_points)
        log(problem_summary(problem))
        rows += accuracy(problem, our_configs(process, grid_names(grids, process), samplers), nfes, seed)
    return rows


def held_out(run) -> Tensor:
    """Data the run did not train on: the test split if it trained on ``split="train"``, else a fresh draw
    (seed + 1) of a seeded toy dataset, else the data itself."""
    cfg = run.config["data"]
    options = dict(cfg.get("options") or {})
    try:
        seeded = "seed" in inspect.signature(data.DATASETS[cfg["name"]]).parameters
    except (KeyError, TypeError, ValueError):
        seeded = False
    if options.get("split") == "train":
        options["split"] = "test"
    elif seeded:
        options["seed"] = int(options.get("seed", 0)) + 1
    else:
        print(f"note: dataset {cfg['name']!r} has no seed; comparing with its own (training) data")
    ds = data.make(cfg["name"], **options)
    if hasattr(ds, "x"):
        return ds.x
    return torch.stack([ds[i][0] for i in range(len(ds))])


def trained_rows(run, label: str, samplers: Iterable[str], grids: str | Iterable[str], nfes: Iterable[int],
                 n: int = 1024, seed: int = 0, log: Callable[[str], None] = print) -> list[Row]:
    """The samplers on a trained run (``scorediff.runs.load_run``): sliced W2 to held-out data."""
    if run.class_conditional:
        raise ValueError(f"run {label!r} is class-conditional; bench samplers supports unconditional runs")
    data = held_out(run).to(torch.float32)
    n = min(n, data.shape[0])
    perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))
    ref = data[perm[:n]]
    x_T = run.process.prior_sample((n, *run.shape), torch.Generator().manual_seed(seed))
    floor = ""
    if data.shape[0] >= 2 * n:  # two disjoint data samples: what sliced W2 reads for a perfect model
        g = torch.Generator().manual_seed(12345)
        floor = f"; floor (data vs data) {float(sliced_wasserstein(data[perm[n:2 * n]], ref, 256, generator=g)):.3g}"
    log(f"run {label} (step {run.step}, process {run.process.name}); sliced W2 to {n} held-out "
        f"examples{floor}")
    rows = []

    for config in our_configs(run.process, grid_names(grids, run.process), samplers, dtype=torch.float32):
        for target in [0] if config.adaptive else nfes:
            row = Row(label, run.process.name, config.library, config.sampler, config.grid,
                      config.stochastic, target)
            try:
                def nfe_of(steps, config=config):
                    d = Counted(run.denoiser)
                    config.run(x_T[:1], steps, seed, d)
                    return d.nfe

                steps = ADAPTIVE_STEPS if config.adaptive else match_steps(nfe_of, target)[0]
                d = Counted(run.denoiser)
                t0 = time.perf_counter()
                x = config.run(x_T, steps, seed, d)
                row.seconds, row.steps, row.nfe = time.perf_counter() - t0, steps, d.nfe
                g = torch.Generator().manual_seed(12345)
                row.sw = float(sliced_wasserstein(x, ref, 256, generator=g)) if torch.isfinite(x).all() else math.nan
            except Exception as e:
                row.error = f"{type(e).__name__}: {e}"
            rows.append(row)
    return rows


# -- the sampler comparison of ``scorediff report`` ------------------------------------------------------------


def compare_samplers(
    denoiser: Callable[..., Tensor],
    process: Process,
    reference: Tensor,
    samplers: Sequence[str],
    nfes: Sequence[int],
    *,
    seed: int = 0,
    schedule: str | None = None,
    cond: dict | None = None,
    projections: int = 256,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Quality against cost: sliced W2 between samples and ``reference`` for each sampler at each NFE budget.

    A budget of N evaluations runs ``max(1, round(N / nfe_per_step))`` steps on ``schedule`` (default: each
    sampler's own default grid);
    the row records the evaluations actually made. Every sampler starts from the same prior draw (``seed``)
    and the distance uses the same projections, so the rows differ by the solver only.
    """
    for name in samplers:
        if name not in SAMPLERS:
            raise unknown("sampler", name, SAMPLERS)
    bad = [n for n in nfes if int(n) < 1]
    if bad:
        raise ValueError(f"NFE budgets must be >= 1, got {bad}")
    shape = (reference.shape[0], *reference.shape[1:])
    x_T = process.prior_sample(shape, torch.Generator().manual_seed(seed)).to(device)
    rows = []
    for name in samplers:
        per_step = SAMPLERS[name].info.nfe_per_step
        for budget in nfes:
            steps = max(1, round(int(budget) / per_step)) if per_step and math.isfinite(per_step) else int(budget)
            counted = Counted(denoiser)
            with torch.no_grad():
                x = sample(counted, process, x_T.clone(), sampler=name, steps=steps, seed=seed, device=device,
                           schedule=schedule, cond=cond)
            w2 = sliced_wasserstein(x.cpu(), reference.cpu(), projections, torch.Generator().manual_seed(seed))
            rows.append({"sampler": name, "budget": int(budget), "steps": steps, "nfe": counted.nfe,
                         "sliced_w2": float(w2)})
    return rows


def run_comparison(run: Run, samplers: Sequence[str], nfes: Sequence[int], num: int = 500, seed: int = 0,
                   device: str = "cpu", schedule: str | None = None) -> tuple[list[dict[str, Any]], float]:
    """``compare_samplers`` on a loaded run against ``num`` of its training examples.

    Returns the rows and the noise floor: the sliced W2 between two disjoint sets of ``num`` training
    examples (no sampler can be told apart from the data below it), or NaN when the data holds fewer
    than 2 num examples.
    """
    if num < 2:
        raise ValueError(f"--num must be >= 2, got {num}")
    run.require_task("diffusion", "scorediff report --compare")
    if run.latent:
        raise ValueError(f"scorediff report --compare: run {str(run.path)!r} is a latent diffusion run; its "
                         "sampler comparison against the data is not available yet (use scorediff eval)")
    spec = run.config["data"]
    ds = data.make(spec["name"], **dict(spec.get("options", {})))
    g = torch.Generator().manual_seed(seed)
    n = len(ds)
    idx = torch.randperm(n, generator=g)[: min(n, 2 * num)]
    xs = ds.x[idx] if hasattr(ds, "x") else torch.stack([ds[int(i)][0] for i in idx])
    if tuple(xs.shape[1:]) != run.shape:
        raise ValueError(f"data {spec['name']!r} has examples of shape {tuple(xs.shape[1:])}, the run expects {run.shape}")
    reference = xs[:num].to(torch.float32)
    cond = None
    if run.class_conditional:
        cond = {"y": cycle_labels(0, reference.shape[0], int(run.info["num_classes"]), device)}
    rows = compare_samplers(run.denoiser, run.process, reference, samplers, nfes, seed=seed, schedule=schedule,
                            cond=cond, device=device)
    floor = math.nan
    if xs.shape[0] >= 2 * num:
        floor = float(sliced_wasserstein(xs[num:].float(), reference, 256, torch.Generator().manual_seed(seed)))
    return rows, floor
