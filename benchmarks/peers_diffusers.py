"""diffusers' schedulers as peers on scorediff's analytic model, on the DDPM linear schedule.

diffusers indexes the T = 1000 training steps by k = 0..T-1 with alphas_cumprod[k] = alpha_bar_{k+1}; scorediff's
"vp-discrete" process puts step i at t = i / T, so k <-> t = (k + 1) / T. Schedulers that call the model at a
fractional k (Karras sigmas) interpolate log sigma~ linearly between integer k (``_sigma_to_t``); the eps model
below inverts that same map, so the model it sees is exact at the noise level the scheduler believes in:
    sigma~(k) = exp(interp(k, 0..T-1, log sigma~_k)),  t = t(lambda = -log sigma~),
    eps_hat = (x_t - alpha(t) x0_hat) / sigma(t),  x0_hat from scorediff's exact denoiser.

Two coordinate systems: DDIM, DDPM, DPM-Solver(++), UniPC, PNDM and DEIS step x_t itself; Euler, Heun, LMS and
Euler-ancestral step x~ = x_t / alpha (and feed the model scale_model_input(x~) = x_t). The start state x_T at
t = 1 is converted exactly (x~ = x_T / alpha(1)) instead of through ``init_noise_sigma``.

Only the benchmark uses this; scorediff never imports diffusers.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

T_TRAIN = 1000


class EpsModel:
    """eps_hat(x_t, k) for diffusers from a scorediff Denoiser on a "vp-discrete" process; counts calls."""

    def __init__(self, denoiser, process):
        abar = process.alpha_bar.to(torch.float64)
        self.log_sigmas = (0.5 * (torch.log1p(-abar) - torch.log(abar))).numpy()
        self.denoiser, self.process, self.nfe = denoiser, process, 0

    def time_of(self, k: float) -> Tensor:
        if float(k).is_integer():
            return torch.tensor((k + 1) / T_TRAIN, dtype=torch.float64)
        log_s = float(np.interp(k, np.arange(T_TRAIN), self.log_sigmas))
        return self.process.t_of_log_snr(torch.tensor(-log_s, dtype=torch.float64))

    def __call__(self, x: Tensor, k) -> Tensor:
        self.nfe += 1
        t = self.time_of(float(k))
        x64 = x.to(torch.float64)
        x0 = self.denoiser(x64, t)
        return ((x64 - self.process._alpha(t) * x0) / self.process._sigma(t)).to(x.dtype)


@dataclass
class DPeer:
    """One diffusers scheduler configuration."""

    name: str
    cls_name: str
    stochastic: bool
    tilde: bool  # steps x~ = x / alpha (the Euler family) rather than x
    config: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"d.{self.name}"

    @property
    def grid(self) -> str:
        return "karras" if self.config.get("use_karras_sigmas") else self.config.get("timestep_spacing", "default")


def peers() -> list[DPeer]:
    """The diffusers schedulers benchmarked (those present in the installed version)."""
    tr = {"timestep_spacing": "trailing"}
    ka = {"use_karras_sigmas": True}
    cand = [
        DPeer("ddim", "DDIMScheduler", False, False, {**tr, "clip_sample": False}),
        DPeer("ddpm", "DDPMScheduler", True, False, {**tr, "clip_sample": False}),
        DPeer("euler", "EulerDiscreteScheduler", False, True, tr),
        DPeer("euler", "EulerDiscreteScheduler", False, True, ka),
        DPeer("heun", "HeunDiscreteScheduler", False, True, tr),
        DPeer("heun", "HeunDiscreteScheduler", False, True, ka),
        DPeer("lms", "LMSDiscreteScheduler", False, True, tr),
        DPeer("lms", "LMSDiscreteScheduler", False, True, ka),
        DPeer("euler_ancestral", "EulerAncestralDiscreteScheduler", True, True, tr),
        DPeer("dpm++2m", "DPMSolverMultistepScheduler", False, False, tr),
        DPeer("dpm++2m", "DPMSolverMultistepScheduler", False, False, ka),
        DPeer("dpm++3m", "DPMSolverMultistepScheduler", False, False, {**tr, "solver_order": 3}),
        DPeer("dpm++3m", "DPMSolverMultistepScheduler", False, False, {**ka, "solver_order": 3}),
        DPeer("dpm++2m_sde", "DPMSolverMultistepScheduler", True, False, {**tr, "algorithm_type": "sde-dpmsolver++"}),
        DPeer("dpm++2s", "DPMSolverSinglestepScheduler", False, False, {}),
        DPeer("dpm++3s", "DPMSolverSinglestepScheduler", False, False, {"solver_order": 3}),
        DPeer("unipc_bh2", "UniPCMultistepScheduler", False, False, tr),
        DPeer("unipc_bh2", "UniPCMultistepScheduler", False, False, ka),
        DPeer("unipc_bh1", "UniPCMultistepScheduler", False, False, {**tr, "solver_type": "bh1", "final_sigmas_type": "sigma_min"}),
        DPeer("pndm", "PNDMScheduler", False, False, {**tr, "skip_prk_steps": True}),
        DPeer("deis", "DEISMultistepScheduler", False, False, tr),
        DPeer("deis_3", "DEISMultistepScheduler", False, False, {**tr, "solver_order": 3}),
    ]
    import diffusers

    return [p for p in cand if hasattr(diffusers, p.cls_name)]


def make_scheduler(peer: DPeer, process):
    """The scheduler on the process's DDPM linear betas (diffusers keeps its alphas_cumprod in float32)."""
    import diffusers

    cls = getattr(diffusers, peer.cls_name)
    sched = cls(num_train_timesteps=T_TRAIN, beta_schedule="linear", beta_start=process.beta_start,
                beta_end=process.beta_end, prediction_type="epsilon", **peer.config)
    return sched


def run(peer: DPeer, denoiser, process, x_T: Tensor, steps: int, seed: int, sched=None) -> tuple[Tensor, int]:
    """Sample from x_T (at t = 1, process coordinates) with ``steps`` inference steps; (x0, model calls)."""
    if process.name != "vp-discrete" or process.steps != T_TRAIN:
        raise ValueError(f"diffusers peers need the 1000-step DDPM process, got {process!r}")
    sched = make_scheduler(peer, process) if sched is None else sched
    sched.set_timesteps(steps)
    if int(round(float(sched.timesteps[0]))) != T_TRAIN - 1:
        raise ValueError(f"{peer.label}: first timestep {float(sched.timesteps[0])} is not {T_TRAIN - 1}")
    model = EpsModel(denoiser, process)
    x = x_T.to(torch.float64)
    if peer.tilde:
        x = x * math.sqrt(1 + math.exp(2 * model.log_sigmas[-1]))  # x~ = x / alpha(1)
    kw = {}
    if "generator" in inspect.signature(sched.step).parameters:
        kw["generator"] = torch.Generator().manual_seed(seed)
    for k in sched.timesteps:
        eps = model(sched.scale_model_input(x, k), k)
        x = sched.step(eps, k, x, **kw).prev_sample
    return x.to(torch.float64), model.nfe
