"""k-diffusion's samplers (Crowson, ``k_diffusion/sampling.py``) as peers on scorediff's analytic model.

k-diffusion works in the variance-exploding coordinates of Karras et al. (2022):
    x~ = x_t / alpha(t) = x0 + sigma~ eps,   sigma~ = sigma(t) / alpha(t) = exp(-lambda(t)),
and calls ``model(x~, sigma~) -> x0_hat``. The exact model there is our exact denoiser at the t with
log_snr(t) = -log sigma~, fed alpha(t) x~; x0_hat is the same in both coordinates.

Only the benchmark uses this; scorediff never imports k-diffusion.

Loading hack (kept here, on purpose): ``import k_diffusion`` runs its package ``__init__``, which imports
torchvision, clean-fid, ... (not installable here). We therefore load ``k_diffusion/sampling.py`` by
file under a private package name, with a stub ``utils`` module that provides the one helper it uses
(``append_dims``), and, when torchsde is missing, a stub ``torchsde`` whose BrownianTree raises: we always
pass our own seeded ``noise_sampler`` to the SDE samplers, so the Brownian tree is never built.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

_PKG = "_kdiffusion_peer"


def load_sampling() -> types.ModuleType:
    """Load ``k_diffusion.sampling`` without running k_diffusion's ``__init__``; raises ImportError if absent."""
    if f"{_PKG}.sampling" in sys.modules:
        return sys.modules[f"{_PKG}.sampling"]
    spec = importlib.util.find_spec("k_diffusion")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed (pip install --no-deps k-diffusion)")
    path = f"{list(spec.submodule_search_locations)[0]}/sampling.py"

    pkg = types.ModuleType(_PKG)
    pkg.__path__ = []
    utils = types.ModuleType(f"{_PKG}.utils")

    def append_dims(x: Tensor, target_dims: int) -> Tensor:
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    sys.modules[_PKG], sys.modules[f"{_PKG}.utils"] = pkg, utils
    stubbed_sde = False
    if importlib.util.find_spec("torchsde") is None:
        sde = types.ModuleType("torchsde")

        class BrownianTree:  # never used: every SDE sampler gets an explicit noise_sampler
            def __init__(self, *args, **kwargs):
                raise ImportError("torchsde is not installed; pass noise_sampler=")

        sde.BrownianTree = BrownianTree
        sys.modules["torchsde"], stubbed_sde = sde, True
    try:
        mod_spec = importlib.util.spec_from_file_location(f"{_PKG}.sampling", path)
        mod = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_spec.name] = mod
        mod_spec.loader.exec_module(mod)
    finally:
        if stubbed_sde:  # the stub stays bound inside the loaded module only
            del sys.modules["torchsde"]
    return mod


class KarrasModel:
    """``model(x~, sigma~) -> x0_hat`` for k-diffusion, from a scorediff Denoiser and its process."""

    def __init__(self, denoiser: Callable[..., Tensor], process):
        self.denoiser, self.process, self.nfe = denoiser, process, 0

    def __call__(self, x: Tensor, sigma: Tensor, **extra) -> Tensor:
        self.nfe += 1
        lam = -torch.log(torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)[:1])
        t = self.process.t_of_log_snr(lam)
        alpha = self.process._alpha(t)
        return self.denoiser((alpha * x.to(torch.float64)), t[0]).to(x.dtype)


@dataclass
class KPeer:
    """One k-diffusion sampler on one sigma grid. ``kind`` says how the step count is given."""

    name: str
    fn_name: str
    grid: str  # "karras" | "uniform" | "-" (sample_dpm_fast: n is the NFE)
    stochastic: bool
    options: dict

    @property
    def label(self) -> str:
        return f"k.{self.name}"


def peers() -> list[KPeer]:
    """The k-diffusion samplers benchmarked, each on Karras sigmas (rho = 7) and on a grid uniform in t."""
    out = []
    for name, fn, stoch in [
        ("euler", "sample_euler", False),
        ("heun", "sample_heun", False),
        ("dpm_2", "sample_dpm_2", False),
        ("lms", "sample_lms", False),
        ("dpmpp_2m", "sample_dpmpp_2m", False),
        ("euler_ancestral", "sample_euler_ancestral", True),
        ("dpmpp_2s_ancestral", "sample_dpmpp_2s_ancestral", True),
        ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", True),
        ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", True),
    ]:
        for grid in ("karras", "uniform"):
            out.append(KPeer(name, fn, grid, stoch, {}))
    out.append(KPeer("dpm_fast", "sample_dpm_fast", "-", False, {}))
    return out


def sigma_grid(process, grid: str, steps: int) -> Tensor:
    """sigma~ levels from sigma~(t_max) to sigma~(t_min), then 0 (float64)."""
    t_hi = torch.tensor(process.t_max, dtype=torch.float64)
    t_lo = torch.tensor(process.t_min, dtype=torch.float64)
    s_hi = float(process.sigma(t_hi) / process.alpha(t_hi))
    s_lo = float(process.sigma(t_lo) / process.alpha(t_lo))
    if grid == "karras":
        rho = 7.0
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
        sig = (s_hi ** (1 / rho) + ramp * (s_lo ** (1 / rho) - s_hi ** (1 / rho))) ** rho
    elif grid == "uniform":
        ts = torch.linspace(process.t_max, process.t_min, steps, dtype=torch.float64)
        sig = process.sigma(ts) / process.alpha(ts)
    else:
        raise ValueError(f"k-diffusion grid {grid!r} unknown; one of: karras, uniform")
    return torch.cat([sig, sig.new_zeros(1)])


def run(peer: KPeer, denoiser, process, x_T: Tensor, steps: int, seed: int) -> tuple[Tensor, int]:
    """Sample with ``peer`` from x_T (at t_max, process coordinates); returns (x0 samples, model calls)."""
    ks = load_sampling()
    model = KarrasModel(denoiser, process)
    t_hi = torch.tensor(process.t_max, dtype=torch.float64)
    x = x_T.to(torch.float64) / process.alpha(t_hi)  # into x~ coordinates
    gen = torch.Generator().manual_seed(seed)
    extra = dict(peer.options)
    if peer.stochastic:
        extra["noise_sampler"] = lambda s, s_next: torch.randn(x.shape, generator=gen, dtype=x.dtype)
    fn = getattr(ks, peer.fn_name)
    if peer.fn_name == "sample_dpm_fast":
        sigmas = sigma_grid(process, "karras", 2)
        out = fn(model, x, float(sigmas[1]), float(sigmas[0]), steps, disable=True, **extra)
    else:
        out = fn(model, x, sigma_grid(process, peer.grid, steps), disable=True, **extra)
    return out.to(torch.float64), model.nfe
