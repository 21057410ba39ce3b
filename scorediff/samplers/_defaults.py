"""Process-aware default time grids: ``PROCESS_DEFAULTS[sampler][process key] -> grid name``.

Chosen by protocol 2b of benchmarks/README.md ("Default time grids": protocol 2 with the ``power`` grid added;
``python benchmarks/defaults.py --per-process``) and copied from its output unedited; a (sampler, process) pair not
listed uses the sampler's
``SamplerInfo.default_schedule``. The process key is the process's name, with "-cosine" for the cosine
schedules of ``vp`` and ``vp-discrete``.
"""

from __future__ import annotations

from ..processes.base import Process

# fmt: off
PROCESS_DEFAULTS: dict[str, dict[str, str]] = {
    "ddim": {"flow": "power", "sub-vp": "power", "vp": "quadratic", "vp-cosine": "power", "vp-discrete": "quadratic", "vp-discrete-cosine": "power"},
    "ddpm": {"flow": "power", "sub-vp": "quadratic", "vp": "quadratic", "vp-cosine": "power", "vp-discrete": "quadratic", "vp-discrete-cosine": "power"},
    "dpm_solver": {"flow": "power", "sub-vp": "power", "vp": "quadratic", "vp-cosine": "power", "vp-discrete": "quadratic", "vp-discrete-cosine": "power"},
    "dpm_solver_pp_2m": {"flow": "quadratic", "sub-vp": "quadratic", "vp-cosine": "quadratic"},
    "dpm_solver_pp_2m_sde": {"flow": "quadratic", "sub-vp": "quadratic", "vp-cosine": "power", "vp-discrete": "quadratic", "vp-discrete-cosine": "power"},
    "dpm_solver_pp_2s": {"flow": "quadratic", "sub-vp": "power", "vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete": "quadratic", "vp-discrete-cosine": "power"},
    "dpm_solver_pp_3m": {"flow": "quadratic", "sub-vp": "logsnr", "vp-cosine": "quadratic"},
    "euler": {"flow": "power", "sub-vp": "power", "vp": "quadratic", "vp-cosine": "power", "vp-discrete": "quadratic", "vp-discrete-cosine": "power"},
    "euler_maruyama": {"flow": "quadratic", "sub-vp": "power", "vp": "power", "vp-cosine": "quadratic", "vp-discrete": "quadratic"},
    "heun": {"edm": "logsnr", "flow": "power", "sub-vp": "power", "ve": "uniform", "vp": "quadratic", "vp-cosine": "power", "vp-discrete": "quadratic", "vp-discrete-cosine": "logsnr"},
    "pc": {"edm": "quadratic", "vp": "power", "vp-discrete": "power", "vp-discrete-cosine": "power"},
    "plms": {"edm": "logsnr_cosine", "flow": "power", "sub-vp": "power", "ve": "logsnr_cosine", "vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete": "quadratic", "vp-discrete-cosine": "logsnr_cosine"},
    "pndm": {"edm": "logsnr_cosine", "flow": "power", "sub-vp": "power", "ve": "logsnr_cosine", "vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete": "quadratic", "vp-discrete-cosine": "logsnr_cosine"},
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
