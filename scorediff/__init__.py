"""scorediff: score-based diffusion generative models in one coherent package.

Entry points (see DESIGN.md): ``scorediff.processes.make``, ``scorediff.parameterizations``,
``scorediff.analytic``, ``scorediff.schedules.make``, ``scorediff.samplers.SAMPLERS``,
``scorediff.sample``, ``scorediff.likelihood.log_likelihood``.
"""

from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy so that ``import scorediff`` stays light and the import direction of DESIGN.md holds.
    if name == "sample":
        from .samplers import sample

        return sample
    raise AttributeError(f"module 'scorediff' has no attribute {name!r}")
