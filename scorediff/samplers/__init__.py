"""Samplers: one function per algorithm, one explicit registry, and ``sample`` for the common case.

Every entry of ``SAMPLERS`` has the signature
``sample_<name>(denoiser, process, x, ts, *, generator=None, callback=None, hook=None, **options) -> x0``
and carries ``fn.info`` (a ``SamplerInfo``: order, stochastic, nfe per step, default schedule). The
shared conventions (conditioning, noise, hooks, the denoise-to-zero last step) are in ``_common``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import schedule_fit, schedules
from ..processes.base import Process
from ..schedule_fit import ScheduleFit
from ..utils import check_options, unknown
from . import consistency, ddim, ddpm, dpm_solver, dpm_solver_pp, edm, langevin, ode, pc, pndm, sde, unipc
from ._common import Callback, Denoiser, Hook, SamplerInfo, bind_cond
from ._defaults import PROCESS_DEFAULTS, process_key
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
}

# The sampler (and its budget in model calls) used wherever the library picks one for the user: chosen by
# protocol 3 of benchmarks/README.md ("Protocol 3: the default sampler"; benchmarks/default_sampler.py).
DEFAULT_SAMPLER = "heun"
DEFAULT_NFE = 50

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


def fit_schedule(denoiser: Denoiser, process: Process, x: Tensor, *, reference: str = "dpm_solver_pp_3m",
                 **options) -> ScheduleFit:
    """``scorediff.schedule_fit.fit_schedule`` (GITS pilot) with the reference sampler named in the registry."""
    if reference not in SAMPLERS:
        raise unknown("sampler", reference, SAMPLERS)
    return schedule_fit.fit_schedule(denoiser, process, x, reference=SAMPLERS[reference], **options)


def optimize_schedule(denoiser: Denoiser, process: Process, steps: int, x: Tensor, *,
                      reference: str = "dpm_solver_pp_3m", **options) -> Tensor:
    """``scorediff.schedule_fit.optimize_schedule`` (GITS grid) with the reference sampler named in the registry."""
    if reference not in SAMPLERS:
        raise unknown("sampler", reference, SAMPLERS)
    return schedule_fit.optimize_schedule(denoiser, process, steps, x, reference=SAMPLERS[reference], **options)


def sample(
    denoiser: Denoiser,
    process: Process,
    shape: tuple[int, ...] | Tensor,
    sampler: str = "heun",
    steps: int = 32,
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
    **options,
) -> Tensor:
    """Draw samples with a registered sampler.

    Args:
        denoiser: ``D(x, t, **cond) -> x0_hat`` (a trained ``NetDenoiser``, a guided one, or the exact oracle).
        process: the forward process the denoiser belongs to.
        shape: the batch shape (start from ``process.prior_sample`` at ts[0]) or a tensor, the start state.
        sampler: a name in ``SAMPLERS``.
        steps: number of steps (grid intervals).
        seed: seeds a fresh generator for the prior and the sampler's noise (ignored if ``generator`` is given).
        schedule: a ``scorediff.schedules`` name (default: ``default_schedule(sampler, process)``), or an explicit grid.
        schedule_options: keywords for ``schedules.make`` (e.g. ``{"denoise_to_zero": True}``).
        cond: conditioning keywords passed to every model call, e.g. ``{"y": labels}``.
        progress: show a progress bar over the steps.
        callback, hook: see ``scorediff.samplers._common``.
        **options: the sampler's own options (``options_of(name)``); unknown ones are a ValueError.
    """
    if sampler not in SAMPLERS:
        raise unknown("sampler", sampler, SAMPLERS)
    fn = SAMPLERS[sampler]
    check_options(f"sampler '{sampler}'", options, options_of(sampler))
    if torch.is_tensor(shape):
        x = shape.to(device=device if device is not None else shape.device, dtype=dtype)
        device = x.device
    else:
        x = None
    if generator is None:
        generator = torch.Generator(device=device if device is not None else "cpu").manual_seed(int(seed))
    if schedule is None:
        schedule = default_schedule(sampler, process)
    if isinstance(schedule, str):
        ts = schedules.make(schedule, steps, process, **(schedule_options or {}))
    else:
        ts = torch.as_tensor(schedule, dtype=torch.float64)
    if x is None:
        x = process.prior_sample(tuple(shape), generator, device=device, dtype=dtype)
        # the prior is N(0, sigma(t_max)^2 I); a grid starting below t_max starts from N(0, sigma(ts[0])^2)
        if float(ts[0]) < process.t_max:
            x = x * (float(process._sigma(ts[:1])) / process.prior_std)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ts) - 1, desc=sampler)
        user_callback = callback

        def callback(info: dict[str, Any]) -> None:
            bar.update(1)
            if user_callback is not None:
                user_callback(info)

    try:
        with torch.no_grad():
            return fn(bind_cond(denoiser, cond), process, x, ts, generator=generator, callback=callback, hook=hook,
                      **options)
    finally:
        if bar is not None:
            bar.close()


__all__ = ["DEFAULT_NFE", "DEFAULT_SAMPLER", "PROCESS_DEFAULTS", "SAMPLERS", "SamplerInfo", "ScheduleFit", "default_schedule", "fit_schedule",
           "optimize_schedule", "options_of", "parallel", "sample", "sampler_table"]
