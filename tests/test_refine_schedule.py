"""schedule_fit.refine_schedule: a grid refined by the sampler's own end-to-end error on pilot starts, checked on
other starts against the exact probability-flow ODE of a Gaussian mixture (eval.bench.pf_ode_reference)."""

from __future__ import annotations

import pytest
import torch

from scorediff import processes, schedules
from scorediff.analytic import ring2d
from scorediff.eval.bench import pf_ode_reference
from scorediff.samplers import SAMPLERS
from scorediff.schedule_fit import refine_schedule


def test_refining_a_poor_grid_lowers_the_error_on_held_out_starts():
    mix, proc = ring2d(), processes.make("edm")
    d = mix.denoiser(proc)
    pilot = proc.prior_sample((64, 2), torch.Generator().manual_seed(10), dtype=torch.float64)
    target = pf_ode_reference(mix, proc, pilot, proc.t_max, rtol=1e-8, t_end=proc.t_min)[0]
    start = schedules.make("uniform", 6, proc)  # uniform in sigma on EDM: far from the best grid
    ts, before, after = refine_schedule(SAMPLERS["ddim"], d, proc, start, pilot, target, rounds=3)
    assert ts.numel() == start.numel() and float(ts[0]) == float(start[0]) and float(ts[-1]) == float(start[-1])
    assert bool((ts[1:] < ts[:-1]).all()) and after <= before
    x = proc.prior_sample((512, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = pf_ode_reference(mix, proc, x, proc.t_max, rtol=1e-8, t_end=proc.t_min)[0]

    def err(grid):
        return float((SAMPLERS["ddim"](d, proc, x, grid) - ref).pow(2).sum(1).mean().sqrt())

    assert err(ts) < 0.5 * err(start), (err(ts), err(start))


def test_refine_rejects_stochastic_samplers_and_bad_grids():
    mix, proc = ring2d(), processes.make("vp")
    x = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="deterministic"):
        refine_schedule(SAMPLERS["ddpm"], mix.denoiser(proc), proc, schedules.make("uniform", 4, proc), x, x)
    with pytest.raises(ValueError, match="strictly decreasing"):
        refine_schedule(SAMPLERS["ddim"], mix.denoiser(proc), proc, torch.tensor([0.5, 1.0]), x, x)
