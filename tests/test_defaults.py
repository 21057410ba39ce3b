"""Every sampler's default grid is sensible on every process: within a small factor of its best candidate grid.

The defaults were chosen by the protocol of benchmarks/README.md ("Default time grids"; benchmarks/defaults.py);
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
from scorediff.samplers import SAMPLERS
from tests.conftest import PROCESS_SPECS

CANDIDATES = ("uniform", "logsnr", "karras", "logsnr_cosine", "quadratic")
EXCLUDED = ("ode", "annealed_langevin")  # adaptive (grid = report points); NCSN noise levels
NAMES = [n for n in SAMPLERS if n not in EXCLUDED]
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


# Not yet within FACTOR: no single process-agnostic grid is (benchmarks/README.md, "Default time grids"). Measured
# ratio default / best at the time of writing. Strict: a pair that starts passing fails here, so the list shrinks.
KNOWN_FAR = {
    ("ddim", "flow"): 3.5, ("ddim", "vp-cosine"): 3.3, ("euler", "flow"): 3.5, ("euler", "vp-cosine"): 3.3,
    ("heun", "vp-discrete"): 5.0, ("heun", "vp"): 4.9, ("heun", "sub-vp"): 5.7, ("heun", "flow"): 58.0,
    ("heun", "vp-discrete-cosine"): 4.1, ("heun", "vp-cosine"): 134.8, ("pc", "edm"): 3.1,
    ("dpm_solver", "flow"): 25.3, ("dpm_solver", "vp-discrete-cosine"): 3.3, ("dpm_solver", "vp-cosine"): 5.9,
    ("dpm_solver_pp_2s", "flow"): 5.2, ("dpm_solver_pp_2s", "vp-cosine"): 3.5, ("dpm_solver_pp_2m", "flow"): 10.1,
    ("dpm_solver_pp_2m", "vp-discrete-cosine"): 4.4, ("dpm_solver_pp_2m", "vp-cosine"): 4.9,
    ("unipc_bh1", "flow"): 10.8, ("unipc_bh1", "vp-cosine"): 4.3, ("unipc_bh2", "flow"): 14.4,
    ("unipc_bh2", "vp-cosine"): 6.2, ("unipc_bh2_3", "vp-cosine"): 3.1,
    **{(s, p): r for s in ("pndm", "plms") for p, r in (("vp-discrete", 13.9), ("vp", 15.2), ("edm", 36.0), ("flow", 10.4),
                                                       ("vp-discrete-cosine", 18.4), ("vp-cosine", 22.5))},
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
    default = SAMPLERS[name].info.default_schedule
    if default not in errs:
        errs[default] = error(name, default, spec_id)
    best = min(e for e in errs.values() if math.isfinite(e))
    assert errs[default] <= FACTOR * best, f"{name} on {spec_id}: default '{default}' {errs[default]:.4f}, " + ", ".join(
        f"{g} {e:.4f}" for g, e in errs.items())
