"""Every sampler's default grid is sensible on every process: within a small factor of its best candidate grid.

The defaults (``scorediff.samplers.default_schedule``: per process, ``PROCESS_DEFAULTS``) were chosen by the protocol
of benchmarks/README.md ("Default time grids"; ``benchmarks/defaults.py --per-process``);
this checks the result registry-wide, on every registered process, against closed-form truth: ring2d's exact
denoiser, 12 model calls, the same starts for every grid. Deterministic samplers: RMS distance to the exact
probability-flow ODE solution at t_min (the adaptive ``ode`` sampler at rtol = atol = 1e-8); stochastic ones:
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
from scorediff.samplers import SAMPLERS, default_schedule
from tests.conftest import PROCESS_SPECS

CANDIDATES = ("uniform", "logsnr", "karras", "logsnr_cosine", "quadratic", "power")  # the protocol's candidates
EXCLUDED = ("ode", "annealed_langevin")  # adaptive (grid = report points); NCSN noise levels
# samplers of a Denoiser E[x0 | x_t] (the consistency sampler needs a consistency model: tests/test_distill.py)
NAMES = [n for n, f in SAMPLERS.items() if n not in EXCLUDED and f.info.denoiser == "any"]
NFE = 12
FACTOR = 3.0  # the default's error may be at most this multiple of the best candidate's


@functools.cache
def setup(spec_id: str):
    _, name, opts = next(s for s in PROCESS_SPECS if s[0] == spec_id)
    proc = P.make(name, **opts)
    mix = A.ring2d()
    d = mix.denoiser(proc)
    x = proc.prior_sample((48, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = SAMPLERS["ode"](d, proc, x, torch.tensor([proc.t_max, proc.t_min], dtype=torch.float64), rtol=1e-8, atol=1e-8)
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


# Not yet within FACTOR after the process-aware selection (benchmarks/README.md, "Default time grids", protocol 2b):
# measured ratio default / best at the time of writing. Strict: a pair that starts passing fails here. Protocol 2
# left four (Heun on cosine VP 6.4x, PLMS on flow 9.1x, DPM-Solver on cosine DDPM 3.2x, UniPC-3 on cosine VP
# 3.1x); protocol 2b (the `power` grid added) fixed two, improved one and moved DPM-Solver++(2M) on cosine DDPM
# from quadratic (passing) to logsnr_cosine.
KNOWN_FAR = {
    ("heun", "vp-cosine"): 3.3, ("unipc_bh2_3", "vp-cosine"): 3.1, ("dpm_solver_pp_2m", "vp-discrete-cosine"): 4.4,
}


def _cases():
    for name in NAMES:
        for spec_id in (s[0] for s in PROCESS_SPECS):
            ratio = KNOWN_FAR.get((name, spec_id))
            marks = [pytest.mark.xfail(strict=True, reason=f"default grid {ratio}x the best (known)")] if ratio else []
            yield pytest.param(name, spec_id, marks=marks, id=f"{name}-{spec_id}")


@pytest.mark.parametrize("name,spec_id", list(_cases()))
def test_default_grid_is_near_the_best_on_every_process(name, spec_id):
    errs = {g: error(name, g, spec_id) for g in CANDIDATES}
    default = default_schedule(name, setup(spec_id)[0])
    if default not in errs:
        errs[default] = error(name, default, spec_id)
    best = min(e for e in errs.values() if math.isfinite(e))
    assert errs[default] <= FACTOR * best, f"{name} on {spec_id}: default '{default}' {errs[default]:.4f}, " + ", ".join(
        f"{g} {e:.4f}" for g, e in errs.items())
