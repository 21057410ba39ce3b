"""What inpainting, SDEdit and the linear solvers share: the grid, alpha/sigma at t, the replacement hook."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import schedules
from ..processes.base import Process
from ..samplers import SAMPLERS, default_schedule
from ..utils import append_dims, unknown

INPAINT_METHODS = ("replace", "repaint", "smc")
LINEAR_METHODS = ("dps", "pigdm", "smc")
# default grid steps per method when ``steps`` is not given: smc's chosen by protocol 5b, replace's and repaint's
# by protocol 5d, dps's and pigdm's by protocol 5f (docs/results/defaults-protocol-5.md, ``benchmarks/smc_steps.py``;
# dps and pigdm: no count was within the rule's margin on every problem, so the rule's fallback, the largest)
DEFAULT_STEPS = {"replace": 400, "repaint": 200, "dps": 400, "pigdm": 400, "smc": 400}


def default_steps(method: str, steps: int | None) -> int:
    """``steps`` if given, else the method's ``DEFAULT_STEPS``."""
    return DEFAULT_STEPS[method] if steps is None else int(steps)


# -- shared bits -------------------------------------------------------------------------------------------------


def _grid(process: Process, sampler: str, steps: int, schedule: str | None) -> Tensor:
    if sampler not in SAMPLERS:
        raise unknown("sampler", sampler, SAMPLERS)
    return schedules.make(schedule or default_schedule(sampler, process), steps, process)


def _coeffs(process: Process, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    t = t.to(torch.float64)
    return (append_dims(process.alpha(t), like.ndim).to(like.dtype),
            append_dims(process.sigma(t), like.ndim).to(like.dtype))


class _Replace:
    """The replacement hook: x <- m * (alpha(t) known + sigma(t) eps) + (1 - m) * x, eps fresh at every call."""

    def __init__(self, process: Process, known: Tensor, mask: Tensor, generator: torch.Generator):
        self.process, self.known, self.mask, self.generator = process, known, mask, generator

    def __call__(self, x: Tensor, t: Tensor, x0_hat: Tensor | None = None) -> Tensor:
        a, s = _coeffs(self.process, t, x)
        eps = torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)
        return torch.where(self.mask, a * self.known + s * eps, x)


def _check_inputs(known: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    if not torch.is_tensor(known) or known.ndim < 2:
        raise ValueError(f"known must be a (B, *event) tensor, got {type(known).__name__} "
                         f"of shape {tuple(getattr(known, 'shape', ()))}")
    m = torch.as_tensor(mask, device=known.device)
    if m.dtype != torch.bool:
        m = m > 0.5
    if m.shape != known.shape and m.shape != known.shape[1:]:
        raise ValueError(f"mask must have the shape of one example {tuple(known.shape[1:])} or of the batch "
                         f"{tuple(known.shape)}, got {tuple(m.shape)}")
    return known, m.expand(known.shape)


