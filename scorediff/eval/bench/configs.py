"""Our samplers as benchmark configurations: whatever the registry holds, on each applicable time grid (and the
GITS grid fitted per problem, ``optimized``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ... import schedules
from ...samplers import SAMPLERS, default_schedule, fit_schedule, sample
from ...utils import unknown
from .measure import SamplerConfig, _CountingIdentity


def default_grids(process) -> tuple[str, ...]:
    """The time grids tried for a process: every continuous one, plus diffusers' trailing for DDPM."""
    grids = ["uniform", "logsnr", "karras", "quadratic"]
    if process.name == "vp-discrete":
        grids.append("trailing")
    return tuple(grids)


# Sampler options the benchmark sets, with the reason. Annealed Langevin's default T = 100 Langevin steps per
# noise level costs 100 model calls per step, more than any target NFE (5-50): with it, the closest step count
# is the single denoise-to-zero call (NFE 1). One Langevin step per level (T = 1) makes its step count its NFE,
# like the other samplers' (Song & Ermon 2019 use T = 100 at L = 10 levels, 1000 NFE: it is not a few-step method).
BENCH_OPTIONS: dict[str, dict[str, Any]] = {"annealed_langevin": {"n_steps_each": 1}}


T_MIN_SUFFIX = "@t_min"

# The "optimized" grid (``scorediff.samplers.fit_schedule``, GITS): fitted per problem (mixture and process) on a
# pilot batch of PILOT_N prior draws with its own seed, never the evaluation starts (seed and seed + 100 in the
# benchmark; the exact samples use seed + 1 .. seed + 3). One pilot per problem and ending serves every step count.
OPTIMIZED = "optimized"
PILOT_SEED = 9973
PILOT_N = 256
_PILOTS: dict[tuple, Any] = {}  # (id(mixture), process, denoise_to_zero) -> (mixture, ScheduleFit)


def pilots() -> list[tuple[Any, str, bool, int]]:
    """The pilots run so far: (mixture, process name, denoise_to_zero, the pilot's model calls)."""
    return [(m, key[1], key[2], fit.pilot_nfe) for key, (m, fit) in _PILOTS.items()]


def optimized_grid(denoiser, process, steps: int, denoise_to_zero: bool) -> Tensor:
    """The pilot-optimised grid for the exact denoiser's mixture (the pilot runs once per mixture and process).

    The free NFE probe (``_CountingIdentity``) gets a logsnr grid of the same length: a fixed-step sampler's NFE
    depends on the number of nodes only. Any other denoiser (a trained run) is an error: the pilot needs the
    problem's own model, which the benchmark's trained mode does not wire up.
    """
    if isinstance(denoiser, _CountingIdentity):
        return schedules.make("logsnr", steps, process, denoise_to_zero=denoise_to_zero)
    mixture = getattr(denoiser, "mixture", None)
    if mixture is None:
        raise ValueError("grid 'optimized' needs the exact oracle (scorediff.analytic's denoiser)")
    key = (id(mixture), process.name, denoise_to_zero)
    if key not in _PILOTS or _PILOTS[key][0] is not mixture:
        g = torch.Generator().manual_seed(PILOT_SEED)
        x = process.prior_sample((PILOT_N, *mixture.event_shape), g, dtype=torch.float64)
        _PILOTS[key] = (mixture, fit_schedule(mixture.denoiser(process), process, x,
                                              denoise_to_zero=denoise_to_zero))
    return _PILOTS[key][1].grid(steps)


def our_configs(process, grids: Iterable[str] | None = None, samplers: Iterable[str] | None = None,
                dtype: torch.dtype = torch.float64) -> list[SamplerConfig]:
    """One SamplerConfig per registered sampler and grid ("default" is the sampler's own default schedule).

    Grids end with the denoise-to-zero step where the process has sigma(0) = 0 (as diffusers' and
    k-diffusion's samplers do); the step count is then the number of model-calling steps. A grid name with
    the suffix "@t_min" (e.g. "default@t_min") ends at t_min instead, with the sampler's own last step and no
    denoising call: ``scorediff.sample``'s default for continuous grids, DPM-Solver's default (Lu et al. 2022)
    and diffusers' ``final_sigmas_type="sigma_min"``; its samples keep noise of size sigma(t_min).
    The grid "optimized" is fitted to the problem's exact denoiser on a pilot batch (``optimized_grid``);
    it is offered to deterministic fixed-step samplers only.
    """
    # every sampler of a Denoiser E[x0 | x_t] (not the consistency sampler, which needs a consistency model)
    names = [n for n, f in SAMPLERS.items() if f.info.denoiser == "any"] if samplers is None else list(samplers)
    grids = list(default_grids(process) if grids is None else grids)
    sigma0 = float(process._sigma(torch.tensor(0.0, dtype=torch.float64)))
    out = []
    for name in names:
        if name not in SAMPLERS:
            raise unknown("sampler", name, SAMPLERS)
        info = SAMPLERS[name].info
        if not info.runs_on(process):
            continue  # e.g. cld's samplers on a data-space process
        adaptive = not math.isfinite(info.nfe_per_step)
        seen = set()
        for grid in grids:
            base, at_t_min = (grid[: -len(T_MIN_SUFFIX)], True) if grid.endswith(T_MIN_SUFFIX) else (grid, False)
            g = default_schedule(name, process) if base == "default" else base
            if (g, at_t_min) in seen or at_t_min and sigma0 > 0:  # VE already ends at t_min
                continue
            if g == OPTIMIZED and (info.stochastic or adaptive):
                continue  # the pilot's costs are those of ODE steps; an adaptive solver picks its own steps
            seen.add((g, at_t_min))
            if at_t_min:
                opts = {"denoise_to_zero": False}
            else:
                opts = {} if g in ("leading", "trailing", "linspace") else {"denoise_to_zero": sigma0 == 0.0}

            extra = BENCH_OPTIONS.get(name, {})

            def run(x_T, steps, seed, denoiser, name=name, g=g, opts=opts, extra=extra):
                if g == OPTIMIZED:
                    ts = optimized_grid(denoiser, process, steps, opts["denoise_to_zero"])
                    return sample(denoiser, process, x_T, sampler=name, steps=steps, seed=seed, schedule=ts,
                                  dtype=dtype, **extra)
                return sample(denoiser, process, x_T, sampler=name, steps=steps, seed=seed, schedule=g,
                              schedule_options=opts, dtype=dtype, **extra)

            label = g + ("*" if g == default_schedule(name, process) else "") + (T_MIN_SUFFIX if at_t_min else "")
            shown = name + "".join(f" {k}={v}" for k, v in extra.items())
            out.append(SamplerConfig("scorediff", shown, label, bool(info.stochastic), run, adaptive=adaptive))
            if adaptive:
                break  # the grid only seeds an adaptive solver
    return out
