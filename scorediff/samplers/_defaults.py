"""Process-aware default time grids: ``PROCESS_DEFAULTS[sampler][process key] -> grid name``.

Chosen by protocol 2 of benchmarks/README.md ("Default time grids"; ``python benchmarks/defaults.py
--per-process``) and copied from its output unedited; a (sampler, process) pair not listed uses the sampler's
``SamplerInfo.default_schedule``. The process key is the process's name, with "-cosine" for the cosine
schedules of ``vp`` and ``vp-discrete``.
"""

from __future__ import annotations

from ..processes.base import Process

# fmt: off
PROCESS_DEFAULTS: dict[str, dict[str, str]] = {
    "ddim": {"flow": "uniform", "sub-vp": "quadratic", "vp": "quadratic", "vp-cosine": "uniform", "vp-discrete": "quadratic", "vp-discrete-cosine": "uniform"},
    "ddpm": {"flow": "uniform", "sub-vp": "quadratic", "vp-cosine": "uniform", "vp-discrete": "quadratic", "vp-discrete-cosine": "uniform"},
    "dpm_solver": {"flow": "uniform", "sub-vp": "quadratic", "vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete": "quadratic", "vp-discrete-cosine": "uniform"},
    "dpm_solver_pp_2m": {"flow": "quadratic", "sub-vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete-cosine": "quadratic"},
    "dpm_solver_pp_2m_sde": {"flow": "quadratic", "sub-vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete": "quadratic", "vp-discrete-cosine": "quadratic"},
    "dpm_solver_pp_2s": {"flow": "quadratic", "sub-vp": "quadratic", "vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete": "quadratic", "vp-discrete-cosine": "quadratic"},
    "dpm_solver_pp_3m": {"flow": "quadratic", "sub-vp": "logsnr", "vp-cosine": "quadratic"},
    "euler": {"flow": "uniform", "sub-vp": "quadratic", "vp": "quadratic", "vp-cosine": "uniform", "vp-discrete": "quadratic", "vp-discrete-cosine": "uniform"},
    "euler_maruyama": {"flow": "quadratic", "sub-vp": "quadratic", "vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete": "quadratic"},
    "heun": {"edm": "logsnr", "flow": "uniform", "sub-vp": "quadratic", "ve": "uniform", "vp": "quadratic", "vp-cosine": "uniform", "vp-discrete": "quadratic", "vp-discrete-cosine": "logsnr"},
    "pc": {"edm": "quadratic", "vp": "quadratic", "vp-discrete": "quadratic"},
    "plms": {"edm": "logsnr_cosine", "sub-vp": "quadratic", "ve": "logsnr_cosine", "vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete": "quadratic", "vp-discrete-cosine": "logsnr_cosine"},
    "pndm": {"edm": "logsnr_cosine", "flow": "quadratic", "sub-vp": "quadratic", "ve": "logsnr_cosine", "vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete": "quadratic", "vp-discrete-cosine": "logsnr_cosine"},
    "unipc_bh1": {"flow": "quadratic", "sub-vp": "quadratic", "vp-cosine": "quadratic"},
    "unipc_bh2": {"flow": "quadratic", "sub-vp": "quadratic", "vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete-cosine": "quadratic"},
    "unipc_bh2_3": {"flow": "quadratic", "vp-discrete-cosine": "quadratic"},
}
# fmt: on


def process_key(process: Process) -> str:
    """``"vp-discrete"``, ``"vp-discrete-cosine"``, ``"vp"``, ``"vp-cosine"``, ``"sub-vp"``, ``"ve"``, ``"edm"``, ``"flow"``."""
    config = process.config() if hasattr(process, "config") else {}
    name = config.get("name", type(process).__name__)
    return f"{name}-cosine" if config.get("schedule") == "cosine" else name
