"""Stochastic interpolants between two data distributions (the loss "bridge"): data-to-data translation.

Albergo, Boffi & Vanden-Eijnden 2023 ("Stochastic Interpolants: A Unifying Framework for Flows and Diffusions"),
with the linear interpolant of rectified flow (Liu et al. 2023) and, for paired data made by a degradation, the
image-to-image restoration bridge in the manner of I2SB (Liu et al. 2023). On the ``flow`` process's time,
    x_t = (1 - t) x0 + t x1 + gamma(t) z,   gamma(t) = gamma sqrt(t (1 - t)),   z ~ N(0, I),
x0 from the target data (the run's data set), x1 from the source: another data set (``source``, unpaired: an
independent draw) or the target itself degraded (``degrade``, paired: {"name": "blur", "std", "size"} or
{"name": "downsample", "factor"} for (C, H, W) images, the result at the original size). The network predicts the
interpolant's velocity b(t, x) = E[x1 - x0 + gamma'(t) z | x_t] (parameterization ``velocity``), trained on
    E_{t ~ U[t_min, t_max]} || b_theta(x_t, t) - (x1 - x0 + gamma'(t) z) ||^2     (per dimension).
Transport: dx/dt = b carries the source at t = 1 to the target at t = 0 (for every gamma; gamma > 0 smooths the
path's density). Sample with the registry's deterministic samplers from a source batch as the start state:
``scorediff.sample(denoiser, flow, x1, sampler="heun", steps=...)`` (the velocity parameterization's x0_hat is
x - t b, so every probability-flow sampler integrates b; the stochastic samplers assume Gaussian noise at t = 1 and
do not apply).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import data
from ..parameterizations import Parameterization, VelocityParam
from ..processes.base import Process
from ..utils import mean_flat
from .base import Loss

DEGRADATIONS = ("blur", "downsample")


def degrade(x: Tensor, name: str, std: float = 1.0, size: int = 5, factor: int = 2) -> Tensor:
    """The paired source of image batch x (B, C, H, W): a per-channel Gaussian blur (zero padding) or an average
    pooling by ``factor`` brought back to (H, W) by repetition."""
    if x.ndim != 4:
        raise ValueError(f"bridge: degrade {name!r} needs image data (B, C, H, W), got shape {tuple(x.shape)}")
    if name == "blur":
        r = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
        g = torch.exp(-0.5 * (r / std) ** 2)
        k = (g[:, None] * g[None, :]) / g.sum() ** 2
        c = x.shape[1]
        return torch.nn.functional.conv2d(x, k.expand(c, 1, size, size), padding=size // 2, groups=c)
    if x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(f"bridge: downsample factor {factor} must divide the image size {x.shape[2]}x{x.shape[3]}")
    return torch.nn.functional.avg_pool2d(x, factor).repeat_interleave(factor, 2).repeat_interleave(factor, 3)


class BridgeLoss(Loss):
    """The stochastic-interpolant loss (module docstring). Options: ``source`` (a data set name, or {"name",
    "options"}) or ``degrade`` ({"name": "blur" | "downsample", ...}), exactly one; ``gamma`` >= 0; ``t_min``,
    ``t_max`` (default the process's t_min and 1 - 1e-4)."""

    name = "bridge"

    def __init__(self, process: Process, param: Parameterization, source: Any = None, degrade: dict | None = None,
                 gamma: float = 0.0, t_min: float | None = None, t_max: float | None = None):
        super().__init__(process, param)
        if process.name != "flow":
            raise ValueError(f"loss 'bridge' interpolates on the 'flow' process's time, got '{process.name}'")
        if not isinstance(param, VelocityParam):
            raise ValueError(f"loss 'bridge' trains the interpolant's velocity: parameterization 'velocity', "
                             f"got '{param.name}'")
        if (source is None) == (degrade is None):
            raise ValueError("loss 'bridge': give exactly one of source (a data set: unpaired) and degrade (paired)")
        if not gamma >= 0:
            raise ValueError(f"bridge: gamma must be >= 0, got {gamma}")
        self.source, self.degrade, self.gamma = source, degrade, float(gamma)
        self._source_x: Tensor | None = None
        if torch.is_tensor(source):  # (library use: source examples given as a tensor)
            self._source_x, self.source = source, "tensor"
        elif source is not None:
            spec = {"name": source} if isinstance(source, str) else dict(source)
            ds = data.make(spec["name"], **spec.get("options", {}))
            self._source_x = ds.x if hasattr(ds, "x") else torch.stack([ds[i][0] for i in range(len(ds))])
        else:
            opts = {k: v for k, v in degrade.items() if k != "name"}
            if degrade.get("name") not in DEGRADATIONS:
                raise ValueError(f"bridge: degrade {degrade.get('name')!r} unknown; one of: {', '.join(DEGRADATIONS)}")
            bad = sorted(set(opts) - {"std", "size", "factor"})
            if bad:
                raise ValueError(f"bridge: degrade option(s) {bad} unknown; allowed: factor, size, std")
            self._degrade_opts = opts
        self.t_lo = process.t_min if t_min is None else float(t_min)
        self.t_hi = 1 - 1e-4 if t_max is None else float(t_max)
        if not 0 < self.t_lo < self.t_hi < 1:
            raise ValueError(f"bridge: need 0 < t_min < t_max < 1, got t_min={self.t_lo:g}, t_max={self.t_hi:g}")

    def options(self) -> dict:
        opts = {"gamma": self.gamma}
        if self.source is not None:
            opts["source"] = self.source
        else:
            opts["degrade"] = self.degrade
        return opts

    def gamma_and_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """gamma(t) = gamma sqrt(t (1 - t)) and its derivative gamma (1 - 2t) / (2 sqrt(t (1 - t)))."""
        root = torch.sqrt(t * (1 - t))
        return self.gamma * root, self.gamma * (1 - 2 * t) / (2 * root)

    def draw_source(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x1 for the batch x0: an independent draw of the source set, or x0 degraded (paired)."""
        if self._source_x is None:
            return degrade(x0, self.degrade["name"], **self._degrade_opts)
        src = self._source_x
        if tuple(src.shape[1:]) != tuple(x0.shape[1:]):
            raise ValueError(f"bridge: source examples have shape {tuple(src.shape[1:])}, the data "
                             f"{tuple(x0.shape[1:])}; a bridge needs the same shape")
        idx = torch.randint(0, src.shape[0], (x0.shape[0],), generator=generator, device=x0.device)
        return src.to(x0.device)[idx].to(dtype=x0.dtype)

    def __call__(self, model, x0: Tensor, generator: torch.Generator | None = None, **cond) -> Tensor:
        b = x0.shape[0]
        x1 = self.draw_source(x0, generator)
        u = torch.rand(b, generator=generator, device=x0.device, dtype=torch.float64)
        t64 = self.t_lo + (self.t_hi - self.t_lo) * u
        g, dg = (v.to(x0.dtype).reshape(b, *([1] * (x0.ndim - 1))) for v in self.gamma_and_derivative(t64))
        t = t64.to(x0.dtype)
        tt = t.reshape(b, *([1] * (x0.ndim - 1)))
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = (1 - tt) * x0 + tt * x1 + g * z
        target = x1 - x0 + dg * z
        return mean_flat((model.raw(x_t, t, **cond) - target) ** 2)


__all__ = ["DEGRADATIONS", "BridgeLoss", "degrade"]
