"""Exact likelihood through the probability-flow ODE, bits/dim, and deterministic encoding.

Song et al. 2021 ("Score-Based Generative Modeling through SDEs", Sec. 4.3 and Appendix D.2), after
Chen et al. 2018 (neural ODEs) and Grathwohl et al. 2019 (FFJORD): along the probability-flow ODE
dx/dt = v(x, t) = alpha' x0_hat + sigma' eps_hat, the log-density obeys d log p_t(x_t)/dt = -div v, so

    log p_{t_min}(x) = log p_{t_max}(x_{t_max}) + int_{t_min}^{t_max} div v(x_t, t) dt,

integrated from the data (t_min) to the prior (t_max) with an adaptive Runge-Kutta solver (torchdiffeq's
dopri5 by default), the state (x, int div) batched on x's device. The divergence is
    - "exact": the trace of the Jacobian, all D diagonal entries from one backward pass over the batch
      tiled D times (probe e_i in tile i), for small D;
    - "hutchinson": K probes eps_k (Rademacher or Gaussian, drawn once and fixed along the trajectory,
      Hutchinson 1989), each integrating eps_k^T J eps_k. The K integrals are K independent unbiased
      estimates of log p; we return their mean and the standard error std_k / sqrt(K) (ddof = 1; NaN for K = 1).

What is estimated is log p_{t_min} at x, the density of x_{t_min} = alpha(t_min) x0 + sigma(t_min) eps, not
p0 itself; for 8-bit data this smoothing is far below the dequantization scale.

Bits/dim of 8-bit data x in {0..255}^D (``bits_per_dim``): uniform dequantization y = x + u - 1/2,
u ~ U[0, 1)^D, mapped to the model's coordinates m = y / 127.5 - 1 (the bins are centred on the training
values x / 127.5 - 1). Then log P(x) >= E_u log p_Y(y) = E_u log p_M(m) - D log 127.5 (the log-det of the
affine map), and bits/dim = -log P / (D ln 2). With several dequantization draws the default reduction is
the mean of log p (the bound above, and unbiased under Hutchinson noise); "logmeanexp" gives the tighter
importance-weighted bound log mean_k p(m_k) (Ho et al. 2020 / Kingma et al. 2021 style), which however
is biased upwards by the Hutchinson noise, so use it with the exact trace.

For vp-discrete models ``method="vlb"`` gives the DDPM bound instead (``scorediff.losses.ddpm_vlb``): with
the discretized decoder it bounds the 8-bit probability directly (no dequantization).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from ..losses.vlb import ddpm_vlb
from ..processes.base import Process
from ..processes.vp import VPDiscrete
from ..samplers._common import bind_cond
from ..samplers.ode import sample_ode
from ..utils import check_options, unknown
from ._ode import (
    METHODS,
    NOISES,
    REDUCTIONS,
    TRACES,
    Likelihood,
    _bar,
    _check_common,
    _Dynamics,
    _probes,
    _solve,
)
from .cld import log_likelihood_bound


def log_likelihood(
    denoiser: Callable[..., Tensor],
    process: Process,
    x: Tensor,
    *,
    method: str = "ode",
    trace: str = "exact",
    probes: int = 1,
    noise: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float | None = None,
    solver: str = "dopri5",
    chunk: int = 64,
    generator: torch.Generator | None = None,
    cond: dict | None = None,
    progress: bool = False,
    **vlb_options,
) -> Likelihood:
    """log p(x) in nats per example (see the module docstring).

    ``method="ode"``: the probability-flow ODE from ``t_min`` (default ``process.t_min``) to ``t_max`` plus
    ``process.prior_logp``; ``trace`` "exact" (D-fold tiled backward pass) or "hutchinson" with ``probes`` K
    probes of ``noise`` "rademacher" | "gaussian" from ``generator``; at most ``chunk`` probes (tiles of the batch)
    go through one backward pass, which bounds memory for the exact trace of larger D. ``method="vlb"`` (vp-discrete only): minus
    the DDPM bound of ``scorediff.losses.ddpm_vlb`` (options ``variance``, ``decoder`` (default "gaussian" here,
    for continuous x), ``stride``), a lower bound on log p.
    """
    cond = dict(cond or {})
    if method not in METHODS:
        raise unknown("likelihood method", method, METHODS)
    if getattr(process, "phase_space", False):  # CLD: a bound through phase space (likelihood/cld.py)
        if method != "ode":
            raise ValueError(f"likelihood method {method!r} needs a vp-discrete process; on '{process.name}' use 'ode'")
        check_options("likelihood on a phase-space process", vlb_options, ("velocities",))
        return log_likelihood_bound(denoiser, process, x, trace=trace, probes=probes, noise=noise, rtol=rtol, atol=atol,
                                    t_min=t_min, solver=solver, chunk=chunk, generator=generator, cond=cond,
                                    progress=progress, **vlb_options)
    if method == "vlb":
        if not isinstance(process, VPDiscrete):
            raise ValueError(f"likelihood method 'vlb' needs a vp-discrete process, got '{process.name}'")
        vlb_options.setdefault("decoder", "gaussian")
        out = ddpm_vlb(denoiser, process, x, generator=generator, progress=progress, cond=cond, **vlb_options)
        return Likelihood(logp=-out.total, stderr=None, nfe=len(out.steps), prior_logp=-out.prior)
    check_options("likelihood method 'ode'", vlb_options, ())
    if trace not in TRACES:
        raise unknown("trace estimator", trace, TRACES)
    if noise not in NOISES:
        raise unknown("probe noise", noise, NOISES)
    if trace == "hutchinson" and int(probes) < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    if int(chunk) < 1:
        raise ValueError(f"chunk must be >= 1 probes per backward pass, got {chunk}")
    t_min = _check_common(process, t_min, rtol, atol)
    pr = _probes(x, trace, int(probes), noise, generator)
    bar = _bar(progress, "log-likelihood (ODE)")
    dyn = _Dynamics(denoiser, process, pr, cond, sum_probes=trace == "exact", bar=bar, t_span=(t_min, process.t_max),
                    chunk=int(chunk))
    m = 1 if trace == "exact" else pr.shape[0]
    state = (x, torch.zeros(m, x.shape[0], dtype=x.dtype, device=x.device))
    try:
        z, integral = _solve(dyn, state, t_min, process.t_max, rtol, atol, solver)
    finally:
        if bar is not None:
            bar.close()
    prior = process.prior_logp(z)
    estimates = prior[None] + integral  # (M, B): one log p estimate per probe
    logp = estimates.mean(0)
    stderr = None
    if trace == "hutchinson" and m >= 2:
        stderr = estimates.std(0, unbiased=True) / math.sqrt(m)
    return Likelihood(logp=logp, stderr=stderr, nfe=dyn.nfe, prior_logp=prior, delta_logp=integral.mean(0), z=z)


# ---------------------------------------------------------------------------------------------------
# Bits per dimension of 8-bit data
# ---------------------------------------------------------------------------------------------------

LOG_SCALE_8BIT = math.log(127.5)  # m = y / 127.5 - 1: log |dy/dm| per dimension


def to_model_space(x8: Tensor, u: Tensor | None = None, dtype: torch.dtype = torch.float32, levels: int = 256) -> Tensor:
    """Map integer levels 0..L-1 (8-bit: L = 256) to the model's [-1, 1]: (x + u - 1/2) / h - 1, h = (L - 1)/2.

    u = 1/2 gives the training map x / h - 1 (x / 127.5 - 1 for 8-bit data).
    """
    y = x8.to(dtype)
    if u is not None:
        y = y + u - 0.5
    return y / ((levels - 1) / 2) - 1


def bits_per_dim(
    denoiser: Callable[..., Tensor],
    process: Process,
    x8: Tensor,
    *,
    method: str = "ode",
    dequantize: int = 1,
    reduce: str = "mean",
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    levels: int = 256,
    **options,
) -> Likelihood:
    """Bits/dim of 8-bit data ``x8`` (integers 0..255, any shape (B, *event)) under a model on [-1, 1].

    ``levels``: data on L levels 0..L-1 other than 8-bit (e.g. scikit-learn's digits, L = 17) map to
    [-1, 1] by x / ((L - 1)/2) - 1 and are dequantized on bins of that width; the change of scale is then
    D log((L - 1)/2). Uniform noise on L levels has log2(L) bits/dim (8 for 8-bit data).

    ``method="ode"``: ``dequantize`` K uniform dequantizations per example (module docstring), each a
    ``log_likelihood`` call (``options`` go there), combined by ``reduce`` "mean" (of log p) or
    "logmeanexp"; the reported ``logp`` is log P(x) of the 8-bit data in nats (including -D log 127.5) and
    ``bpd = -logp / (D ln 2)``. ``stderr`` combines the spread over dequantizations (K >= 2) with the
    Hutchinson standard errors. ``method="vlb"``: the DDPM bound with the discretized decoder (vp-discrete).
    """
    if reduce not in REDUCTIONS:
        raise unknown("dequantization reduction", reduce, REDUCTIONS)
    if int(dequantize) < 1:
        raise ValueError(f"dequantize must be >= 1 samples, got {dequantize}")
    if x8.is_floating_point() and not torch.equal(x8, x8.round()):
        raise ValueError("bits_per_dim expects 8-bit integer data (values 0..255), got non-integer values")
    if int(levels) != levels or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels}")
    if (x8 < 0).any() or (x8 > levels - 1).any():
        raise ValueError(f"bits_per_dim expects values in 0..{levels - 1}, got [{float(x8.min()):g}, {float(x8.max()):g}]")
    d = x8[0].numel()
    if method == "vlb":
        if levels != 256:
            raise ValueError(f"bits/dim method 'vlb' uses the 8-bit discretized decoder; levels must be 256, got {levels}")
        if not isinstance(process, VPDiscrete):
            raise ValueError(f"bits/dim method 'vlb' needs a vp-discrete process, got '{process.name}'")
        options.setdefault("decoder", "discretized")
        out = log_likelihood(denoiser, process, to_model_space(x8, dtype=dtype), method="vlb", generator=generator, **options)
        out.bpd = -out.logp / (d * math.log(2))
        return out
    runs = []
    for _ in range(int(dequantize)):
        u = torch.rand(x8.shape, generator=generator, dtype=dtype, device=x8.device)
        runs.append(log_likelihood(denoiser, process, to_model_space(x8, u, dtype, levels), method=method, generator=generator, **options))
    lp = torch.stack([r.logp for r in runs])  # (K, B)
    k = lp.shape[0]
    if reduce == "mean":
        logp_m = lp.mean(0)
    else:
        logp_m = torch.logsumexp(lp, 0) - math.log(k)
    # standard error: spread over dequantizations (which already holds the Hutchinson noise) if K >= 2,
    # else the Hutchinson standard error alone
    stderr = None
    if k >= 2 and reduce == "mean":
        stderr = lp.std(0, unbiased=True) / math.sqrt(k)
    elif runs[0].stderr is not None:
        stderr = torch.stack([r.stderr for r in runs]).pow(2).mean(0).sqrt() / math.sqrt(k)
    logp = logp_m - d * math.log((levels - 1) / 2)
    out = Likelihood(logp=logp, stderr=stderr, nfe=sum(r.nfe for r in runs), z=runs[-1].z)
    out.bpd = -logp / (d * math.log(2))
    out.bpd_stderr = None if stderr is None else stderr / (d * math.log(2))
    return out


# ---------------------------------------------------------------------------------------------------
# Deterministic encoding and decoding
# ---------------------------------------------------------------------------------------------------


def data_to_prior(
    denoiser: Callable[..., Tensor],
    process: Process,
    x: Tensor,
    *,
    t_min: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "dopri5",
    cond: dict | None = None,
) -> Tensor:
    """x at t_min -> its latent x_{t_max} along the probability-flow ODE (Song et al. 2021, Sec. 4.3)."""
    t_min = _check_common(process, t_min, rtol, atol)
    dyn = _Dynamics(denoiser, process, None, dict(cond or {}), sum_probes=False, t_span=(t_min, process.t_max))
    return _solve(dyn, (x,), t_min, process.t_max, rtol, atol, solver)[0]


def prior_to_data(
    denoiser: Callable[..., Tensor],
    process: Process,
    z: Tensor,
    *,
    t_min: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "dopri5",
    cond: dict | None = None,
) -> Tensor:
    """The latent x_{t_max} -> x at t_min, the same ODE integrated backwards: the ``ode`` sampler on [t_max, t_min].

    At t_min = 0 on a process with sigma(0) = 0 that sampler's last step is the denoise-to-zero step.
    """
    t_min = _check_common(process, t_min, rtol, atol)
    ts = torch.tensor([process.t_max, t_min], dtype=torch.float64)
    with torch.no_grad():
        return sample_ode(bind_cond(denoiser, cond), process, z, ts, rtol=rtol, atol=atol, method=solver)


# Deprecated names (README users): "encode" / "decode" also name an autoencoder's maps (scorediff.latent) and a text
# encoder; these are the probability-flow ODE's.
encode = data_to_prior
decode = prior_to_data


@dataclass
class RoundTrip:
    z: Tensor
    x_rec: Tensor
    error: Tensor  # per example: max |x_rec - x| over dimensions


def round_trip(denoiser: Callable[..., Tensor], process: Process, x: Tensor, **options) -> RoundTrip:
    """Encode then decode ``x``; report the per-example max-abs reconstruction error."""
    z = data_to_prior(denoiser, process, x, **options)
    x_rec = prior_to_data(denoiser, process, z, **options)
    err = (x_rec - x).reshape(x.shape[0], -1).abs().amax(1)
    return RoundTrip(z, x_rec, err)


# ---------------------------------------------------------------------------------------------------
# Data-parallel evaluation
# ---------------------------------------------------------------------------------------------------


def shard(x: Tensor) -> tuple[Tensor, Tensor]:
    """This rank's shard of a batch under torch.distributed (examples rank, rank + W, ...) and their indices."""
    idx = torch.arange(x.shape[0])
    if dist.is_available() and dist.is_initialized():
        idx = idx[dist.get_rank() :: dist.get_world_size()]
    return x[idx.to(x.device)], idx


def gather(values: Tensor, idx: Tensor, total: int) -> Tensor:
    """Put every rank's per-example ``values`` (at indices ``idx``) back into one (total,) tensor on every rank.

    Uses ``all_gather_object`` once at the end (never inside the adaptive solver, whose step counts differ
    between ranks).
    """
    if not (dist.is_available() and dist.is_initialized()):
        out = torch.empty(total, dtype=values.dtype)
        out[idx] = values.detach().cpu()
        return out
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (idx.cpu(), values.detach().cpu()))
    out = torch.empty(total, dtype=values.dtype)
    for i, v in parts:
        out[i] = v
    return out


@dataclass
class DatasetLikelihood:
    """``evaluate_dataset``'s result: per-example values of the whole data set (gathered from every rank)."""

    method: str
    logp: Tensor  # (N,) nats (float64)
    bpd: Tensor  # (N,) bits per dimension (of the integer levels for images, dequantized)
    stderr: Tensor  # (N,) per-example Hutchinson standard error (NaN where exact)
    nfe: int  # model evaluations of this rank
    trace: str  # "exact" | "hutchinson" (method "ode")
    levels: int  # quantization levels of image data (256: 8-bit)
    images: bool
    exact: Tensor | None = None  # (N,) the oracle's exact log p (``mixture`` given): log p_t_min for "ode", log p0 for "vlb"

    def summary(self) -> dict:
        """Means over examples with their standard errors (NaN for a single example)."""
        n = self.logp.shape[0]
        out = {"method": self.method, "num": n, "logp_nats": self.logp.mean().item(),
               "logp_stderr": self.logp.std().item() / math.sqrt(n) if n > 1 else math.nan,
               "bits_per_dim": self.bpd.mean().item(),
               "bpd_stderr": self.bpd.std().item() / math.sqrt(n) if n > 1 else math.nan, "nfe_per_rank": self.nfe}
        if self.exact is not None:
            out["exact_logp_nats"] = self.exact.mean().item()
        return out


def evaluate_dataset(
    denoiser: Callable[..., Tensor],
    process: Process,
    x: Tensor,
    *,
    images: bool = False,
    levels: int = 256,
    method: str = "ode",
    batch: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    trace: str | None = None,
    probes: int = 1,
    noise: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    dequantize: int = 1,
    variance: str = "beta",
    stride: int | None = None,
    mixture=None,
    progress: bool = False,
) -> DatasetLikelihood:
    """The likelihood of every example of ``x`` (N, ...), sharded across torch.distributed ranks and gathered.

    ``images``: x holds images in [-1, 1] on ``levels`` levels; they are mapped back to their integer levels and
    scored by ``bits_per_dim`` (uniform dequantization, ``dequantize`` draws, for "ode"), else ``log_likelihood``
    on the continuous data. ``trace`` defaults to "exact" up to 16 dimensions, else "hutchinson". Each rank's
    noise comes from a generator seeded ``1000 seed + rank``. ``mixture`` (an analytic mixture of the data): the
    exact log-density to compare with is added (``exact``). Rank 0 shows the progress bar.
    """
    if method == "vlb" and not isinstance(process, VPDiscrete):
        raise ValueError(f"--method vlb needs a vp-discrete process, got '{process.name}'")
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    x_local, idx = shard(x)
    d = x[0].numel()
    trace = trace or ("exact" if d <= 16 else "hutchinson")
    gen = torch.Generator(device).manual_seed(seed * 1000 + rank)
    levels = levels if images else 256
    # images back to their integer levels (the inverse of the training map x / ((L - 1)/2) - 1)
    x8 = ((x_local.double() + 1) * ((levels - 1) / 2)).round().clamp(0, levels - 1).long() if images else None
    ode = {"trace": trace, "probes": probes, "noise": noise, "rtol": rtol, "atol": atol}
    vlb = {"variance": variance, "stride": stride}
    logps, bpds, ses, nfe = [], [], [], 0
    batches = range(0, x_local.shape[0], batch)
    if progress and rank == 0:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"likelihood ({method})", unit="batch")
    for start in batches:
        sl = slice(start, start + batch)
        if images:
            xb = x8[sl].to(device)
            if method == "vlb":
                res = bits_per_dim(denoiser, process, xb, method="vlb", generator=gen, **vlb)
            else:
                res = bits_per_dim(denoiser, process, xb, dequantize=dequantize, generator=gen, levels=levels, **ode)
            bpd = res.bpd
        else:
            xb = x_local[sl].to(device)
            if method == "vlb":
                res = log_likelihood(denoiser, process, xb, method="vlb", generator=gen, **vlb)
            else:
                res = log_likelihood(denoiser, process, xb, generator=gen, **ode)
            bpd = -res.logp / (d * math.log(2))
        logps.append(res.logp.detach().cpu().double())
        bpds.append(bpd.detach().cpu().double())
        ses.append(res.stderr.detach().cpu().double() if res.stderr is not None else torch.full_like(logps[-1], math.nan))
        nfe += res.nfe
    out = DatasetLikelihood(method, gather(torch.cat(logps), idx, x.shape[0]), gather(torch.cat(bpds), idx, x.shape[0]),
                            gather(torch.cat(ses), idx, x.shape[0]), nfe, trace, levels, images)
    if mixture is not None:
        out.exact = mixture.log_prob_t(x, process.t_min, process) if method == "ode" else mixture.log_prob(x)
    return out


__all__ = [
    "LOG_SCALE_8BIT", "DatasetLikelihood", "Likelihood", "RoundTrip", "bits_per_dim", "evaluate_dataset", "decode", "encode", "gather", "log_likelihood",
    "round_trip", "shard", "to_model_space", "data_to_prior", "prior_to_data",
]
