"""The interface every training loss has: ``loss(model, x0, generator=None, **cond) -> (B,)``."""

from __future__ import annotations

import torch
from torch import Tensor

from ..parameterizations import Parameterization
from ..processes.base import Process


class Loss:
    """Base class: ``loss(model, x0, generator=None, **cond) -> (B,)`` per-example loss; ``config()`` rebuilds it."""

    name = "loss"

    def __init__(self, process: Process, param: Parameterization):
        self.process, self.param = process, param

    def __call__(self, model, x0: Tensor, generator: torch.Generator | None = None, **cond) -> Tensor:
        raise NotImplementedError

    def options(self) -> dict:
        return {}

    def config(self) -> dict:
        """JSON-able options; ``make(config.pop("name"), process, param, **config)`` rebuilds the loss."""
        return {"name": self.name, **self.options()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"
