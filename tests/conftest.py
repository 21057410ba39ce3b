import os
import socket
from pathlib import Path

import pytest
import torch

import scorediff.processes as P

# Two CI cores: intra-op threading on tiny tensors oversubscribes them and makes the suite many times slower.
torch.set_num_threads(1)

# Every process kind, as (id, name, options): the generic tests run over all of them.
PROCESS_SPECS = [
    ("vp-discrete", "vp-discrete", {}),
    ("vp-discrete-cosine", "vp-discrete", {"schedule": "cosine"}),
    ("vp", "vp", {}),
    ("vp-cosine", "vp", {"schedule": "cosine"}),
    ("sub-vp", "sub-vp", {}),
    ("ve", "ve", {}),
    ("edm", "edm", {}),
    ("flow", "flow", {}),
]


@pytest.fixture(params=PROCESS_SPECS, ids=[s[0] for s in PROCESS_SPECS])
def process(request):
    _, name, opts = request.param
    return P.make(name, **opts)


def interior_times(process, n=9, lo=0.05, hi=0.95, dtype=torch.float64):
    """n times strictly inside (t_min, t_max), spaced in the process's own time (avoids grid points)."""
    frac = torch.linspace(lo, hi, n, dtype=dtype) + 0.0137
    return process.t_min + frac * (process.t_max - process.t_min) * 0.98


def env_one_thread() -> dict:
    """The environment for a subprocess (torchrun workers): one OpenMP thread, this checkout importable."""
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
