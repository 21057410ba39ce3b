"""scorediff: score-based diffusion generative models in one coherent package.

Entry points (see DESIGN.md): ``scorediff.processes.make``, ``scorediff.parameterizations``,
``scorediff.analytic``, ``scorediff.schedules.make``, ``scorediff.samplers.SAMPLERS``,
``scorediff.sample``, ``scorediff.likelihood.log_likelihood``.

``import scorediff`` imports nothing else: each public subpackage or module is imported on first
attribute access (PEP 562 module ``__getattr__``), so ``scorediff.samplers.SAMPLERS`` works after a
bare ``import scorediff`` and a command-line call pays only for what it uses.
"""

from __future__ import annotations

import importlib
import pkgutil

__version__ = "0.1.0"


def _public_modules() -> frozenset[str]:
    # every module or subpackage of this package whose name does not start with "_"
    return frozenset(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str):
    # Lazy so that ``import scorediff`` stays light and the import direction of DESIGN.md holds.
    if name == "sample":
        from .samplers import sample

        return sample
    if name in _public_modules():
        return importlib.import_module(f".{name}", __name__)  # binds the attribute on the package too
    raise AttributeError(f"module 'scorediff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _public_modules() | {"sample"})
