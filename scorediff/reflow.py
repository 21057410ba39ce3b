"""Reflow: rectified flow's rectification (Liu, Gong & Liu 2023, "Flow Straight and Fast", Algorithm 1 / Sec. 2.3).

A trained flow model defines a deterministic coupling of noise and data: x1 ~ N(0, I) and x0 = ODE(x1), its
probability-flow ODE solved accurately from t = 1 to t = 0. Flow matching trained on those pairs,
    min E_{t ~ U, (x0, x1)} || v_theta((1 - t) x0 + t x1, t) - (x1 - x0) ||^2,
gives the next ("2-rectified") flow, whose paths are straighter (never more crossing: the transport cost does not
grow, Theorem 3.5), so few Euler steps suffice; repeating it gives the k-rectified flow. ``Reflow`` is that
objective, for the one training loop (``scorediff distill reflow RUN --out DIR`` builds it; the student starts as
the teacher). The pairs are drawn once, at the first call, from the teacher with ``sampler`` over ``sampler_steps``
(default Heun, 32 steps), ``pairs`` of them from ``seed`` (so a resumed run redraws the same pairs); each loss call
draws a batch of them. The loss is the velocity MSE above whatever the parameterization (``param.x0_weight`` moves it
onto the raw output), averaged over dimensions. Its data argument x0 is ignored (the pairs are the data).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .few_step import Objective
from .parameterizations import Parameterization, VelocityParam
from .processes.base import Process
from .samplers import SAMPLERS, sample
from .utils import mean_flat, unknown


class Reflow(Objective):
    """Reflow on teacher pairs (module docstring). Options: ``pairs``, ``sampler``, ``sampler_steps``, ``seed``."""

    name = "reflow"

    def __init__(self, process: Process, param: Parameterization, teacher: Callable[..., Tensor],
                 shape: tuple[int, ...], *, pairs: int = 4096, sampler: str = "heun", sampler_steps: int = 32,
                 seed: int = 0, t_min: float | None = None):
        super().__init__(process, param)
        if process.name != "flow":
            raise ValueError(f"reflow rectifies a flow model; the teacher's process is '{process.name}', not 'flow'")
        if sampler not in SAMPLERS:
            raise unknown("sampler", sampler, SAMPLERS)
        if SAMPLERS[sampler].info.stochastic:
            raise ValueError(f"reflow pairs come from the probability-flow ODE; sampler '{sampler}' is stochastic")
        if int(pairs) < 2 or int(sampler_steps) < 1:
            raise ValueError(f"reflow: pairs must be >= 2 and sampler_steps >= 1, got {pairs} and {sampler_steps}")
        self.teacher, self.shape = teacher, tuple(shape)
        self.pairs, self.sampler, self.sampler_steps, self.seed = int(pairs), sampler, int(sampler_steps), int(seed)
        self.t_lo = process.t_min if t_min is None else float(t_min)
        self.t_hi = process.t_max * (1 - 1e-4)  # alpha(1) = 0: stop where velocity weights stay finite (as dsm)
        self._data: tuple[Tensor, Tensor] | None = None

    def draw_pairs(self, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """(x0, x1): ``pairs`` noise samples x1 and their images x0 under the teacher's ODE (cached)."""
        if self._data is None:
            g = torch.Generator().manual_seed(self.seed)
            x1 = torch.randn((self.pairs, *self.shape), generator=g).to(device)
            x0 = torch.cat([sample(self.teacher, self.process, chunk, sampler=self.sampler, steps=self.sampler_steps,
                                   ending="zero", device=device)
                            for chunk in x1.split(1024)])
            self._data = (x0.detach(), x1)
        return self._data

    def __call__(self, model, x0: Tensor, generator: torch.Generator | None = None, **cond) -> Tensor:
        data, noise = self.draw_pairs(x0.device)
        b = x0.shape[0]
        idx = torch.randint(0, self.pairs, (b,), generator=generator, device=x0.device)
        y0, y1 = data.to(x0.device)[idx].to(x0.dtype), noise.to(x0.device)[idx].to(x0.dtype)
        u = torch.rand(b, generator=generator, device=x0.device, dtype=torch.float64)
        t = (self.t_lo + (self.t_hi - self.t_lo) * u).to(x0.dtype)
        x_t = self.process.marginal(y0, t, y1)
        target = self.param.target(y0, y1, x_t, t, self.process)
        # the velocity MSE on the raw output's scale: w = x0_weight(velocity) / x0_weight(param)
        w = VelocityParam().x0_weight(x_t, t, self.process) / self.param.x0_weight(x_t, t, self.process)
        return mean_flat(w * (model.raw(x_t, t, **cond) - target) ** 2)

    def options(self) -> dict:
        return {"pairs": self.pairs, "sampler": self.sampler, "sampler_steps": self.sampler_steps, "seed": self.seed}
