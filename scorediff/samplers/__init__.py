"""Samplers: one function per algorithm, one explicit registry, and ``sample`` for the common case.

Every entry of ``SAMPLERS`` has the signature
``sample_<name>(denoiser, process, x, ts, *, generator=None, callback=None, hook=None, **options) -> x0``
and carries ``fn.info`` (a ``SamplerInfo``: order, stochastic, nfe per step, default schedule). The
shared conventions (conditioning, noise, hooks, the denoise-to-zero last step) are in ``_common``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import schedule_fit, schedules
from ..processes.base import Process
from ..schedule_fit import ScheduleFit
from ..utils import check_options, unknown
from . import consistency, ddim, ddpm, dpm_solver, dpm_solver_pp, edm, langevin, ode, pc, pndm, sde, unipc
from ._common import Callback, Denoiser, Hook, SamplerInfo, bind_cond, ode_to_zero
from ._defaults import PROCESS_DEFAULTS, process_key
from .cld import sample_cld_euler_maruyama, sample_cld_heun, sample_cld_ode, sample_sscs
from .parallel import parallel

# name -> sampler function; one line per sampler (no import side effects)
SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm.sample_ddpm,
    "ddim": ddim.sample_ddim,
    "euler": edm.sample_euler,
    "heun": edm.sample_heun,
    "euler_maruyama": sde.sample_euler_maruyama,
    "pc": pc.sample_pc,
    "annealed_langevin": langevin.sample_annealed_langevin,
    "ode": ode.sample_ode,
    "dpm_solver": dpm_solver.sample_dpm_solver,
    "dpm_solver_pp_2s": dpm_solver_pp.sample_dpm_solver_pp_2s,
    "dpm_solver_pp_2m": dpm_solver_pp.sample_dpm_solver_pp_2m,
    "dpm_solver_pp_3m": dpm_solver_pp.sample_dpm_solver_pp_3m,
    "dpm_solver_pp_2m_sde": dpm_solver_pp.sample_dpm_solver_pp_2m_sde,
    "unipc_bh1": unipc.sample_unipc_bh1,
    "unipc_bh2": unipc.sample_unipc_bh2,
    "unipc_bh2_3": unipc.sample_unipc_bh2_3,
    "pndm": pndm.sample_pndm,
    "plms": pndm.sample_plms,
    "consistency": consistency.sample_consistency,
    "sscs": sample_sscs,
    "cld_euler_maruyama": sample_cld_euler_maruyama,
    "cld_heun": sample_cld_heun,
    "cld_ode": sample_cld_ode,
}

# The sampler (and its budget in model calls) used wherever the library picks one for the user: chosen by
# protocols 3 and 4 of benchmarks/README.md ("the default sampler"; benchmarks/default_sampler.py): the one
# (sampler, ending) pair within 0.1 nats of log-density gap at 50 calls on every process that reaches sigma = 0.
DEFAULT_SAMPLER = "plms"
DEFAULT_NFE = 50
DEFAULT_PHASE_SAMPLER = "sscs"  # on a phase-space process (cld): the paper's sampler

# How a grid ends (``sample(..., ending=)``): "t_min" (the last node is t_min; noise of size sigma(t_min) is left
# in), "zero" (``denoise_to_zero``: the last step returns x0_hat = D(x, t_min)), "midpoint" (the last step is the
# probability-flow ODE's stretch onto sigma = 0 to leading order, ``_common.ode_to_zero``; deterministic samplers).
ENDINGS = ("t_min", "zero", "midpoint")
# sampler -> its ending on processes that reach sigma = 0 (else "t_min"); protocol 4 chose the default sampler's
DEFAULT_ENDINGS: dict[str, str] = {"plms": "midpoint"}

# keywords of the common signature, not sampler options
_FRAMEWORK = {"denoiser", "process", "x", "ts", "generator", "callback", "hook"}


def options_of(name: str) -> dict[str, Any]:
    """The options a sampler accepts, with their defaults."""
    if name not in SAMPLERS:
        raise unknown("sampler", name, SAMPLERS)
    params = inspect.signature(SAMPLERS[name]).parameters
    return {k: p.default for k, p in params.items() if k not in _FRAMEWORK and p.kind == p.KEYWORD_ONLY}


def default_schedule(name: str, process: Process) -> str:
    """The default time grid of sampler ``name`` on ``process``: the process-aware table ``PROCESS_DEFAULTS``
    (chosen by the protocol of benchmarks/README.md), else the sampler's own ``info.default_schedule``."""
    if name not in SAMPLERS:
        raise unknown("sampler", name, SAMPLERS)
    return PROCESS_DEFAULTS.get(name, {}).get(process_key(process), SAMPLERS[name].info.default_schedule)


def sampler_table() -> list[dict[str, Any]]:
    """One row per registered sampler: name, order, stochastic, nfe/step, default grid, options, description."""
    rows = []
    for name, fn in SAMPLERS.items():
        info: SamplerInfo = fn.info
        rows.append(
            {
                "name": name,
                "order": info.order,
                "stochastic": info.stochastic,
                "nfe_per_step": info.nfe_per_step,
                "default_schedule": info.default_schedule,
                "options": options_of(name),
                "description": info.description,
            }
        )
    return rows


def pilot_reference(process: Process) -> str:
    """The sampler that integrates a fitted grid's reference trajectories: DPM-Solver++(3M), or on a phase-space
    process (CLD), whose samplers are its own, Heun on its probability-flow ODE (which calls the model at every
    node's state, as the pilot's cost reuse needs)."""
    return "cld_heun" if getattr(process, "phase_space", False) else "dpm_solver_pp_3m"


def _reference(reference: str | None, process: Process):
    reference = pilot_reference(process) if reference is None else reference
    if reference not in SAMPLERS:
        raise unknown("sampler", reference, SAMPLERS)
    if not SAMPLERS[reference].info.runs_on(process):
        raise ValueError(f"reference sampler '{reference}' does not run on process '{process.name}'; "
                         f"use '{pilot_reference(process)}'")
    return SAMPLERS[reference]


def fit_schedule(denoiser: Denoiser, process: Process, x: Tensor, *, reference: str | None = None,
                 **options) -> ScheduleFit:
    """``scorediff.schedule_fit.fit_schedule`` (GITS pilot) with the reference sampler named in the registry
    (default ``pilot_reference(process)``)."""
    return schedule_fit.fit_schedule(denoiser, process, x, reference=_reference(reference, process), **options)


def optimize_schedule(denoiser: Denoiser, process: Process, steps: int, x: Tensor, *,
                      reference: str | None = None, **options) -> Tensor:
    """``scorediff.schedule_fit.optimize_schedule`` (GITS grid) with the reference sampler named in the registry
    (default ``pilot_reference(process)``)."""
    return schedule_fit.optimize_schedule(denoiser, process, steps, x, reference=_reference(reference, process),
                                          **options)


def default_ending(name: str, process: Process) -> str:
    """The default ending of sampler ``name`` on ``process``: ``DEFAULT_ENDINGS`` where the process reaches
    sigma = 0, else "t_min" (VE's grid ends at sigma_min, its data level)."""
    if name not in SAMPLERS:
        raise unknown("sampler", name, SAMPLERS)
    if float(process._sigma(torch.tensor(0.0, dtype=torch.float64))) > 0:
        return "t_min"
    return DEFAULT_ENDINGS.get(name, "t_min")


def default_steps(name: str) -> int:
    """The default step count of sampler ``name``: ``DEFAULT_NFE`` model calls' worth (at least 2 steps) for a
    sampler with a fixed cost per step; 32 for the adaptive ``ode`` (report points) and for a sampler costing
    more than half the budget per step (``annealed_langevin``: noise levels of 100 calls each)."""
    if name not in SAMPLERS:
        raise unknown("sampler", name, SAMPLERS)
    nfe = SAMPLERS[name].info.nfe_per_step
    if not math.isfinite(nfe) or nfe > DEFAULT_NFE / 2:
        return 32
    return max(2, round(DEFAULT_NFE / nfe))


def _grid(sampler: str, process: Process, schedule, steps: int, schedule_options: dict, ending: str | None
          ) -> tuple[Tensor, bool]:
    """(the grid the sampler runs on, whether the midpoint ending follows it)."""
    named = isinstance(schedule, str)
    if ending is None:
        given = "denoise_to_zero" in schedule_options or not named
        ending = "t_min" if given else default_ending(sampler, process)
    if ending not in ENDINGS:
        raise unknown("ending", ending, ENDINGS)
    if ending == "midpoint" and getattr(process, "phase_space", False):
        raise ValueError(f"ending 'midpoint' is a data-space step; on process '{process.name}' use 't_min' or 'zero'")
    if ending == "midpoint" and SAMPLERS[sampler].info.stochastic:
        raise ValueError(f"ending 'midpoint' is the probability-flow ODE's last step; sampler '{sampler}' is "
                         "stochastic (use ending 'zero' or 't_min')")
    if not named:
        ts = torch.as_tensor(schedule, dtype=torch.float64)
        if ending == "midpoint" and not float(ts[-1]) > 0:
            raise ValueError(f"ending 'midpoint' steps from the grid's last time onto t = 0; this grid already ends at "
                             f"t = {float(ts[-1]):g}")
        return ts, ending == "midpoint"
    if ending != "t_min":
        if schedule_options.get("denoise_to_zero") is False:
            raise ValueError(f"ending '{ending}' contradicts schedule_options denoise_to_zero=False")
        schedule_options["denoise_to_zero"] = True
    if ending == "midpoint" and steps < 2:
        raise ValueError(f"ending 'midpoint' needs steps >= 2 (one of them is the last step), got {steps}")
    ts = schedules.make(schedule, steps, process, **schedule_options)
    # midpoint: the grid of "zero" without its final 0; the ending replaces that last step at the same cost
    return (ts[:-1], True) if ending == "midpoint" else (ts, False)


def sample(
    denoiser: Denoiser,
    process: Process,
    shape: tuple[int, ...] | Tensor,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    schedule: str | Tensor | list[float] | None = None,
    *,
    schedule_options: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callback | None = None,
    hook: Hook | None = None,
    cond: dict[str, Any] | None = None,
    ending: str | None = None,
    **options,
) -> Tensor:
    """Draw samples with a registered sampler.

    Args:
        denoiser: ``D(x, t, **cond) -> x0_hat`` (a trained ``NetDenoiser``, a guided one, or the exact oracle).
        process: the forward process the denoiser belongs to.
        shape: the batch shape (start from ``process.prior_sample`` at ts[0]) or a tensor, the start state.
        sampler: a name in ``SAMPLERS`` (default ``DEFAULT_SAMPLER``, chosen by protocol 4 of benchmarks/README.md).
        steps: number of steps (grid intervals; default ``default_steps(sampler)``: ``DEFAULT_NFE`` model calls).
        seed: seeds a fresh generator for the prior and the sampler's noise (ignored if ``generator`` is given).
        schedule: a ``scorediff.schedules`` name (default: ``default_schedule(sampler, process)``), or an explicit grid.
        schedule_options: keywords for ``schedules.make`` (e.g. ``{"rho": 5.0}``).
        ending: how a named grid ends (``ENDINGS``): "t_min", "zero" (= ``schedule_options={"denoise_to_zero":
            True}``) or "midpoint" (deterministic samplers: the same grid and model calls as "zero", but the last
            step is ``_common.ode_to_zero``). Default: ``default_ending(sampler, process)`` for a named grid given
            no ``denoise_to_zero``; an explicit grid ends as it is given ("midpoint" then steps from its last time).
        cond: conditioning keywords passed to every model call, e.g. ``{"y": labels}``.
        progress: show a progress bar over the steps.
        callback, hook: see ``scorediff.samplers._common``.
        **options: the sampler's own options (``options_of(name)``); unknown ones are a ValueError.
    """
    if sampler is None:
        sampler = DEFAULT_PHASE_SAMPLER if getattr(process, "phase_space", False) else DEFAULT_SAMPLER
    if sampler not in SAMPLERS:
        raise unknown("sampler", sampler, SAMPLERS)
    fn = SAMPLERS[sampler]
    if not fn.info.runs_on(process):
        raise ValueError(f"sampler '{sampler}' does not run on process '{process.name}'; samplers that do: "
                         f"{', '.join(n for n, f in SAMPLERS.items() if f.info.runs_on(process))}")
    check_options(f"sampler '{sampler}'", options, options_of(sampler))
    steps = default_steps(sampler) if steps is None else steps
    if torch.is_tensor(shape):
        x = shape.to(device=device if device is not None else shape.device, dtype=dtype)
        device = x.device
    else:
        x = None
    if generator is None:
        generator = torch.Generator(device=device if device is not None else "cpu").manual_seed(int(seed))
    if schedule is None:
        schedule = default_schedule(sampler, process)
    ts, midpoint = _grid(sampler, process, schedule, steps, dict(schedule_options or {}), ending)
    if x is None:
        x = process.prior_sample(tuple(shape), generator, device=device, dtype=dtype)
        # the prior is N(0, sigma(t_max)^2 I); a grid starting below t_max starts from N(0, sigma(ts[0])^2)
        if float(ts[0]) < process.t_max:
            x = x * (float(process._sigma(ts[:1])) / process.prior_std)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ts) - 1 + midpoint, desc=sampler)
        user_callback = callback

        def callback(info: dict[str, Any]) -> None:
            bar.update(1)
            if user_callback is not None:
                user_callback(info)

    try:
        with torch.no_grad():
            den = bind_cond(denoiser, cond)
            x = fn(den, process, x, ts, generator=generator, callback=callback, hook=hook, **options)
            if midpoint:
                x, x0_hat = ode_to_zero(den, process, x, float(ts[-1]))
                zero = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
                if hook is not None:
                    x = hook(x, zero, x0_hat)
                if callback is not None:
                    callback({"i": len(ts) - 1, "t": 0.0, "x": x, "x0_hat": x0_hat})
            return x
    finally:
        if bar is not None:
            bar.close()


__all__ = ["DEFAULT_ENDINGS", "DEFAULT_NFE", "DEFAULT_PHASE_SAMPLER", "DEFAULT_SAMPLER", "ENDINGS", "PROCESS_DEFAULTS", "SAMPLERS",
           "SamplerInfo", "ScheduleFit", "default_ending", "default_schedule", "default_steps", "fit_schedule", "optimize_schedule", "options_of", "pilot_reference", "parallel", "sample",
           "sampler_table"]
