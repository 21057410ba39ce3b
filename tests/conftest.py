import hashlib
import importlib
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch

import scorediff.processes as P

# Two CI cores: intra-op threading on tiny tensors oversubscribes them and makes the suite many times slower.
torch.set_num_threads(1)

# Every process kind, as (id, name, options): the generic tests run over all of them. Derived from the registry
# (each registered name with its defaults), plus the option variants that change the maths (cosine schedules),
# so a new process is tested without editing this list.
PROCESS_VARIANTS = [
    ("vp-discrete-cosine", "vp-discrete", {"schedule": "cosine"}),
    ("vp-cosine", "vp", {"schedule": "cosine"}),
]
PROCESS_SPECS = [(name, name, {}) for name in P.PROCESSES] + PROCESS_VARIANTS


def import_or_skip_outside_ci(name: str):
    """``pytest.importorskip(name)``, except in CI (the ``CI`` environment variable set), where the test extra
    installs every optional peer: there a missing import is an error, never a silent skip."""
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name)


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


# A finished 4-step toy2d run, made through the CLI once per module that asks for it (tests/test_faults.py,
# tests/test_fitted_schedule.py); a test copies it (``run_copy``) before changing anything.
TOY_FAST = ["--set", "optim.steps=4", "--set", "log.progress=false", "--set", "log.tensorboard=false",
            "--set", "sample.num=16", "--set", "sample.steps=2", "--set", "data.options.n=300"]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    from scorediff.cli import main

    out = tmp_path_factory.mktemp("toy") / "toy"
    assert main(["train", "toy2d", "--out", str(out), *TOY_FAST]) == 0
    return out


@pytest.fixture
def run_copy(toy_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(toy_run, dst)
    return dst


# The slow marker on the tests listed in tests/slow_tests.txt (measured), beside those marked in place.
SLOW_TESTS = frozenset(line.strip() for line in (Path(__file__).parent / "slow_tests.txt").read_text().splitlines()
                       if line.strip() and not line.startswith("#"))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
