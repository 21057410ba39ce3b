"""Forward processes. ``make(name, **options)`` builds one by name; see ``base.Process`` for the interface."""

from __future__ import annotations

from collections.abc import Callable

from ..utils import unknown
from .base import Process
from .cld import CLD
from .ve import EDM, VE, Flow
from .vp import SubVP, VPCosine, VPDiscrete, VPLinear, cosine_betas, linear_betas, scaled_linear_betas


def _vp(schedule: str = "linear", **options) -> Process:
    if schedule == "linear":
        return VPLinear(**options)
    if schedule == "cosine":
        return VPCosine(**options)
    raise ValueError(f"vp: schedule {schedule!r} unknown; one of: linear, cosine")


PROCESSES: dict[str, Callable[..., Process]] = {
    "vp-discrete": VPDiscrete,
    "vp": _vp,
    "sub-vp": SubVP,
    "ve": VE,
    "edm": EDM,
    "flow": Flow,
    "cld": CLD,  # critically-damped Langevin: a phase-space state (processes/cld.py)
}


def make(name: str, **options) -> Process:
    """Build a process by name: "vp-discrete" (DDPM), "vp", "sub-vp", "ve", "edm", "flow", "cld"."""
    if name not in PROCESSES:
        raise unknown("process", name, PROCESSES)
    try:
        return PROCESSES[name](**options)
    except TypeError as e:  # an unknown keyword
        raise ValueError(f"process '{name}': bad option(s) {sorted(options)}: {e}") from None


def from_config(config: dict) -> Process:
    """Rebuild a process from ``Process.config()``."""
    config = dict(config)
    return make(config.pop("name"), **config)


__all__ = [
    "CLD", "EDM", "PROCESSES", "VE", "Flow", "Process", "SubVP", "VPCosine", "VPDiscrete", "VPLinear",
    "cosine_betas", "from_config", "linear_betas", "make", "scaled_linear_betas",
]
