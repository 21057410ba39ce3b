"""Samplers of discrete diffusion: the reverse chain from x_1 ~ pi (per position) to x_0, one function each.

Every sampler has one signature, as on the continuous side:

    sample_<name>(model, process, x, ts, *, generator=None, fixed=None, stats=None, **options) -> x_0

``x`` (B, L) is the state at ts[0] = 1, ``ts`` the descending time grid ending at 0, ``model(x_t, t)`` gives
log p(x0^i | x_t) (``models``). ``fixed`` (B, L) bool marks positions kept at their value in ``x`` throughout
(infilling: a prefix, a suffix, any mask); for the absorbing process this samples the model's exact conditional
(an unmasked token is observed data), for the uniform process it is SEDD's replacement heuristic. ``stats`` (a
dict) receives ``model_calls`` (batched calls) and ``sequence_evaluations`` (sequences evaluated in them).

=============  =============================================================================================
name           algorithm
=============  =============================================================================================
euler          tau-leaping Euler (Campbell et al. 2022; SEDD Alg. 1): x_s ~ Cat(delta_x + (t - s) R_t(x, .))
tweedie        SEDD's Tweedie tau-leaping / D3PM-MDLM ancestral step: x_s^i ~ p(x_s^i | x_t) (``reverse_step_probs``)
ancestral      absorbing only: the tweedie step with MDLM's caching (no model call while nothing unmasks)
first_hitting  absorbing only: one token at a time at its exact next unmasking time (Zheng et al. 2024); L calls
pc             predictor-corrector (Campbell et al. 2022): tweedie step, then ``corrector_steps`` Euler steps of
               the rates R_s + F_s, which leave p_s invariant
confidence     absorbing only: adaptive order (MaskGIT, Chang et al. 2022; LLaDA's low-confidence remasking, Nie
               et al. 2025; Kim et al. 2025's top-probability margin): each step unmasks as many tokens as the
               chain expects, at the masked positions where the model is most certain
=============  =============================================================================================

Block diffusion (``process.block``): ``sample`` runs the chosen sampler on one block at a time, left to right, the
blocks before it fixed and the ones after it masked and hidden from the sampler (``steps`` is the total, shared
evenly by the blocks). Infilling then conditions on fixed tokens in the current block and before it only.

Caching (``ancestral``) and ``first_hitting`` rely on the absorbing posterior p(x0 | x_t) not depending on t given
the mask pattern: exact for the true posterior (and the oracle), an approximation for a time-conditioned network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..utils import check_options, unknown
from .models import check_sharpening, forward_rates, reverse_rates, reverse_step_probs, sharpen
from .processes import DiscreteProcess


def _categorical(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One draw per row of unnormalised probabilities (B, L, S) by the inverse CDF (a seeded uniform)."""
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[:-1], generator=generator, device=probs.device, dtype=probs.dtype)[..., None]
    return (cdf < u * cdf[..., -1:]).sum(-1).clamp_max(probs.shape[-1] - 1)


def _keep(x_new: Tensor, x: Tensor, fixed: Tensor | None) -> Tensor:
    return x_new if fixed is None else torch.where(fixed, x, x_new)


def _time(t: Tensor, x: Tensor) -> Tensor:
    return t.to(x.device, torch.float64).expand(x.shape[0])


def _count(stats: dict | None, rows: int | None = None) -> None:
    """One batched model call (of ``rows`` sequences; None: the whole batch, counted by the caller's shape)."""
    if stats is not None:
        stats["model_calls"] = stats.get("model_calls", 0) + 1
        if rows is not None:
            stats["sequence_evaluations"] = stats.get("sequence_evaluations", 0) + rows


def _euler_step(x: Tensor, rates: Tensor, dt: Tensor, generator) -> Tensor:
    """x_s ~ Cat(delta_x + dt R(x, .)), the stay probability clipped at 0 (SEDD's Euler / tau-leaping step)."""
    jump = rates * dt
    stay = (1 - jump.sum(-1, keepdim=True)).clamp_min(0)
    return _categorical(jump.scatter_add(-1, x[..., None], stay), generator)


def sample_euler(model: Callable, process: DiscreteProcess, x: Tensor, ts: Tensor, *, generator=None, fixed=None,
                 stats=None) -> Tensor:
    """Tau-leaping Euler with the rates of the mean parameterisation, evaluated at the left end t of each step."""
    for t, s in zip(ts[:-1], ts[1:]):
        tt = _time(t, x)
        log_p0 = model(x, tt).double()
        _count(stats, rows=x.shape[0])
        x = _keep(_euler_step(x, reverse_rates(log_p0, x, tt, process), (t - s).double(), generator), x, fixed)
    return x


def sample_tweedie(model: Callable, process: DiscreteProcess, x: Tensor, ts: Tensor, *, generator=None, fixed=None,
                   stats=None) -> Tensor:
    """SEDD's Tweedie tau-leaping: each position from its exact one-position reverse transition t -> s."""
    for t, s in zip(ts[:-1], ts[1:]):
        tt, ss = _time(t, x), _time(s, x)
        log_p0 = model(x, tt).double()
        _count(stats, rows=x.shape[0])
        x = _keep(_categorical(reverse_step_probs(log_p0, x, tt, ss, process), generator), x, fixed)
    return x


def _cached_call(model: Callable, x: Tensor, tt: Tensor, log_p0: Tensor | None, stale: Tensor, stats) -> Tensor:
    """log p(x0 | x_t) in float64: the whole batch when there is no earlier output (``log_p0`` None), else the
    earlier output with only the ``stale`` sequences evaluated again (MDLM's caching)."""
    if log_p0 is None:
        _count(stats, rows=x.shape[0])
        return model(x, tt).double()
    if bool(stale.any()):
        log_p0 = log_p0.clone()
        log_p0[stale] = model(x[stale], tt[stale]).double()
        _count(stats, rows=int(stale.sum()))
    return log_p0


def _require_absorbing(process: DiscreteProcess, name: str) -> None:
    if process.mask_index is None:
        raise ValueError(f"sampler {name!r} needs the absorbing process, got {process.name!r}")


def sample_ancestral(model: Callable, process: DiscreteProcess, x: Tensor, ts: Tensor, *, generator=None,
                     fixed=None, stats=None, cache: bool = True) -> Tensor:
    """MDLM's ancestral sampler (Sahoo et al. 2024, section 3.3): the tweedie step of the absorbing chain; with
    ``cache``, a sequence's model output is reused while none of its tokens unmasks, so only the sequences that
    changed are evaluated (``stats["sequence_evaluations"]`` counts them; at most L per sequence)."""
    _require_absorbing(process, "ancestral")
    log_p0 = None
    stale = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for t, s in zip(ts[:-1], ts[1:]):
        if not bool((x == process.mask_index).any()):
            break  # everything unmasked: the remaining steps change nothing
        tt, ss = _time(t, x), _time(s, x)
        log_p0 = _cached_call(model, x, tt, None if not cache else log_p0, stale, stats)
        x_new = _keep(_categorical(reverse_step_probs(log_p0, x, tt, ss, process), generator), x, fixed)
        stale = (x_new != x).any(-1) & (x_new == process.mask_index).any(-1)  # changed, and still to finish
        x = x_new
    return x


def sample_first_hitting(model: Callable, process: DiscreteProcess, x: Tensor, ts: Tensor, *, generator=None,
                         fixed=None, stats=None) -> Tensor:
    """The first-hitting sampler of the absorbing chain (Zheng et al. 2024, "Masked diffusion models are secretly
    time-agnostic masked models and exploit inaccurate categorical sampling", Alg. 1): with n tokens masked at t,
    the next unmasking happens at s with 1 - alpha_s = (1 - alpha_t) u^(1/n), u ~ U(0, 1), at a uniformly chosen
    masked position, whose token is drawn from p(x0^i | x_t). Exact (no time discretisation); ``ts`` is ignored
    but for its start; as many model calls as masked tokens."""
    _require_absorbing(process, "first_hitting")
    m = process.mask_index
    B = x.shape[0]
    t = _time(ts[0], x).clone()
    rows = torch.arange(B, device=x.device)
    while True:
        masked = (x == m) & (True if fixed is None else ~fixed)
        n = masked.sum(-1)
        if not bool((n > 0).any()):
            return x
        u = torch.rand(B, generator=generator, device=x.device, dtype=torch.float64)
        one_minus = (1 - process.alpha(t)) * u ** (1.0 / n.clamp_min(1))
        t = torch.where(n > 0, process.schedule.t_of_alpha(1 - one_minus), t)
        # the position: uniform among the masked ones (a draw of the Gumbel-free kind: argmax of masked uniforms)
        pick = torch.where(masked, torch.rand(x.shape, generator=generator, device=x.device), -1.0).argmax(-1)
        active = n > 0  # sequences that still have a masked token
        log_p0 = torch.zeros(*x.shape, process.vocab, dtype=torch.float64, device=x.device)
        log_p0[active] = model(x[active], t[active]).double()
        _count(stats, rows=int(active.sum()))
        token = _categorical(log_p0[rows, pick].exp()[:, None], generator)[:, 0]
        x = x.clone()
        x[rows, pick] = torch.where(n > 0, token, x[rows, pick])


def sample_pc(model: Callable, process: DiscreteProcess, x: Tensor, ts: Tensor, *, generator=None, fixed=None,
              stats=None, corrector_steps: int = 1, corrector_scale: float = 1.0) -> Tensor:
    """Predictor-corrector (Campbell et al. 2022, section 4.2): a tweedie step t -> s, then ``corrector_steps``
    tau-leaping steps of size corrector_scale (t - s) with rates R_s + F_s (reverse plus forward), whose
    stationary law is p_s. No corrector after the last step (s = 0)."""
    for t, s in zip(ts[:-1], ts[1:]):
        tt, ss = _time(t, x), _time(s, x)
        log_p0 = model(x, tt).double()
        _count(stats, rows=x.shape[0])
        x = _keep(_categorical(reverse_step_probs(log_p0, x, tt, ss, process), generator), x, fixed)
        if float(s) <= 0:
            continue
        for _ in range(corrector_steps):
            log_p0 = model(x, ss).double()
            _count(stats, rows=x.shape[0])
            rates = reverse_rates(log_p0, x, ss, process) + forward_rates(x, ss, process, log_p0)
            x = _keep(_euler_step(x, rates, corrector_scale * (t - s).double(), generator), x, fixed)
    return x


CONFIDENCE_SCORES = ("margin", "max", "entropy", "random")


def _certainty(p: Tensor, score: str, generator) -> Tensor:
    """How certain the model is at each position, from its distribution p (B, L, V) alone (never from a drawn
    token, which would bias the revealed values towards likely ones)."""
    if score == "margin":
        top = p.topk(min(2, p.shape[-1]), dim=-1).values
        return top[..., 0] - (top[..., 1] if top.shape[-1] > 1 else 0)
    if score == "max":
        return p.amax(-1)
    if score == "entropy":
        return (p * p.clamp_min(1e-300).log()).sum(-1)  # minus the entropy
    return torch.rand(p.shape[:-1], generator=generator, device=p.device, dtype=p.dtype)


def sample_confidence(model: Callable, process: DiscreteProcess, x: Tensor, ts: Tensor, *, generator=None,
                      fixed=None, stats=None, score: str = "margin", noise: float = 0.0) -> Tensor:
    """Adaptive-order unmasking: from t to s a sequence with n masked tokens unmasks
    n - round(n (1 - alpha_s) / (1 - alpha_t)) of them (the chain's expected count, so that the masked fraction
    follows the schedule and nothing is left at s = 0), at the masked positions of highest certainty, each drawn
    from p(x0^i | x_t). ``score``: ``margin`` (top-1 minus top-2 probability, Kim et al. 2025), ``max`` (top-1
    probability; MaskGIT, LLaDA), ``entropy`` (minus the entropy) or ``random`` (a uniformly random order: MDLM's
    sampler with the expected counts). ``noise`` > 0 adds noise * t * Gumbel to log certainty (MaskGIT's
    annealed randomness). A sequence whose tokens do not change is not evaluated again (as ``ancestral``).

    When every step unmasks at most one token per sequence (e.g. steps >= L on the loglinear schedule) the order
    does not change the law: each token is drawn from its exact conditional given the ones before it, whatever
    order they came in, so with an exact model this samples the data exactly (tests/test_discrete.py). Its use
    is with an imperfect model: decoding the positions it is surest of first keeps its errors from compounding
    (more legible text at the cost of diversity), and with fewer steps it unmasks several tokens per call."""
    _require_absorbing(process, "confidence")
    if score not in CONFIDENCE_SCORES:
        raise unknown("confidence score", score, CONFIDENCE_SCORES)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"noise must be a number >= 0, got {noise!r}")
    m = process.mask_index
    log_p0 = None
    stale = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for t, s in zip(ts[:-1], ts[1:]):
        masked = x == m  # ``fixed`` positions hold tokens, never the mask, so they are never picked
        n = masked.sum(-1)
        if not bool(n.any()):
            break
        tt = _time(t, x)
        left = (1 - process.alpha(_time(s, x))) / (1 - process.alpha(tt)).clamp_min(1e-300)
        k = n - torch.round(n.double() * left).long()  # tokens to unmask in this step, per sequence
        if not bool((k > 0).any()):
            continue
        log_p0 = _cached_call(model, x, tt, log_p0, stale, stats)
        p = log_p0.exp()
        key = _certainty(p, score, generator)
        key = key.clamp_min(1e-300).log() if score in ("margin", "max") else key
        if noise > 0:
            u = torch.rand(key.shape, generator=generator, device=x.device, dtype=key.dtype).clamp(1e-300, 1.0)
            key = key + noise * tt[:, None] * -torch.log(-torch.log(u))
        key = torch.where(masked, key, -torch.inf)
        rank = key.argsort(-1, descending=True).argsort(-1)
        pick = masked & (rank < k[:, None])
        x_new = torch.where(pick, _categorical(p, generator), x)
        stale = (x_new != x).any(-1)
        x = x_new
    return x


@dataclass(frozen=True)
class SamplerInfo:
    fn: Callable[..., Tensor]
    processes: tuple[str, ...]  # the processes it applies to
    stochastic: bool
    calls_per_step: int  # model evaluations per step (at most, with caching)


SAMPLERS: dict[str, SamplerInfo] = {
    "euler": SamplerInfo(sample_euler, ("absorbing", "uniform"), True, 1),
    "tweedie": SamplerInfo(sample_tweedie, ("absorbing", "uniform"), True, 1),
    "ancestral": SamplerInfo(sample_ancestral, ("absorbing",), True, 1),
    "first_hitting": SamplerInfo(sample_first_hitting, ("absorbing",), True, 1),
    "pc": SamplerInfo(sample_pc, ("absorbing", "uniform"), True, 2),
    "confidence": SamplerInfo(sample_confidence, ("absorbing",), True, 1),
}

# Defaults by the protocol of benchmarks/discrete_samplers.py (the oracle suite: worst TV at 64 steps, ties within
# 0.005 to fewer evaluations per sequence); the table is in docs/results/discrete.md.
DEFAULTS: dict[str, tuple[str, int]] = {"absorbing": ("ancestral", 64), "uniform": ("tweedie", 64)}


def time_grid(steps: int, device: torch.device | str | None = None) -> Tensor:
    """steps + 1 times uniform from 1 down to 0 (float64)."""
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64, device=device)


# Options every sampler takes (``sample`` applies them to the model's output, ``models.sharpen``).
COMMON_OPTIONS: dict = {"temperature": 1.0, "top_p": 1.0}


def options_of(name: str) -> dict:
    """The keyword options of sampler ``name`` with their defaults (its own, then ``COMMON_OPTIONS``)."""
    import inspect

    if name not in SAMPLERS:
        raise unknown("discrete sampler", name, SAMPLERS)
    sig = inspect.signature(SAMPLERS[name].fn)
    own = {k: p.default for k, p in sig.parameters.items()
           if p.kind is p.KEYWORD_ONLY and k not in ("generator", "fixed", "stats")}
    return {**own, **COMMON_OPTIONS}


def _sharpened(model: Callable, temperature: float, top_p: float) -> Callable:
    def fn(x: Tensor, t: Tensor, **cond) -> Tensor:
        return sharpen(model(x, t, **cond), temperature, top_p)

    return fn


@torch.no_grad()
def sample(model: Callable, process: DiscreteProcess, shape: tuple[int, int] | Tensor, sampler: str | None = None,
           steps: int | None = None, seed: int = 0, *, fixed: Tensor | None = None, values: Tensor | None = None,
           device: torch.device | str | None = None, stats: dict | None = None, **options) -> Tensor:
    """Draw (B, L) token sequences from ``model`` by the reverse chain of ``process`` (see the module docstring).

    ``sampler``/``steps`` default by process (``DEFAULTS``); ``seed`` seeds the one generator. Infilling:
    ``fixed`` (B, L) or (L,) bool and ``values`` (B, L) or (L,) token ids keep those positions. ``shape`` may also
    be the start state (B, L) at t = 1. Every sampler also takes ``temperature`` and ``top_p`` (``COMMON_OPTIONS``,
    default 1: the model's own law), applied to log p(x0^i | x_t) at each call (``models.sharpen``): below 1 they
    trade diversity (and likelihood) for cleaner samples, as in autoregressive decoding.
    """
    name, default_steps = DEFAULTS[process.name]
    name = sampler or name
    if name not in SAMPLERS:
        raise unknown("discrete sampler", name, SAMPLERS)
    info = SAMPLERS[name]
    if process.name not in info.processes:
        raise ValueError(f"sampler {name!r} works with the {', '.join(info.processes)} process, not {process.name!r}")
    check_options(f"discrete sampler {name!r}", options, options_of(name))
    temperature, top_p = options.pop("temperature", 1.0), options.pop("top_p", 1.0)
    check_sharpening(temperature, top_p)
    if temperature != 1.0 or top_p < 1.0:
        model = _sharpened(model, temperature, top_p)
    steps = default_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    generator = torch.Generator(device or "cpu").manual_seed(int(seed))
    if torch.is_tensor(shape):
        x = shape.to(device)
        process.check_tokens(x, "start state", states=True)
    else:
        B, L = (int(n) for n in shape)
        if L < 1 or B < 1:
            raise ValueError(f"shape must be (batch, length) with both >= 1, got {tuple(shape)}")
        x = process.prior_sample((B, L), generator, device)
    if fixed is not None:
        if values is None:
            raise ValueError("infilling needs both fixed (which positions) and values (their tokens)")
        fixed, values = fixed.to(x.device).bool().expand(x.shape), values.to(x.device).long().expand(x.shape)
        process.check_tokens(values[fixed], "infilling values")
        x = torch.where(fixed, values, x)
    if process.block:
        return _blockwise(info.fn, model, process, x, steps, generator, fixed, stats, options)
    ts = time_grid(steps, x.device)
    return info.fn(model, process, x, ts, generator=generator, fixed=fixed, stats=stats, **options)


def _blockwise(fn: Callable, model: Callable, process: DiscreteProcess, x: Tensor, steps: int, generator,
               fixed: Tensor | None, stats: dict | None, options: dict) -> Tensor:
    """Block diffusion: the sampler ``fn`` on each block in turn, given the blocks before it (fixed), the ones
    after it masked in every model call and never touched (so the sampler sees only the prefix and the block)."""
    B, L = x.shape
    spans = process.blocks(L)
    if fixed is not None:
        block_of = torch.arange(L, device=x.device) // process.block
        first_free = torch.where(fixed, L, block_of).amin(-1, keepdim=True)  # per sequence (L: none free)
        if bool((fixed & (block_of > first_free)).any()):
            raise ValueError(f"a block-diffusion model (blocks of {process.block}) conditions on earlier blocks only: "
                             "fix tokens in the block being sampled or before it (a prefix), not after a free one")
    per = max(1, round(steps / len(spans)))
    ts = time_grid(per, x.device)
    x = x.clone()
    for a, b in spans:
        def sub(z: Tensor, t: Tensor, b=b) -> Tensor:
            return model(torch.cat([z, z.new_full((z.shape[0], L - b), process.mask_index)], 1), t)[:, :b]

        keep = torch.zeros((B, b), dtype=torch.bool, device=x.device)
        keep[:, :a] = True
        if fixed is not None:
            keep |= fixed[:, :b]
        x[:, :b] = fn(sub, process, x[:, :b], ts, generator=generator, fixed=keep, stats=stats, **options)
    return x
