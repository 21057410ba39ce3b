"""Process-aware default time grids: ``PROCESS_DEFAULTS[sampler][process key] -> grid name``.

Chosen by protocol 2c of benchmarks/README.md ("Default time grids": protocol 2 with the ``power`` grid added (2b),
measured on 1024 starts against an exact reference (2c); ``python benchmarks/defaults.py --per-process``) and copied
from its output unedited, then protocol 5c (docs/results/defaults-protocol-5.md: a generated distribution of problems,
``python benchmarks/defaults_protocol5.py``) for the cells of ``PROTOCOL_5C``; a (sampler, process) pair not listed uses the sampler's
``SamplerInfo.default_schedule``. The process key is the process's name, with "-cosine" for the cosine
schedules of ``vp`` and ``vp-discrete``.
"""

from __future__ import annotations

from ..processes.base import Process

# fmt: off
PROCESS_DEFAULTS: dict[str, dict[str, str]] = {
    "ddim": {"flow": "uniform", "sub-vp": "power", "vp": "quadratic", "vp-cosine": "power", "vp-discrete": "quadratic", "vp-discrete-cosine": "power"},
    "ddpm": {"flow": "quadratic", "sub-vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete-cosine": "quadratic"},
    "dpm_solver": {"flow": "power", "sub-vp": "power", "vp": "quadratic", "vp-cosine": "power", "vp-discrete": "quadratic", "vp-discrete-cosine": "uniform"},
    "dpm_solver_pp_2m": {"flow": "quadratic", "sub-vp": "quadratic", "vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete": "quadratic", "vp-discrete-cosine": "quadratic"},
    "dpm_solver_pp_2m_sde": {"flow": "quadratic", "sub-vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete-cosine": "quadratic"},
    "dpm_solver_pp_2s": {"flow": "power", "sub-vp": "power", "vp": "quadratic", "vp-cosine": "power", "vp-discrete": "quadratic", "vp-discrete-cosine": "power"},
    "dpm_solver_pp_3m": {"edm": "logsnr", "flow": "quadratic", "vp-cosine": "quadratic"},
    "euler": {"flow": "uniform", "sub-vp": "power", "vp": "quadratic", "vp-cosine": "power", "vp-discrete": "quadratic", "vp-discrete-cosine": "power"},
    "euler_maruyama": {"flow": "quadratic", "sub-vp": "quadratic", "vp": "quadratic", "vp-cosine": "power", "vp-discrete": "quadratic"},
    "heun": {"edm": "logsnr", "flow": "uniform", "sub-vp": "power", "ve": "uniform", "vp": "quadratic", "vp-cosine": "power", "vp-discrete": "power", "vp-discrete-cosine": "logsnr"},
    "pc": {"edm": "quadratic", "flow": "quadratic", "vp": "power", "vp-cosine": "power", "vp-discrete": "power"},
    "plms": {"edm": "logsnr_cosine", "flow": "power", "vp": "quadratic", "vp-cosine": "power", "vp-discrete": "quadratic", "vp-discrete-cosine": "logsnr_cosine"},
    "pndm": {"edm": "logsnr_cosine", "flow": "power", "sub-vp": "power", "ve": "logsnr_cosine", "vp": "quadratic", "vp-cosine": "power", "vp-discrete": "quadratic", "vp-discrete-cosine": "logsnr_cosine"},
    "unipc_bh1": {"flow": "quadratic", "sub-vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete": "quadratic"},
    "unipc_bh2": {"flow": "quadratic", "sub-vp": "quadratic", "vp": "quadratic", "vp-cosine": "quadratic", "vp-discrete": "quadratic", "vp-discrete-cosine": "quadratic"},
    "unipc_bh2_3": {"flow": "quadratic", "vp-discrete": "quadratic", "vp-discrete-cosine": "quadratic"},
}
# fmt: on
# Protocol 2c's exception, fixed before its run: the default sampler keeps the gap goal of protocol 4
# (tests/test_gap.py). 2c's pick for PLMS on sub-VP (its global `uniform`) gave a gap of -0.16 nats at 50 calls,
# so PLMS keeps protocol 2b's grid there (-0.09).
PROCESS_DEFAULTS["plms"]["sub-vp"] = "power"
# Protocol 5c (docs/results/defaults-protocol-5.md): issue 28's four samplers on its three processes, chosen by the
# 95th-percentile ratio to the best over 20 generated problems (benchmarks/defaults_protocol5.py --select-seeds 1,2
# --baseline 2c), the printed selection copied unedited (it replaces protocol 5's, which did not generalise to a fresh
# sample); every other cell is protocol 2c's.
PROTOCOL_5C = {
    "ddim": {"vp-discrete": "quadratic", "edm": "logsnr", "ve": "logsnr"},
    "heun": {"vp-discrete": "logsnr", "edm": "karras", "ve": "karras"},
    "dpm_solver_pp_2m": {"vp-discrete": "quadratic", "edm": "logsnr", "ve": "power"},
    "unipc_bh2": {"vp-discrete": "logsnr", "edm": "logsnr_cosine", "ve": "power"},
}
for _name, _cells in PROTOCOL_5C.items():
    PROCESS_DEFAULTS[_name].update(_cells)


def process_key(process: Process) -> str:
    """``"vp-discrete"``, ``"vp-discrete-cosine"``, ``"vp"``, ``"vp-cosine"``, ``"sub-vp"``, ``"ve"``, ``"edm"``, ``"flow"``."""
    config = process.config() if hasattr(process, "config") else {}
    name = config.get("name", type(process).__name__)
    return f"{name}-cosine" if config.get("schedule") == "cosine" else name
