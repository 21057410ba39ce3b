"""The DDPM variational bound (Ho et al. 2020, eq. 5, with the discretized decoder of eq. 13): ``ddpm_vlb``
evaluates it (also ``scorediff.likelihood``'s method "vlb"), ``VLBLoss`` trains on it (the loss "vlb"; Nichol &
Dhariwal 2021's L_vlb). The posterior q(x_{k-1} | x_k, x0) is ``VPDiscrete.posterior``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..parameterizations import Parameterization
from ..processes.base import Process
from ..processes.vp import VPDiscrete
from ..utils import append_dims, sum_flat, unknown
from .base import Loss

VARIANCES = ("beta", "beta_tilde")
DECODERS = ("discretized", "gaussian")


def _normal_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) || N(mean2, var2)) elementwise (variances broadcast)."""
    return 0.5 * (torch.log(var2) - torch.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1)


def _log_diff_ndtr(a: Tensor, b: Tensor) -> Tensor:
    """log(Phi(b) - Phi(a)) for a < b, stable in both tails (a = -inf, b = +inf allowed)."""
    upper = a > 0  # both in the upper tail: use Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    hi = torch.where(upper, torch.special.log_ndtr(-a), torch.special.log_ndtr(b))
    lo = torch.where(upper, torch.special.log_ndtr(-b), torch.special.log_ndtr(a))
    return hi + torch.log1p(-torch.exp(lo - hi).clamp(max=1.0))


def discretized_gaussian_log_likelihood(x0: Tensor, mean: Tensor, var: Tensor, bins: int = 256) -> Tensor:
    """log P(x0) of Ho et al. 2020 eq. 13, elementwise: data in [-1, 1] on ``bins`` levels (width 2/(bins-1)).

    Each level gets the Gaussian mass of [x - 1/(bins-1), x + 1/(bins-1)], the end levels the whole tail.
    """
    half = 1.0 / (bins - 1)
    sd = torch.sqrt(var)
    inf = torch.tensor(math.inf, dtype=x0.dtype, device=x0.device)
    lo = torch.where(x0 < -1 + 1e-3 * half, -inf, (x0 - half - mean) / sd)
    hi = torch.where(x0 > 1 - 1e-3 * half, inf, (x0 + half - mean) / sd)
    return _log_diff_ndtr(lo, hi)


def _gaussian_log_likelihood(x0: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    return -0.5 * (torch.log(2 * math.pi * var) + (x0 - mean) ** 2 / var)


def strided_steps(steps: int, stride: int | None) -> list[int]:
    """The DDPM steps 1 = s_1 < ... < s_K = T of a sub-chain with the given stride (every step if None)."""
    if stride is None or stride == 1:
        return list(range(1, steps + 1))
    if int(stride) < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    s = set(range(steps, 0, -int(stride))) | {1}
    return sorted(s)


class _Chain:
    """A (possibly respaced) DDPM chain: steps s_1..s_K of ``process`` and the VPDiscrete of the sub-chain.

    The sub-chain has alpha_bar'_k = alpha_bar_{s_k}, i.e. beta'_k = 1 - alpha_bar_{s_k} / alpha_bar_{s_{k-1}}
    (Nichol & Dhariwal 2021's respacing), so its forward marginals are the original ones and its bound is a
    valid bound on the same model evaluated at t = s_k / T.
    """

    def __init__(self, process: VPDiscrete, stride: int | None, variance: str):
        if not isinstance(process, VPDiscrete):
            raise ValueError(f"the DDPM bound needs a vp-discrete process, got '{process.name}'")
        if variance not in VARIANCES:
            raise unknown("variance", variance, VARIANCES)
        self.process = process
        self.steps = strided_steps(process.steps, stride)
        if len(self.steps) == process.steps:
            self.sub = process
        else:
            abar = process.alpha_bar[torch.tensor(self.steps) - 1]
            prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
            self.sub = VPDiscrete(betas=1 - abar / prev)
        betas = self.sub.betas
        abar = self.sub.alpha_bar
        prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        tilde = (1 - prev) / (1 - abar) * betas
        if variance == "beta":
            self.var = betas
        else:  # beta_tilde_1 = 0: the decoder takes beta_tilde_2 instead (as improved-diffusion's clipped log-variance)
            self.var = tilde.clone()
            self.var[0] = tilde[1] if len(tilde) > 1 else betas[0]
        self.t = torch.tensor(self.steps, dtype=torch.float64) / process.steps

    def prior_kl(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x0) || prior), summed over dimensions; the prior is the process's N(0, sigma(1)^2 I)."""
        ab = self.process.alpha_bar[-1].item()
        var_p = torch.tensor(self.process.prior_std**2, dtype=x0.dtype, device=x0.device)
        var_q = torch.tensor(1 - ab, dtype=x0.dtype, device=x0.device)
        return sum_flat(_normal_kl(math.sqrt(ab) * x0, var_q, torch.zeros_like(x0), var_p))

    def term(self, denoiser, x0: Tensor, k: Tensor, decoder: str, generator, **cond) -> Tensor:
        """One Monte Carlo term per example, in nats summed over dimensions: L_{k-1} for k >= 2, L_0 for k = 1.

        ``k`` (B,) indexes the sub-chain (1..K); x_{s_k} ~ q(x_{s_k} | x0) is drawn from ``generator``.
        """
        t = self.t.to(x0.device)[k - 1].to(x0.dtype)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.process._marginal(x0, t, eps)  # the chain's own times: nothing to check
        x0_hat = denoiser(x_t, t, **cond)
        mean_p, _ = self.sub._posterior(x0_hat, x_t, k)  # k drawn in 1..K
        var_p = append_dims(self.var.to(x0.device)[k - 1].to(x0.dtype), x0.ndim)
        mean_q, var_q = self.sub._posterior(x0, x_t, k.clamp(min=2) if len(self.steps) > 1 else k)
        kl = _normal_kl(mean_q, var_q.clamp_min(torch.finfo(x0.dtype).tiny), mean_p, var_p)
        first = append_dims(k == 1, x0.ndim)
        # examples not at k = 1 see a harmless decoder mean, so torch.where's unused branch has finite gradients
        mean0 = torch.where(first, mean_p, x0)
        if decoder == "discretized":
            nll0 = -discretized_gaussian_log_likelihood(x0, mean0, var_p)
        else:
            nll0 = -_gaussian_log_likelihood(x0, mean0, var_p)
        return sum_flat(torch.where(first, nll0, kl))


@dataclass
class VLB:
    """The DDPM bound per example: ``total`` = ``prior`` + ``terms.sum(1)`` (nats), ``bpd`` = total / (D ln 2).

    ``terms[:, 0]`` is the decoder term L_0, ``terms[:, k-1]`` the KL L_{k-1} at sub-chain step k (DDPM step
    ``steps[k-1]``). With the discretized decoder ``total`` is -log of a bound on the probability of the
    8-bit data, so ``bpd`` is the usual bits/dim; with the Gaussian decoder it is a density in x0's units.
    """

    total: Tensor
    bpd: Tensor
    prior: Tensor
    terms: Tensor
    steps: list[int]


def ddpm_vlb(
    denoiser: Callable[..., Tensor],
    process: VPDiscrete,
    x0: Tensor,
    *,
    variance: str = "beta",
    decoder: str = "discretized",
    stride: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    cond: dict | None = None,
) -> VLB:
    """The full DDPM variational bound per example (Ho et al. 2020, eq. 5), every term evaluated.

    -log p(x0) <= L_T + sum_{t=2}^T L_{t-1} + L_0, with L_T = KL(q(x_T|x0) || p(x_T)),
    L_{t-1} = E_{x_t ~ q(x_t|x0)} KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) (eqs. 6-7 for q), one sample of x_t
    per term, and L_0 = -log p(x0|x_1), the discretized Gaussian decoder of eq. 13 (or a plain Gaussian
    density with ``decoder="gaussian"`` for continuous data). The model's reverse step
    p(x_{t-1}|x_t) = N(mu(x_t, x0_hat), s_t^2 I) has the posterior mean with x0 replaced by x0_hat and fixed
    variance s_t^2 = beta_t or beta_tilde_t (``variance``).

    ``stride``: evaluate the bound of the strided sub-chain T, T - stride, ..., 1 (Nichol & Dhariwal 2021's
    respacing): skipped steps are *not* dropped terms but merged transitions with
    beta'_k = 1 - alpha_bar_{s_k} / alpha_bar_{s_{k-1}}, so the result is an exact bound of that K-step model
    (a different, usually looser, bound than the T-step one). Runs without gradients.
    """
    if decoder not in DECODERS:
        raise unknown("decoder", decoder, DECODERS)
    chain = _Chain(process, stride, variance)
    cond = cond or {}
    b = x0.shape[0]
    ks = range(1, len(chain.steps) + 1)
    if progress:
        from tqdm.auto import tqdm

        ks = tqdm(ks, desc="ddpm bound", leave=False)
    terms = []
    with torch.no_grad():
        for k in ks:
            kk = torch.full((b,), k, dtype=torch.long, device=x0.device)
            terms.append(chain.term(denoiser, x0, kk, decoder, generator, **cond))
        terms = torch.stack(terms, dim=1)
        prior = chain.prior_kl(x0)
    total = prior + terms.sum(1)
    return VLB(total=total, bpd=total / (x0[0].numel() * math.log(2)), prior=prior, terms=terms, steps=chain.steps)


class VLBLoss(Loss):
    """The DDPM bound as a training loss (Ho et al. 2020 eq. 5; Nichol & Dhariwal 2021's L_vlb).

    Estimator: per example one step k ~ U{1..T}, loss = L_T + T L_{k-1} (L_0 when k = 1), an unbiased
    estimate of the whole bound; reduced to nats per dimension (divided by D, like the DSM losses' mean).
    Options: ``variance`` "beta" | "beta_tilde", ``decoder`` "discretized" (8-bit data in [-1, 1]) | "gaussian".
    The model is called through its x0_hat (``model(x_t, t)``), so any parameterization works.
    """

    name = "vlb"

    def __init__(self, process: Process, param: Parameterization, variance: str = "beta", decoder: str = "discretized"):
        super().__init__(process, param)
        if decoder not in DECODERS:
            raise unknown("decoder", decoder, DECODERS)
        self.chain = _Chain(process, None, variance)
        self.variance, self.decoder = variance, decoder

    def options(self) -> dict:
        return {"variance": self.variance, "decoder": self.decoder}

    def __call__(self, model, x0: Tensor, generator: torch.Generator | None = None, **cond) -> Tensor:
        n = len(self.chain.steps)
        k = torch.randint(1, n + 1, (x0.shape[0],), generator=generator, device=x0.device)
        term = self.chain.term(model, x0, k, self.decoder, generator, **cond)
        return (self.chain.prior_kl(x0) + n * term) / x0[0].numel()
