"""The one model interface of discrete diffusion and the conversions written once.

A model is any callable ``model(x_t, t, **cond) -> (B, L, V)`` of log-probabilities log p(x0^i = a | x_t), the
"mean" parameterisation (MDLM, Sahoo et al. 2024; D3PM's x0-prediction). For a forward process acting per
position (``processes``: K_t = alpha I + (1 - alpha) 1 pi^T), it fixes every single-position ratio of the
marginal (SEDD's concrete score, Lou et al. 2024, eq. (4)):

    p_t(x^{i<-y}) / p_t(x) = sum_a p(x0^i = a | x_t) K_t(a -> y) / K_t(a -> x^i)
                           = alpha_t w_y + (1 - alpha_t) pi_y W,      w_a = p(a | x_t) / K_t(a -> x^i), W = sum_a w_a,

hence the reverse rates R(x -> x^{i<-y}) = sigma(t) Q[y, x^i] p_t(x^{i<-y}) / p_t(x) (Q[y, x] = pi_x for y != x),
and the exact reverse step of one position from t to s < t given the others (SEDD's "Tweedie tau-leaping",
MDLM's ancestral step):

    p(x_s^i = y | x_t) = [alpha_s w_y + (1 - alpha_s) pi_y W] K_{t|s}(y -> x_t^i),   K_{t|s} = (alpha_t / alpha_s) I + ...

Code names: ``log_p0`` = log p(x0^i | x_t), ``w`` = w, ``ratios`` = s(x_t, t)_y, ``rates`` = R_t(x -> y).
The SEDD ratio network (``parameterization="ratio"``) outputs log s directly; ``ratios_to_log_p0`` inverts the
linear map above (W = sum_y s_y since sum_y K(a -> y) = 1), so both parameterisations give the same interface.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .processes import DiscreteProcess


def sharpen(log_p: Tensor, temperature: float = 1.0, top_p: float = 1.0) -> Tensor:
    """Temperature and nucleus (top-p, Holtzman et al. 2020) on log-probabilities over the last axis, renormalised.

    ``temperature`` < 1 sharpens (p^(1/T)), > 1 flattens; ``top_p`` < 1 keeps the smallest set of the most
    probable values whose mass reaches top_p (always the most probable one). The identity at (1, 1). Samplers apply
    it to log p(x0^i | x_t); the sampled law is then no longer the model's (readability for likelihood).
    """
    check_sharpening(temperature, top_p)
    if temperature == 1.0 and top_p >= 1.0:
        return log_p
    out = torch.log_softmax(log_p / temperature, dim=-1)
    if top_p < 1.0:
        sorted_, order = out.sort(dim=-1, descending=True)
        before = sorted_.exp().cumsum(-1) - sorted_.exp()  # mass strictly before each value
        drop = torch.zeros_like(out, dtype=torch.bool).scatter(-1, order, before >= top_p)
        out = torch.log_softmax(out.masked_fill(drop, float("-inf")), dim=-1)
    return out


def check_sharpening(temperature, top_p) -> None:
    """One line for a temperature that is not > 0 or a top_p outside (0, 1]."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be a number in (0, 1], got {top_p!r}")


def _alpha(process: DiscreteProcess, t: Tensor, like: Tensor) -> Tensor:
    return process.alpha(t.to(like.dtype))[:, None, None]


def posterior_weights(p0: Tensor, x: Tensor, alpha: Tensor, process: DiscreteProcess) -> Tensor:
    """w_a = p(x0^i = a | x_t) / K_t(a -> x_t^i) (B, L, V); 0 where K = 0 (then p = 0 too: a cannot have led to x)."""
    K = alpha * torch.nn.functional.one_hot(x, process.num_states)[..., : process.vocab].to(alpha.dtype) \
        + (1 - alpha) * process.pi.to(alpha)[x][..., None]
    return torch.where(K > 0, p0 / K.clamp_min(torch.finfo(K.dtype).tiny), torch.zeros_like(p0))


def _mix(w: Tensor, alpha: Tensor, process: DiscreteProcess) -> Tensor:
    """sum_a w_a K(a -> y) = alpha w_y + (1 - alpha) pi_y W for every state y (B, L, S)."""
    pi = process.pi.to(w)
    pad = w.new_zeros(*w.shape[:-1], process.num_states - process.vocab)
    return alpha * torch.cat([w, pad], dim=-1) + (1 - alpha) * pi * w.sum(-1, keepdim=True)


def ratios(log_p0: Tensor, x: Tensor, t: Tensor, process: DiscreteProcess) -> Tensor:
    """The concrete score p_t(x^{i<-y}) / p_t(x) (B, L, S) from the mean parameterisation (1 at y = x^i).

    Exact where K_t(a -> x^i) > 0 for every a, i.e. where a forward jump leads into x^i (pi_{x^i} > 0): every x for
    the uniform chain, a masked x^i for the absorbing one; these are the only ratios the reverse rates use.
    """
    alpha = _alpha(process, t, log_p0)
    return _mix(posterior_weights(log_p0.exp(), x, alpha, process), alpha, process)


def ratios_to_log_p0(log_ratios: Tensor, x: Tensor, t: Tensor, process: DiscreteProcess) -> Tensor:
    """Invert ``ratios``: log p(x0^i | x_t) (B, L, V) from log s (B, L, S) (its value at y = x^i is taken as 0).

    W = sum_y s_y, w_a = (s_a - (1 - alpha) pi_a W) / alpha, p(a) = w_a K(a -> x^i); a network's inconsistent
    ratios are clipped at 0 and renormalised.
    """
    # float64: at alpha ~ 1e-8 (uniform near t = 1) the ratios differ from 1 by ~alpha, below float32's resolution
    log_ratios = log_ratios.double()
    alpha = _alpha(process, t, log_ratios)
    s = log_ratios.exp().scatter(-1, x[..., None], 1.0)
    W = s.sum(-1, keepdim=True)
    pi = process.pi.to(s)
    w = (s[..., : process.vocab] - (1 - alpha) * pi[: process.vocab] * W) / alpha.clamp_min(1e-12)
    K = alpha * torch.nn.functional.one_hot(x, process.num_states)[..., : process.vocab].to(s) \
        + (1 - alpha) * pi[x][..., None]
    p = (w * K).clamp_min(0)
    return torch.log(p / p.sum(-1, keepdim=True).clamp_min(1e-30))


def reverse_rates(log_p0: Tensor, x: Tensor, t: Tensor, process: DiscreteProcess) -> Tensor:
    """R_t(x -> x^{i<-y}) (B, L, S) for y != x^i (0 at y = x^i): sigma(t) Q[y, x^i] s_y = sigma pi_{x^i} s_y.

    Written with -alpha' = sigma alpha so that it stays finite at alpha = 0 where it can (absorbing at t = 1).
    """
    alpha = _alpha(process, t, log_p0)
    dalpha = process.dalpha(t.to(log_p0.dtype))[:, None, None]
    w = posterior_weights(log_p0.exp(), x, alpha, process)
    pi = process.pi.to(w)
    pad = w.new_zeros(*w.shape[:-1], process.num_states - process.vocab)
    # sigma * s_y = -alpha' w_y + sigma (1 - alpha) pi_y W; the second term only where pi_y > 0
    # (at alpha = 0 only the absorbing chain is left to sample, whose jump term lands on the diagonal)
    ok = (pi > 0) & (alpha > 0)
    jump = torch.where(ok, (-dalpha / alpha.clamp_min(1e-30)) * (1 - alpha) * pi * w.sum(-1, keepdim=True),
                       torch.zeros_like(w[..., :1]))
    rates = pi[x][..., None] * (-dalpha * torch.cat([w, pad], dim=-1) + jump)
    return rates.scatter(-1, x[..., None], 0.0)


def rates_from_ratios(log_ratios: Tensor, x: Tensor, t: Tensor, process: DiscreteProcess) -> Tensor:
    """R_t(x -> x^{i<-y}) = sigma(t) pi_{x^i} s_y (B, L, S) straight from log concrete scores (SEDD's network),
    0 at y = x^i; the score-entropy loss of a ratio network uses this, never the ill-conditioned inverse map."""
    sigma = process.schedule.sigma(t.to(log_ratios.dtype))[:, None, None]
    rates = sigma * process.pi.to(log_ratios)[x][..., None] * log_ratios.exp()
    return rates.scatter(-1, x[..., None], 0.0)


def forward_rates(x: Tensor, t: Tensor, process: DiscreteProcess, like: Tensor) -> Tensor:
    """The forward chain's rates F_t(x -> y) = sigma(t) Q[x^i, y] = sigma(t) pi_y for y != x^i (B, L, S)."""
    sigma = process.schedule.sigma(t.to(like.dtype))[:, None, None]
    rates = (sigma * process.pi.to(like)).expand(*x.shape, process.num_states)
    return rates.scatter(-1, x[..., None], 0.0)


def reverse_step_probs(log_p0: Tensor, x: Tensor, t: Tensor, s: Tensor, process: DiscreteProcess) -> Tensor:
    """p(x_s^i = y | x_t) (B, L, S), s < t: the exact one-position reverse transition under p(x0^i | x_t).

    = [alpha_s w_y + (1 - alpha_s) pi_y W] K_{t|s}(y -> x_t^i), K_{t|s} = a I + (1 - a) 1 pi^T, a = alpha_t / alpha_s.
    """
    a_t, a_s = _alpha(process, t, log_p0), _alpha(process, s, log_p0)
    w = posterior_weights(log_p0.exp(), x, a_t, process)
    a_ts = a_t / a_s.clamp_min(1e-30)
    back = a_ts * torch.nn.functional.one_hot(x, process.num_states).to(w) + (1 - a_ts) * process.pi.to(w)[x][..., None]
    return (_mix(w, a_s, process) * back).clamp_min(0)


def carry_over(log_p0: Tensor, x: Tensor, process: DiscreteProcess) -> Tensor:
    """Absorbing: an unmasked token is x0 itself (MDLM's "carry-over unmasking"); uniform: unchanged."""
    if process.mask_index is None:
        return log_p0
    unmasked = (x != process.mask_index)[..., None]
    clean = torch.nn.functional.one_hot(x.clamp_max(process.vocab - 1), process.vocab).to(torch.bool)
    fixed = torch.where(clean, torch.zeros_like(log_p0), torch.full_like(log_p0, -torch.inf))
    return torch.where(unmasked, fixed, log_p0)


def noise_input(process: DiscreteProcess, t: Tensor) -> Tensor:
    """What a network is told of the noise level: 1 - alpha(t) in [0, 1], the fraction of jumped tokens."""
    return 1 - process.alpha(t.float())


def blockwise_log_p0(model, process: DiscreteProcess, x: Tensor, x0: Tensor, t: Tensor, **cond) -> Tensor:
    """Block diffusion's model output at x_t (B, L, V): each block b's rows from the model at
    [x0^{<b}, x_t^b, mask after b], one call per block (any model; ``NetModel.given_clean`` is the one-call
    equivalent of a block-causal network). Without ``process.block``, ``model(x, t)``."""
    if not process.block:
        return model(x, t, **cond)
    if hasattr(model, "given_clean"):
        return model.given_clean(x, x0, t, **cond)
    out = []
    pos = torch.arange(x.shape[1], device=x.device)
    for a, b in process.blocks(x.shape[1]):
        inp = torch.where(pos < a, x0, torch.where(pos < b, x, process.mask_index))
        out.append(model(inp, t, **cond)[:, a:b])
    return torch.cat(out, 1)


class NetModel(nn.Module):
    """A token network ``net(x_t, noise_input, **cond)`` as a model ``(x_t, t, **cond) -> log p(x0 | x_t)``.

    ``parameterization``: "mean" (the net gives logits of x0, MDLM) or "ratio" (the net gives log concrete scores
    over the S states, SEDD), converted by ``ratios_to_log_p0``. Absorbing runs get the carry-over constraint.
    """

    PARAMETERIZATIONS = ("mean", "ratio")

    def __init__(self, net: nn.Module, process: DiscreteProcess, parameterization: str = "mean"):
        super().__init__()
        if parameterization not in self.PARAMETERIZATIONS:
            raise ValueError(f"discrete parameterization {parameterization!r} unknown; one of: mean, ratio")
        if process.block and parameterization != "mean":
            raise ValueError("block diffusion (process block) takes the mean parameterisation, not 'ratio'")
        inner = getattr(net, "module", net)  # (a DDP / FSDP wrapper keeps the network in .module)
        if process.block and getattr(inner, "block", None) != process.block:
            raise ValueError(f"the process has blocks of {process.block} tokens but the network attends over blocks "
                             f"of {getattr(inner, 'block', None)!r} (set the network's block to the process's)")
        self.net, self.process, self.parameterization = net, process, parameterization

    def given_clean(self, x: Tensor, x0: Tensor, t: Tensor, **cond) -> Tensor:
        """log p(x0^i | x_t^{b(i)}, x0^{<b(i)}) (B, L, V) for every block at once (block diffusion's training pass,
        the network's ``clean=``); equal to ``blockwise_log_p0`` with this model."""
        out = self.net(x, noise_input(self.process, t), clean=x0, **cond).float()
        return carry_over(torch.log_softmax(out, dim=-1), x, self.process)

    def log_ratios(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        """The ratio network's log concrete scores (B, L, S) (``parameterization="ratio"`` only).

        Absorbing: from a mask the ratios are alpha / (1 - alpha) p(y | x_t), so the network's output is offset by
        log(alpha / (1 - alpha)) there (SEDD's absorb scaling, out - log(e^sigma_bar - 1)); it then reads as
        logits of p and starts at the right scale.
        """
        out = self.net(x, noise_input(self.process, t), **cond).float()
        if self.process.mask_index is None:
            return out
        a = self.process.alpha(t.double()).clamp(1e-12, 1 - 1e-12)
        offset = torch.log(a / (1 - a)).float()[:, None, None]
        return out + torch.where((x == self.process.mask_index)[..., None], offset, torch.zeros_like(offset))

    def forward(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        if self.parameterization == "ratio":
            log_p0 = ratios_to_log_p0(self.log_ratios(x, t, **cond), x, t, self.process).float()
            return carry_over(log_p0, x, self.process)
        out = self.net(x, noise_input(self.process, t), **cond).float()
        return carry_over(torch.log_softmax(out, dim=-1), x, self.process)
