"""Straightness of a sampler's trajectories (Liu, Gong & Liu 2023, "Flow Straight and Fast", Definition 3.6):

    S = int_0^1 E || (x_0 - x_1) - dx_t/d(-t) ||^2 dt / (t_start - t_end)... normalised to the time span,

the mean squared deviation of the trajectory's velocity from that of the straight line (chord) joining its two
ends: 0 exactly when every path is a straight line travelled at constant speed, which one Euler step then integrates
without error. Measured on a fine grid of the registered ``euler`` sampler (each step's velocity is the chord of
that step), per example summed over dimensions and averaged over the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import schedules
from ..processes.base import Process
from ..samplers import SAMPLERS


def straightness(denoiser: Callable[..., Tensor], process: Process, x: Tensor, steps: int = 100,
                 schedule: str = "uniform") -> tuple[float, Tensor]:
    """(S, the end points x at t_min) for trajectories from the start x at t_max over ``steps`` Euler steps."""
    ts = schedules.make(schedule, int(steps), process)
    path = [x]
    end = SAMPLERS["euler"](denoiser, process, x, ts, callback=lambda d: path.append(d["x"]))
    span = float(ts[0] - ts[-1])
    chord = (end - x) / span
    dev = torch.zeros(x.shape[0], dtype=torch.float64)
    for i in range(len(path) - 1):
        h = float(ts[i] - ts[i + 1])
        vel = (path[i + 1] - path[i]) / h
        dev += h * ((vel - chord) ** 2).reshape(x.shape[0], -1).sum(1).double().cpu()
    return float((dev / span).mean()), end
