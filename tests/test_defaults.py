"""Every sampler's default grid is sensible on every process: within a small factor of its best candidate grid.

The defaults (``scorediff.samplers.default_schedule``: per process, ``PROCESS_DEFAULTS``) were chosen by the protocol
of benchmarks/README.md ("Default time grids"; ``benchmarks/defaults.py --per-process``);
this checks the result registry-wide, on every registered process, against closed-form truth: ring2d's exact
denoiser, 12 model calls, the same starts for every grid. Deterministic samplers: RMS distance to the exact
probability-flow ODE solution at t_min (``eval.bench.pf_ode_reference``, solved in log sigma~; the adaptive ``ode``
sampler in flow's own time, which starts from pure noise); stochastic ones:
sliced W2 to draws of the exact marginal at t_min.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

import scorediff.analytic as A
import scorediff.processes as P
from scorediff import schedules
from scorediff.eval import bench
from scorediff.samplers import SAMPLERS, default_schedule
from tests.conftest import PROCESS_SPECS

CANDIDATES = ("uniform", "logsnr", "karras", "logsnr_cosine", "quadratic", "power")  # the protocol's candidates
EXCLUDED = ("ode", "annealed_langevin")  # adaptive (grid = report points); NCSN noise levels
# samplers of a Denoiser E[x0 | x_t] (the consistency sampler needs a consistency model: tests/test_distill.py)
NAMES = [n for n, f in SAMPLERS.items() if n not in EXCLUDED and f.info.denoiser == "any"]
NFE = 12
FACTOR = 3.0  # the default's error may be at most this multiple of the best candidate's
# RMS over starts is dominated by the few starts near a boundary between modes (a small change of grid sends them
# to the other mode): with 48 starts a ratio was up to 2.8x off its value at 4096 starts, with 1024 up to 1.2x
# (benchmarks/README.md, "How many starts: protocol 2c").
STARTS = 1024


@functools.cache
def setup(spec_id: str):
    _, name, opts = next(s for s in PROCESS_SPECS if s[0] == spec_id)
    proc = P.make(name, **opts)
    mix = A.ring2d()
    d = mix.denoiser(proc)
    x = proc.prior_sample((STARTS, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    if float(proc.alpha(torch.tensor(proc.t_max, dtype=torch.float64))) > 0:  # independent of every sampler
        ref = bench.pf_ode_reference(mix, proc, x, proc.t_max, rtol=1e-8, t_end=proc.t_min)[0]
    else:  # flow starts from pure noise (alpha = 0): its own time is smooth
        ts = torch.tensor([proc.t_max, proc.t_min], dtype=torch.float64)
        ref = SAMPLERS["ode"](d, proc, x, ts, rtol=1e-8, atol=1e-8)
    xs = proc.prior_sample((400, 2), torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor(proc.t_min, dtype=torch.float64)
    truth = float(proc.alpha(t)) * mix.sample(400, torch.Generator().manual_seed(2))
    truth = truth + float(proc.sigma(t)) * torch.randn(truth.shape, generator=torch.Generator().manual_seed(3),
                                                       dtype=torch.float64)
    return proc, d, x, ref, xs, truth


def error(name: str, grid: str, spec_id: str) -> float:
    proc, d, x, ref, xs, truth = setup(spec_id)
    fn = SAMPLERS[name]
    ts = schedules.make(grid, max(2, round(NFE / fn.info.nfe_per_step)), proc)
    if fn.info.stochastic:
        y = fn(d, proc, xs, ts, generator=torch.Generator().manual_seed(4))
        return float(A.sliced_wasserstein(y, truth, projections=64, generator=torch.Generator().manual_seed(5)))
    y = fn(d, proc, x, ts)
    return float(((y - ref) ** 2).sum(1).mean().sqrt())


def _cases():
    for name in NAMES:
        for spec_id, pname, opts in PROCESS_SPECS:
            info = SAMPLERS[name].info
            if not info.runs_on(P.make(pname, **opts)) or (info.processes and not info.stochastic):
                continue  # (cld's probability-flow ODE is the phase-space one, not pf_ode_reference's)
            yield pytest.param(name, spec_id, id=f"{name}-{spec_id}")


@pytest.mark.parametrize("name,spec_id", list(_cases()))
def test_default_grid_is_near_the_best_on_every_process(name, spec_id):
    errs = {g: error(name, g, spec_id) for g in CANDIDATES}
    default = default_schedule(name, setup(spec_id)[0])
    if default not in errs:
        errs[default] = error(name, default, spec_id)
    best = min(e for e in errs.values() if math.isfinite(e))
    assert errs[default] <= FACTOR * best, f"{name} on {spec_id}: default '{default}' {errs[default]:.4f}, " + ", ".join(
        f"{g} {e:.4f}" for g, e in errs.items())
