"""Couplings of noise and data for flow-matching training: which noise sample each data sample is paired with.

Flow matching on the ``flow`` process regresses the velocity of x_t = (1 - t) x0 + t x1 (x0 data, x1 noise) on
pairs (x0, x1) drawn from a coupling pi of p_data and N(0, I). Any coupling with the right marginals gives a
velocity field that carries noise to data; the coupling decides how straight its paths are:

* ``independent``: pi = p_data x N(0, I) (Lipman et al. 2023; Liu et al. 2023's 1-rectified flow).
* ``ot``: exact minibatch optimal transport (Tong et al. 2024, "Improving and generalizing flow-based generative
  models with minibatch optimal transport"; Pooladian et al. 2023, "Multisample flow matching"): within each batch
  of B data and B noise samples, the permutation minimising sum_i ||x0_i - x1_perm(i)||^2
  (``scipy.optimize.linear_sum_assignment``, the Hungarian / Jonker-Volgenant algorithm, O(B^3)). As B grows the
  pairs approach the optimal transport map between the two laws, whose interpolation paths are straight lines.
* ``ot-sinkhorn``: entropic optimal transport for large batches (Cuturi 2013): the plan
  P = diag(a) exp((f + g - C) / eps) diag(b) from log-domain Sinkhorn iterations in torch, eps = ``reg`` times the
  mean cost; each data sample draws its partner from its row of P (Tong et al.'s sampling of pi).

``couple(name, x0, x1, generator)`` returns the noise reordered (or resampled) to pair with x0 row by row.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .utils import unknown

COUPLINGS = ("independent", "ot", "ot-sinkhorn")


def _cost(x0: Tensor, x1: Tensor) -> Tensor:
    """C_ij = ||x0_i - x1_j||^2 (float64, (B, B))."""
    a, b = x0.reshape(x0.shape[0], -1).double(), x1.reshape(x1.shape[0], -1).double()
    return torch.cdist(a, b).square()


def ot_pairing(x0: Tensor, x1: Tensor) -> Tensor:
    """The permutation perm (a (B,) long tensor) minimising sum_i ||x0_i - x1_perm(i)||^2 (exact assignment)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(_cost(x0, x1).cpu().numpy())
    perm = torch.empty(x0.shape[0], dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return perm.to(x0.device)


def sinkhorn_log_plan(x0: Tensor, x1: Tensor, reg: float = 0.05, iters: int = 200) -> Tensor:
    """log P of the entropic OT plan between the uniform empirical laws of x0 and x1 (rows sum to 1/B), float64.

    Log-domain Sinkhorn (Peyre & Cuturi 2019, Sec. 4.4): with eps = reg * mean(C) and log a = log b = -log B,
        f <- eps log a - eps logsumexp((g - C) / eps, axis 1),  g <- eps log b - eps logsumexp((f - C) / eps, axis 0),
    stable for small eps where the plain kernel exp(-C / eps) underflows.
    """
    c = _cost(x0, x1)
    n = c.shape[0]
    eps = float(reg) * float(c.mean().clamp(min=1e-12))
    log_w = -math.log(n)
    f = torch.zeros(n, dtype=c.dtype, device=c.device)
    g = torch.zeros(n, dtype=c.dtype, device=c.device)
    for _ in range(int(iters)):
        f = eps * log_w - eps * torch.logsumexp((g[None, :] - c) / eps, dim=1)
        g = eps * log_w - eps * torch.logsumexp((f[:, None] - c) / eps, dim=0)
    return (f[:, None] + g[None, :] - c) / eps


def couple(name: str, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None, *, reg: float = 0.05,
           iters: int = 200) -> Tensor:
    """x1 paired with x0 row by row under coupling ``name`` (``COUPLINGS``); ``reg``, ``iters``: Sinkhorn's."""
    if name == "independent":
        return x1
    if name == "ot":
        return x1[ot_pairing(x0, x1)]
    if name == "ot-sinkhorn":
        p = sinkhorn_log_plan(x0, x1, reg, iters).exp()
        j = torch.multinomial(p / p.sum(1, keepdim=True), 1, generator=generator).squeeze(1)
        return x1[j.to(x1.device)]
    raise unknown("coupling", name, COUPLINGS)


def check_coupling(name: str, process_name: str, reg: float, iters: int) -> None:
    """One clear line for a bad coupling option (a loss calls it once, at construction)."""
    if name not in COUPLINGS:
        raise unknown("coupling", name, COUPLINGS)
    if name != "independent" and process_name != "flow":
        raise ValueError(f"coupling {name!r} pairs noise and data for flow matching; it needs the 'flow' process "
                         f"(x_t = (1 - t) x0 + t x1), got '{process_name}'")
    if not reg > 0:
        raise ValueError(f"coupling: sinkhorn_reg must be > 0, got {reg}")
    if int(iters) < 1:
        raise ValueError(f"coupling: sinkhorn_iters must be >= 1, got {iters}")
