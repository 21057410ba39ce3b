"""Training losses: denoising score matching under every weighting, and the DDPM variational bound.

Denoising score matching (Vincent 2011; Ho et al. 2020; Song et al. 2021; Karras et al. 2022): draw
t ~ p(t), eps ~ N(0, I), x_t = alpha(t) x0 + sigma(t) eps, and regress the network's raw output
F = ``model.raw(x_t, t)`` on the parameterization's target (``param.target``). Every weighting is
stated once on the x0 scale, w_x0(t) ||x0_hat - x0||^2, and moved onto the raw output by
``param.x0_weight`` (||F - target||^2 = x0_weight ||x0_hat - x0||^2), so the same weighting means
the same objective whatever the network predicts:

============  ===========================================  =====================================
weighting     w_x0(t)                                      reference
============  ===========================================  =====================================
simple        SNR = alpha^2 / sigma^2 (unit weight on eps)  Ho et al. 2020, L_simple
elbo          -(1/2) d SNR/dt / p(t)  (nats)                Kingma et al. 2021 (VDM), eq. 17
likelihood    g^2 alpha^2 / sigma^4 / p(t)  = 2 x elbo      Song et al. 2021 (ML training), lambda = g^2
min_snr       min(SNR, gamma)                               Hang et al. 2023 (min-SNR-gamma)
edm           (s~^2 + s_d^2) / (s~ s_d)^2, s~ = sigma/alpha  Karras et al. 2022, eq. 8 / Table 1
ncsn          sigma^2 on the score = SNR                   Song & Ermon 2019 (same as simple)
none          (plain MSE on the raw output)                -
============  ===========================================  =====================================

"elbo" and "likelihood" are integrals over t, so their per-sample weight is divided by the density
p(t) of the time sampling (a Monte Carlo estimate of the integral whatever p is); the others are
expectations over p(t) as their papers define them. Reduction: the squared error is *averaged* over
all but the batch dimension, so a loss is per dimension (for "elbo": nats per dimension of the
diffusion term of the bound).

Time sampling: "uniform" (continuous in [t_min, t_max]), "discrete" (t = i/T, i ~ U{1..T}, vp-discrete
only), "lognormal" (EDM: ln sigma~ ~ N(P_mean, P_std^2), t = t_of_log_snr(-ln sigma~)), "importance"
(density proportional to g^2 / sigma^2 = -2 d lambda/dt, sampled exactly by inverting lambda: the
per-sample likelihood weight becomes 2 (lambda(t_lo) - lambda(t_hi)) SNR, i.e. constant on the eps
scale), "levels" (uniform over NCSN's discrete sigma levels of a VE process built with ``levels``).

Where alpha(t_max) = 0 (flow, cosine VP) sampled times stop at t_max (1 - 1e-4), where alpha is
about 1e-4, so that weights such as SNR / x0_weight stay finite; the part of any bound beyond is O(alpha^2).

The DDPM bound (``"vlb"``, ``ddpm_vlb``) is Ho et al. 2020 eq. 5 with the discretized decoder of eq. 13;
see ``ddpm_vlb``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .parameterizations import ConsistencyParam, EDMPrecond, Parameterization
from .processes.base import Process
from .processes.vp import VPDiscrete
from .utils import append_dims, check_options, mean_flat, sum_flat, unknown

WEIGHTINGS = ("simple", "elbo", "likelihood", "min_snr", "edm", "ncsn", "none")
TIME_SAMPLINGS = ("uniform", "discrete", "lognormal", "importance", "levels")
_INTEGRAL_WEIGHTINGS = ("elbo", "likelihood")  # weights of an integral over t: divided by p(t)


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


def _t_hi(process: Process) -> float:
    """The largest time a loss samples: t_max, or just below it where alpha(t_max) = 0."""
    a = float(process._alpha(torch.tensor(process.t_max, dtype=torch.float64)))
    return process.t_max * (1 - 1e-4) if a < 1e-6 else process.t_max


def _d_log_snr(process: Process, t: Tensor) -> Tensor:
    """d lambda / dt = alpha'/alpha - sigma'/sigma (negative)."""
    return process._d_alpha(t) / process._alpha(t) - process._d_sigma(t) / process._sigma(t)


class DSMLoss(Loss):
    """Denoising score matching with a weighting and a time sampling (see the module docstring).

    Options:
        weighting: one of ``WEIGHTINGS`` (default "simple").
        time_sampling: one of ``TIME_SAMPLINGS``; default "discrete" for vp-discrete, "lognormal" for
            the edm weighting, "levels" for a VE process with levels, else "uniform".
        importance: True is a synonym of time_sampling="importance" (Song et al. 2021's variance reduction).
        gamma: min-SNR's gamma (5).
        sigma_data: EDM's sigma_data (default: the parameterization's, else 0.5).
        P_mean, P_std: EDM's log-normal (-1.2, 1.2).
        t_min, t_max: the range of continuous time sampling (default the process's t_min and t_max).
    """

    name = "dsm"

    def __init__(
        self,
        process: Process,
        param: Parameterization,
        weighting: str = "simple",
        time_sampling: str | None = None,
        importance: bool = False,
        gamma: float = 5.0,
        sigma_data: float | None = None,
        P_mean: float = -1.2,
        P_std: float = 1.2,
        t_min: float | None = None,
        t_max: float | None = None,
    ):
        super().__init__(process, param)
        if weighting not in WEIGHTINGS:
            raise unknown("weighting", weighting, WEIGHTINGS)
        if importance:
            if time_sampling not in (None, "importance"):
                raise ValueError(f"dsm: importance=True conflicts with time_sampling={time_sampling!r}")
            time_sampling = "importance"
        if time_sampling is None:
            if isinstance(process, VPDiscrete):
                time_sampling = "discrete"
            elif weighting == "edm":
                time_sampling = "lognormal"
            elif getattr(process, "levels", None) is not None:
                time_sampling = "levels"
            else:
                time_sampling = "uniform"
        if time_sampling not in TIME_SAMPLINGS:
            raise unknown("time sampling", time_sampling, TIME_SAMPLINGS)
        if time_sampling == "discrete" and not isinstance(process, VPDiscrete):
            raise ValueError(f"dsm: time_sampling 'discrete' needs a vp-discrete process, got '{process.name}'")
        if time_sampling == "levels" and getattr(process, "levels", None) is None:
            raise ValueError(f"dsm: time_sampling 'levels' needs a VE process built with levels=L, got {process!r}")
        if isinstance(param, ConsistencyParam) and time_sampling in ("discrete", "levels"):
            raise ValueError(
                f"dsm: the consistency parameterization has c_out(t_min) = 0, so its target is undefined at the grid "
                f"time t_min that time_sampling {time_sampling!r} hits; use 'uniform', 'lognormal' or 'importance'"
            )
        if gamma <= 0:
            raise ValueError(f"dsm: min-SNR gamma must be > 0, got {gamma}")
        if P_std <= 0:
            raise ValueError(f"dsm: P_std must be > 0, got {P_std}")
        if sigma_data is None:
            sigma_data = param.sigma_data if isinstance(param, EDMPrecond) else 0.5
        if sigma_data <= 0:
            raise ValueError(f"dsm: sigma_data must be > 0, got {sigma_data}")
        lo = process.t_min if t_min is None else float(t_min)
        hi = _t_hi(process) if t_max is None else float(t_max)
        if not (0 <= lo < hi <= process.t_max):
            raise ValueError(
                f"dsm: need 0 <= t_min < t_max <= {process.t_max:g} for process '{process.name}', got t_min={lo:g}, t_max={hi:g}"
            )
        self.weighting, self.time_sampling = weighting, time_sampling
        self.gamma, self.sigma_data = float(gamma), float(sigma_data)
        self.P_mean, self.P_std = float(P_mean), float(P_std)
        self.t_lo, self.t_hi = lo, hi
        self._user_range = (t_min, t_max)
        t = torch.tensor([lo, hi], dtype=torch.float64)
        self._lam_lo, self._lam_hi = (float(v) for v in process._log_snr(t))

    def options(self) -> dict:
        opts = {"weighting": self.weighting, "time_sampling": self.time_sampling}
        if self.weighting == "min_snr":
            opts["gamma"] = self.gamma
        if self.weighting == "edm" or self.time_sampling == "lognormal":
            opts.update(sigma_data=self.sigma_data, P_mean=self.P_mean, P_std=self.P_std)
        if self._user_range[0] is not None:
            opts["t_min"] = self.t_lo
        if self._user_range[1] is not None:
            opts["t_max"] = self.t_hi
        return opts

    # -- time sampling -----------------------------------------------------------------------------
    def sample_t(self, n: int, generator: torch.Generator | None = None, device=None, dtype=torch.float64) -> Tensor:
        """n times from this loss's time distribution (float64 computation, returned in ``dtype``)."""
        p = self.process
        if self.time_sampling == "discrete":
            i = torch.randint(1, p.steps + 1, (n,), generator=generator, device=device)
            t = i.to(torch.float64) / p.steps
        elif self.time_sampling == "levels":
            lt = p.level_times.to(device)
            t = lt[torch.randint(0, len(lt), (n,), generator=generator, device=device)]
        else:
            u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
            if self.time_sampling == "uniform":
                t = self.t_lo + (self.t_hi - self.t_lo) * u
            elif self.time_sampling == "importance":
                # CDF of the density -lambda'(t) / (lambda_lo - lambda_hi) is (lambda_lo - lambda(t)) / (...)
                t = p.t_of_log_snr(self._lam_lo + u * (self._lam_hi - self._lam_lo))
            else:  # lognormal: ln sigma~ ~ N(P_mean, P_std^2), lambda = -ln sigma~
                z = torch.randn(n, generator=generator, device=device, dtype=torch.float64)
                t = p.t_of_log_snr(-(self.P_mean + self.P_std * z))
            t = t.clamp(self.t_lo, self.t_hi)
        return t.to(dtype)

    def density(self, t: Tensor) -> Tensor:
        """p(t) of the time sampling (float64). For "discrete" and "levels" 1/t_max: their sum over the grid
        is read as a Riemann sum of the integral over [0, t_max]. The log-normal's clamping at the ends is ignored."""
        t = t.to(torch.float64)
        if self.time_sampling == "uniform":
            return torch.full_like(t, 1.0 / (self.t_hi - self.t_lo))
        if self.time_sampling in ("discrete", "levels"):
            return torch.full_like(t, 1.0 / self.process.t_max)
        dlam = _d_log_snr(self.process, t)
        if self.time_sampling == "importance":
            return -dlam / (self._lam_lo - self._lam_hi)
        z = (-self.process._log_snr(t) - self.P_mean) / self.P_std
        return torch.exp(-0.5 * z**2) / (self.P_std * math.sqrt(2 * math.pi)) * (-dlam)

    # -- weights -----------------------------------------------------------------------------------
    def x0_weight(self, t: Tensor) -> Tensor:
        """w_x0(t) of the weighting, divided by p(t) for the integral weightings (float64, shape of t)."""
        p, t = self.process, t.to(torch.float64)
        a, s = p._alpha(t), p._sigma(t)
        snr = (a / s) ** 2
        w = self.weighting
        if w in ("simple", "ncsn"):
            return snr
        if w == "min_snr":
            return snr.clamp(max=self.gamma)
        if w == "edm":
            st, sd = s / a, self.sigma_data
            return (st**2 + sd**2) / (st * sd) ** 2
        if self.time_sampling == "importance":
            # w / p with p = -lambda' / (lam_lo - lam_hi) and w = -lambda' SNR (elbo): no 0/0 near alpha = 0
            w_over_p = (self._lam_lo - self._lam_hi) * snr
        else:
            da, ds = p._d_alpha(t), p._d_sigma(t)
            elbo = a * (a * ds - da * s) / s**3  # -(1/2) d SNR / dt = -lambda' SNR
            w_over_p = elbo / self.density(t)
        return w_over_p if w == "elbo" else 2 * w_over_p  # likelihood weighting g^2 = 2 x the ELBO's

    def raw_weight(self, t: Tensor) -> Tensor:
        """The per-example weight on mean((F - target)^2): w_x0(t) / param.x0_weight (float64, shape (B,))."""
        if self.weighting == "none":
            return torch.ones_like(t, dtype=torch.float64)
        t64 = t.to(torch.float64)
        probe = torch.zeros(t.shape[0], 1, dtype=torch.float64, device=t.device)
        xw = self.param.x0_weight(probe, t64, self.process)
        xw = xw.reshape(-1) if xw.numel() == t.shape[0] else xw.reshape(()).expand(t.shape[0])
        return self.x0_weight(t64) / xw

    # -- the loss ----------------------------------------------------------------------------------
    def __call__(self, model, x0: Tensor, generator: torch.Generator | None = None, t: Tensor | None = None, **cond) -> Tensor:
        """Per-example loss (B,). ``t`` (optional, (B,) or scalar) fixes the times instead of sampling them."""
        b = x0.shape[0]
        if t is None:
            t = self.sample_t(b, generator, device=x0.device)
        else:
            t = torch.as_tensor(t, dtype=torch.float64, device=x0.device).expand(b)
            if torch.isnan(t).any() or (t < self.t_lo).any() or (t > self.t_hi).any():
                raise ValueError(
                    f"dsm: t must lie in [{self.t_lo:g}, {self.t_hi:g}], got values in [{float(t.min()):g}, {float(t.max()):g}]"
                )
        weight = self.raw_weight(t).to(x0.dtype)
        t = t.to(x0.dtype)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.process.marginal(x0, t, eps)
        target = self.param.target(x0, eps, x_t, t, self.process)
        raw = model.raw(x_t, t, **cond)
        return weight * mean_flat((raw - target) ** 2)


# ---------------------------------------------------------------------------------------------------
# The DDPM variational bound
# ---------------------------------------------------------------------------------------------------

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
        x_t, _ = self.process.q_sample(x0, t, generator)
        x0_hat = denoiser(x_t, t, **cond)
        mean_p, _ = self.sub.posterior(x0_hat, x_t, k)
        var_p = append_dims(self.var.to(x0.device)[k - 1].to(x0.dtype), x0.ndim)
        mean_q, var_q = self.sub.posterior(x0, x_t, k.clamp(min=2) if len(self.steps) > 1 else k)
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


LOSSES: dict[str, Callable[..., Loss]] = {
    "dsm": DSMLoss,
    "vlb": VLBLoss,
}

_OPTIONS = {
    "dsm": ("weighting", "time_sampling", "importance", "gamma", "sigma_data", "P_mean", "P_std", "t_min", "t_max"),
    "vlb": ("variance", "decoder"),
}


def make(name: str, process: Process, param: Parameterization, **options) -> Loss:
    """Build a loss by name ("dsm", "vlb"); an unknown name or option raises a ValueError naming it."""
    if name not in LOSSES:
        raise unknown("loss", name, LOSSES)
    check_options(f"loss '{name}'", options, _OPTIONS[name])
    return LOSSES[name](process, param, **options)


def from_config(config: dict, process: Process, param: Parameterization) -> Loss:
    """Rebuild a loss from ``Loss.config()``."""
    config = dict(config)
    return make(config.pop("name"), process, param, **config)


__all__ = [
    "LOSSES", "VLB", "DSMLoss", "Loss", "VLBLoss", "ddpm_vlb", "discretized_gaussian_log_likelihood",
    "from_config", "make", "strided_steps",
]
