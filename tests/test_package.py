"""The package's lazy attribute access (PEP 562): light ``import scorediff``, every public module reachable."""

from __future__ import annotations

import os
import subprocess
import sys

import scorediff


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout


def test_bare_import_is_light_and_subpackages_load_on_first_access():
    out = _run(
        "import sys, scorediff\n"
        "print(sorted(m for m in sys.modules if m.startswith('scorediff.')), 'torch' in sys.modules)\n"
        "print(len(scorediff.samplers.SAMPLERS) > 0, callable(scorediff.processes.make), callable(scorediff.sample))\n"
        "print('scorediff.nets' in sys.modules, 'scorediff.training' in sys.modules)\n"
    ).splitlines()
    assert out[0] == "[] False", out  # nothing but the package itself, and no torch
    assert out[1] == "True True True", out
    assert out[2] == "False False", out  # samplers never pull in networks or training


def test_every_public_module_is_an_attribute():
    names = [n for n in dir(scorediff) if not n.startswith("_") and n not in ("annotations", "importlib", "pkgutil")]
    assert {"samplers", "processes", "likelihood", "analytic", "schedules", "sample"} <= set(names)
    out = _run("import scorediff\n" + "".join(f"scorediff.{n}\n" for n in names if n != "cli") + "print('ok')")
    assert out.strip() == "ok"
    try:
        scorediff.no_such_module  # noqa: B018
    except AttributeError as e:
        assert "no_such_module" in str(e)
    else:
        raise AssertionError("unknown attribute did not raise")
