"""Harness for parity tests against an independent implementation: diffusers' schedulers.

A diffusers scheduler drives an epsilon-prediction model over its integer timesteps k in 0..T-1. Here the
model is the analytic (or any) Denoiser of a ``vp-discrete`` process: diffusers' timestep k is our time
t = (k + 1) / T, and eps_hat = (x - alpha_t x0_hat) / sigma_t. diffusers keeps its schedule in float32;
``float64_schedule`` replaces those tables by the process's float64 ones (same values, more digits) so
that a comparison can be tight. Only the schedule's tables are replaced; every update rule is diffusers'.

    sched = DDIMScheduler(**diffusers_config(process), set_alpha_to_one=True, clip_sample=False)
    x_theirs, ts, x_start = run_scheduler(sched, denoiser, process, noise, steps=10)
    x_ours = sample_ddim(denoiser, process, x_start, ts)

``run_scheduler`` returns the final sample in the process's coordinates, the grid ``ts`` it visited
(diffusers' timesteps as our times, followed by 0: their schedulers end on clean data), and the start
state in the process's coordinates: the scheduler scales the initial noise by its own
``init_noise_sigma`` (e.g. sigma~_max rather than 1 / alpha for Euler with "trailing" spacing), so the
start is read back through ``scale_model_input``, which is exactly the model's x_t.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def diffusers_config(process, prediction_type: str = "epsilon") -> dict:
    """The scheduler config matching a ``vp-discrete`` process (linear or squaredcos betas)."""
    if process.name != "vp-discrete":
        raise ValueError(f"diffusers parity needs a 'vp-discrete' process, got '{process.name}'")
    cfg = {"num_train_timesteps": process.steps, "prediction_type": prediction_type}
    if process.schedule == "linear":
        cfg.update(beta_schedule="linear", beta_start=process.beta_start, beta_end=process.beta_end)
    elif process.schedule == "cosine":
        cfg.update(beta_schedule="squaredcos_cap_v2")
    else:
        cfg.update(trained_betas=process.betas.tolist())
    return cfg


def float64_schedule(scheduler, process) -> None:
    """Replace the scheduler's float32 schedule tables by the process's float64 values (call before
    ``set_timesteps``); ``_snap_sigmas`` does the same for the sigma tables built by ``set_timesteps``."""
    abar = process.alpha_bar.clone()
    tables = {
        "betas": process.betas.clone(),
        "alphas": 1 - process.betas,
        "alphas_cumprod": abar,
        "alpha_t": abar.sqrt(),
        "sigma_t": (1 - abar).sqrt(),
    }
    tables["lambda_t"] = tables["alpha_t"].log() - tables["sigma_t"].log()
    for name, value in tables.items():
        if hasattr(scheduler, name):
            setattr(scheduler, name, value)
    if hasattr(scheduler, "final_alpha_cumprod") and getattr(scheduler.config, "set_alpha_to_one", False):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)


def _snap_sigmas(scheduler, process) -> None:
    """Map each float32 entry of ``scheduler.sigmas`` to the float64 sigma~ = sqrt((1 - abar) / abar) it rounds."""
    if not hasattr(scheduler, "sigmas") or not torch.is_tensor(scheduler.sigmas):
        return
    table = torch.cat([((1 - process.alpha_bar) / process.alpha_bar).sqrt(), torch.zeros(1, dtype=torch.float64)])
    s = scheduler.sigmas.to(torch.float64)
    idx = (s[:, None] - table[None]).abs().argmin(dim=1)
    snapped = table[idx]
    if not torch.allclose(snapped, s, rtol=1e-5, atol=1e-7):
        return  # off-grid sigmas (interpolated timesteps): leave diffusers' own values
    scheduler.sigmas = snapped.to(scheduler.sigmas.device)


def eps_model(denoiser: Callable[..., Tensor], process) -> Callable[[Tensor, Tensor], Tensor]:
    """An epsilon-prediction model over diffusers' timesteps, built from a Denoiser of ``process``."""
    T = process.steps

    def model(x: Tensor, k: Tensor | float) -> Tensor:
        t = (torch.as_tensor(k, dtype=torch.float64) + 1) / T
        tb = torch.full((x.shape[0],), float(t), dtype=x.dtype)
        a, s = float(process.alpha(t)), float(process.sigma(t))
        return (x - a * denoiser(x, tb)) / s

    return model


def timesteps_to_ts(timesteps: Tensor, process) -> Tensor:
    """diffusers' timesteps (duplicates removed, order kept) as our grid, with the final clean node t = 0."""
    ks = []
    for k in timesteps.tolist():
        if not ks or k != ks[-1]:
            ks.append(k)
    ts = (torch.tensor(ks, dtype=torch.float64) + 1) / process.steps
    return torch.cat([ts, torch.zeros(1, dtype=torch.float64)])


def run_scheduler(
    scheduler,
    denoiser: Callable[..., Tensor],
    process,
    x: Tensor,
    steps: int,
    step_kwargs: dict | Callable[[int], dict] | None = None,
    float64: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample with a diffusers scheduler from the initial noise ``x`` (scaled by ``init_noise_sigma``).

    Returns (final sample, our grid ts, start state x_t at ts[0] in the process's coordinates).
    ``step_kwargs`` go to every ``scheduler.step``; a callable gets the call's index and returns them
    (e.g. ``lambda i: {"eta": 1.0, "variance_noise": draws[i]}`` to feed a stochastic step our noise).
    """
    if float64:
        float64_schedule(scheduler, process)
    scheduler.set_timesteps(steps)
    if float64:
        _snap_sigmas(scheduler, process)
    model = eps_model(denoiser, process)
    sample = x * scheduler.init_noise_sigma
    x_start = scheduler.scale_model_input(sample, scheduler.timesteps[0]).clone()
    for i, k in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(sample, k)
        eps = model(model_input, k)
        kwargs = step_kwargs(i) if callable(step_kwargs) else (step_kwargs or {})
        sample = scheduler.step(eps, k, sample, **kwargs).prev_sample
    return sample, timesteps_to_ts(scheduler.timesteps, process), x_start


# -- appended for the high-order solvers (tests/test_parity_dpm.py) ------------------------------------------


class _TorchFloat64:
    """Stands in for the ``torch`` module inside one diffusers scheduler module, with float32 read as float64."""

    float32 = torch.float64

    def __getattr__(self, name: str):
        return getattr(torch, name)


class float64_updates:
    """Context manager: inside it, a diffusers scheduler module's ``x.to(torch.float32)`` upcasts keep float64.

    DPMSolverMultistepScheduler.step casts the sample to float32 before its update ("upcast to avoid
    precision issues"), which would cap a float64 comparison at ~1e-7. Only the dtype constant the module
    reads is swapped; its update rules run unchanged.
    """

    def __init__(self, module):
        self.module = module

    def __enter__(self):
        self.saved = self.module.torch
        self.module.torch = _TorchFloat64()
        return self

    def __exit__(self, *exc):
        self.module.torch = self.saved
        return False


def timesteps_to_ts_final(timesteps: Tensor, process, t_final: float) -> Tensor:
    """Like ``timesteps_to_ts`` but ending at ``t_final`` (e.g. 1 / T for diffusers' final_sigmas_type="sigma_min")."""
    ts = timesteps_to_ts(timesteps, process)[:-1]
    return torch.cat([ts, torch.tensor([t_final], dtype=torch.float64)])
