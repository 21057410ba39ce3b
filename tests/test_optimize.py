"""The pilot-optimised time grid (GITS, scorediff.schedule_fit): exact DP, the closed-form jump cost, the
grid's shape, and that it lowers a DDIM path's error on starts other than the pilot's."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from scorediff import analytic, processes, schedules
from scorediff.eval import bench
from scorediff.samplers import fit_schedule, optimize_schedule, sample
from scorediff.schedule_fit import best_path, jump_costs


def _brute_force(cost: torch.Tensor, steps: int) -> float:
    n = cost.shape[0]
    best = math.inf
    for inner in itertools.combinations(range(1, n - 1), steps - 1):
        path = (0, *inner, n - 1)
        best = min(best, sum(float(cost[a, b]) for a, b in zip(path[:-1], path[1:])))
    return best


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 7])
def test_dp_finds_the_brute_force_minimum(steps):
    g = torch.Generator().manual_seed(steps)
    n = 9
    cost = torch.rand(n, n, generator=g, dtype=torch.float64)
    cost = torch.where(torch.ones(n, n, dtype=torch.bool).triu(1), cost, torch.full_like(cost, math.inf))
    path, total = best_path(cost, steps)
    assert len(path) == steps + 1 and path[0] == 0 and path[-1] == n - 1
    assert all(a < b for a, b in zip(path[:-1], path[1:]))
    assert total == pytest.approx(sum(float(cost[a, b]) for a, b in zip(path[:-1], path[1:])), abs=1e-12)
    assert total == pytest.approx(_brute_force(cost, steps), abs=1e-12)
    with pytest.raises(ValueError, match="steps"):
        best_path(cost, n)


def test_jump_cost_is_the_ddim_step_error():
    # c(i, j) against an independent computation: our DDIM sampler taking the single step t_i -> t_j
    mix, proc = analytic.ring2d(), processes.make("vp")
    ts = schedules.make("logsnr", 6, proc)
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(ts.numel(), 32, 2, generator=g, dtype=torch.float64)
    x0s = torch.stack([mix.x0_mean(x, t, proc) for x, t in zip(xs, ts)])
    cost = jump_costs(proc, ts, xs, x0s)
    for i, j in [(0, 1), (0, 6), (2, 4), (5, 6)]:
        d = mix.denoiser(proc)
        step = sample(d, proc, xs[i], sampler="ddim", schedule=ts[[i, j]], steps=1, dtype=torch.float64)
        scale2 = float(proc.alpha(ts[j]) ** 2 + proc.sigma(ts[j]) ** 2)
        assert float(cost[i, j]) == pytest.approx(float(((step - xs[j]) ** 2).mean()) / scale2, rel=1e-10)
    assert torch.isinf(cost[3, 3]) and torch.isinf(cost[4, 2])


@pytest.mark.parametrize("denoise_to_zero", [False, True])
def test_grid_shape_and_pilot_cost(denoise_to_zero):
    mix, proc = analytic.ring2d(), processes.make("vp-discrete")
    x = proc.prior_sample((64, 2), torch.Generator().manual_seed(1), dtype=torch.float64)
    d = mix.denoiser(proc)
    fit = fit_schedule(d, proc, x, fine_steps=40, denoise_to_zero=denoise_to_zero)
    assert fit.pilot_nfe == d.nfe  # every model call is counted
    # DPM-Solver++(3M) calls the model once per node at the node's state: those calls are reused, none is added
    assert fit.pilot_nfe == 40
    # ... and the costs are those of fresh x0_hat at the reference states
    states = [x]
    sample(mix.denoiser(proc), proc, x, sampler="dpm_solver_pp_3m", schedule=fit.candidates, steps=40,
           dtype=torch.float64, callback=lambda info: states.append(info["x"]))
    xs = torch.stack(states)
    x0s = torch.stack([mix.x0_mean(xk, tk, proc) if tk > 0 else xk for xk, tk in zip(xs, fit.candidates)])
    assert torch.allclose(fit.cost, jump_costs(proc, fit.candidates, xs, x0s), rtol=1e-12, atol=0)
    for steps in (1, 4, 10):
        ts = fit.grid(steps)
        assert ts.dtype == torch.float64 and ts.numel() == steps + 1
        assert float(ts[0]) == proc.t_max and bool((ts[1:] < ts[:-1]).all())
        assert float(ts[-1]) == (0.0 if denoise_to_zero else proc.t_min)
        assert set(ts.tolist()) <= set(fit.candidates.tolist())
    # the one-call form gives the same grid
    same = optimize_schedule(mix.denoiser(proc), proc, 4, x, fine_steps=40, denoise_to_zero=denoise_to_zero)
    assert torch.equal(same, fit.grid(4))
    with pytest.raises(ValueError, match="fine_steps"):
        optimize_schedule(mix.denoiser(proc), proc, 41, x, fine_steps=40)


def test_optimised_grid_lowers_the_ddim_path_error_on_new_starts():
    mix, proc = analytic.ring2d(), processes.make("vp-discrete")
    pilot = proc.prior_sample((256, 2), torch.Generator().manual_seed(123), dtype=torch.float64)
    ts = optimize_schedule(mix.denoiser(proc), proc, 10, pilot, fine_steps=64)
    x_T = proc.prior_sample((256, 2), torch.Generator().manual_seed(7), dtype=torch.float64)
    ref, _ = bench.pf_ode_reference(mix, proc, x_T, proc.t_max, rtol=1e-8)

    def rms(schedule):
        x = sample(mix.denoiser(proc), proc, x_T, sampler="ddim", steps=10, schedule=schedule, dtype=torch.float64)
        return float(((x - ref) ** 2).mean().sqrt())

    assert rms(ts) <= rms(schedules.make("logsnr", 10, proc))


def test_bench_optimized_grid_runs_for_deterministic_samplers_only():
    proc = processes.make("vp-discrete")
    configs = bench.our_configs(proc, ["optimized"], ["ddim", "ddpm", "unipc_bh2"])
    assert [c.sampler for c in configs] == ["ddim", "unipc_bh2"]
    problem = bench.make_problem("ring2d", proc, 64, seed=0, ref_points=16, rtol=1e-8, gap_rtol=None)
    row = bench.measure(problem, configs[1], 5)
    assert row.error is None and row.nfe == 5 and row.rms is not None
    # the pilot ran once for this problem's mixture, on its own starts, and its model calls are on record
    assert [p[1:3] for p in bench.pilots() if p[0] is problem.mixture] == [("vp-discrete", True)]
    assert [p[3] for p in bench.pilots() if p[0] is problem.mixture][0] > 0


@pytest.mark.parametrize("name", ["vp", "sub-vp", "ve", "edm", "flow", "cosine"])
def test_every_process_gives_a_valid_grid(name):
    # flow and cosine VP have alpha(t_max) = 0 (lambda = -inf): the first jump is a finite DDIM step from pure noise
    proc = processes.make("vp", schedule="cosine") if name == "cosine" else processes.make(name)
    mix = analytic.ring2d()
    x = proc.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    fit = fit_schedule(mix.denoiser(proc), proc, x, fine_steps=24)
    assert torch.isfinite(fit.cost.triu(1)[fit.cost.triu(1) != 0]).all()
    ts = fit.grid(6)
    assert ts.numel() == 7 and float(ts[0]) == proc.t_max and float(ts[-1]) == proc.t_min
    y = sample(mix.denoiser(proc), proc, x, sampler="unipc_bh2", steps=6, schedule=ts, dtype=torch.float64)
    assert torch.isfinite(y).all()
