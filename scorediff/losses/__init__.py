"""Training losses, one file each: denoising score matching under every weighting (``dsm``: ``DSMLoss``) and the
DDPM variational bound (``vlb``: ``ddpm_vlb``, ``VLBLoss``), both behind ``Loss`` (``base``).
``make(name, process, param, **options)`` builds one by name; see the two modules for the maths.
"""

from __future__ import annotations

from collections.abc import Callable

from ..parameterizations import Parameterization
from ..processes.base import Process
from ..utils import check_options, unknown
from .base import Loss
from .bridge import BridgeLoss
from .dsm import TIME_SAMPLINGS, WEIGHTINGS, DSMLoss
from .hsm import HSMLoss
from .vlb import (
    DECODERS,
    VARIANCES,
    VLB,
    VLBLoss,
    ddpm_vlb,
    discretized_gaussian_log_likelihood,
    strided_steps,
)

LOSSES: dict[str, Callable[..., Loss]] = {
    "dsm": DSMLoss,
    "vlb": VLBLoss,
    "hsm": HSMLoss,
    "bridge": BridgeLoss,
}

_OPTIONS = {
    "dsm": ("weighting", "time_sampling", "importance", "gamma", "sigma_data", "P_mean", "P_std", "t_min", "t_max",
            "coupling", "sinkhorn_reg", "sinkhorn_iters"),
    "vlb": ("variance", "decoder"),
    "hsm": ("weighting", "time_sampling", "t_min", "t_max"),
    "bridge": ("source", "degrade", "gamma", "t_min", "t_max"),
}


def make(name: str, process: Process, param: Parameterization, **options) -> Loss:
    """Build a loss by name ("dsm", "vlb"); an unknown name or option raises a ValueError naming it."""
    if name not in LOSSES:
        raise unknown("loss", name, LOSSES)
    check_options(f"loss '{name}'", options, _OPTIONS[name])
    return LOSSES[name](process, param, **options)


def from_config(config: dict, process: Process, param: Parameterization) -> Loss:
    """Rebuild a loss from ``Loss.config()``."""
    config = dict(config)
    return make(config.pop("name"), process, param, **config)


__all__ = [
    "DECODERS", "LOSSES", "BridgeLoss", "HSMLoss", "TIME_SAMPLINGS", "VARIANCES", "VLB", "WEIGHTINGS", "DSMLoss", "Loss", "VLBLoss", "ddpm_vlb",
    "discretized_gaussian_log_likelihood", "from_config", "make", "strided_steps",
]
