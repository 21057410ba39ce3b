"""Forward processes on a finite vocabulary: continuous-time Markov chains acting independently per position.

SEDD's two transition graphs (Lou, Meng & Ermon 2024, section 3.3), each with any noise schedule
(``schedules``): a token is kept until it jumps, at rate sigma(t), to a draw from a fixed distribution pi over the
S states, i.e. the generator (rows: from, columns: to) is

    Q = 1 pi^T - I,       and so   exp(sigma_bar Q) = alpha I + (1 - alpha) 1 pi^T,   alpha = exp(-sigma_bar)

(because (1 pi^T)^2 = 1 pi^T). The single-position marginal is p_t(y | x0) = alpha(t) [y = x0] + (1 - alpha(t)) pi_y.

* ``absorbing``: pi = the mask token, index V (S = V + 1 states). MDLM, SEDD-absorb, D3PM-absorb. The schedule must
  reach alpha(1) = 0 so that x_1 is all-mask exactly (the prior), e.g. loglinear with eps = 0 (the default).
* ``uniform``: pi uniform over the V tokens (S = V); the rate to each other token is sigma(t) / V. Default schedule
  geometric (SEDD-uniform).

Every other formula (ratios, reverse rates, reverse steps, the bounds) is written once over (alpha, pi) in
``models`` and ``losses``; a process only supplies alpha(t), pi and the draws.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..utils import check_options, unknown
from .schedules import SCHEDULES, Schedule, make_schedule


class DiscreteProcess:
    """A keep-or-jump chain over S states per position, x0 in 0..V-1; see the module docstring.

    ``alpha(t)`` / ``dalpha(t)``: the schedule; ``pi`` (S,): where a jump lands; ``mask_index``: V for absorbing,
    None for uniform.
    """

    name = ""
    default_schedule: tuple[str, dict] = ("loglinear", {})
    t_max = 1.0

    def __init__(self, vocab: int, schedule: str | Schedule | None = None, schedule_options: dict | None = None):
        if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2:
            raise ValueError(f"vocab must be an integer >= 2 (the number of token values), got {vocab!r}")
        self.vocab = vocab
        if isinstance(schedule, Schedule):
            self.schedule = schedule
        else:
            name, opts = self.default_schedule if schedule is None else (schedule, {})
            self.schedule = make_schedule(name, **{**opts, **(schedule_options or {})})

    # -- the chain -----------------------------------------------------------------------------------------
    num_states: int
    mask_index: int | None = None
    block: int | None = None  # block diffusion (absorbing only): the reverse model factorises over blocks

    def blocks(self, length: int) -> list[tuple[int, int]]:
        """The (start, end) of each block of a sequence of ``length``: one block unless ``block`` is set."""
        size = self.block or length
        return [(a, min(a + size, length)) for a in range(0, length, size)]

    @property
    def pi(self) -> Tensor:
        raise NotImplementedError

    def alpha(self, t: Tensor) -> Tensor:
        """P(a token has not jumped by time t) = exp(-sigma_bar(t))."""
        return self.schedule.alpha(t)

    def dalpha(self, t: Tensor) -> Tensor:
        return self.schedule.dalpha(t)

    def rate_matrix(self) -> Tensor:
        """Q = 1 pi^T - I (S, S), rows from, columns to; the chain's generator at unit rate sigma = 1."""
        S = self.num_states
        return torch.ones(S, 1, dtype=torch.float64) * self.pi.double()[None, :] - torch.eye(S, dtype=torch.float64)

    def marginal(self, x0: Tensor, t: Tensor) -> Tensor:
        """p_t(x_t^i = y | x0^i) (B, L, S) = alpha(t) [y = x0^i] + (1 - alpha(t)) pi_y."""
        a = self.alpha(t.to(torch.float32 if not t.is_floating_point() else t.dtype))[:, None, None]
        onehot = torch.nn.functional.one_hot(x0, self.num_states).to(a.dtype)
        return a * onehot + (1 - a) * self.pi.to(a)

    def kernel_to(self, x: Tensor, t: Tensor, alpha: Tensor | None = None) -> Tensor:
        """K_t(a -> x^i) (B, L, V) for every data value a: the likelihood of the observed x_t given x0^i = a."""
        a = (self.alpha(t) if alpha is None else alpha)[:, None, None]
        hit = torch.nn.functional.one_hot(x, self.num_states)[..., : self.vocab].to(a.dtype)
        return a * hit + (1 - a) * self.pi.to(a)[x][..., None]

    def sample_marginal(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_t ~ p_t(. | x0): each token kept with probability alpha(t), else a draw from pi."""
        keep = torch.rand(x0.shape, generator=generator, device=x0.device) < self.alpha(t)[:, None]
        return torch.where(keep, x0, self.jump_sample(x0.shape, generator, x0.device))

    def jump_sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
                    device: torch.device | str | None = None) -> Tensor:
        raise NotImplementedError

    def prior_sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> Tensor:
        """x_1 ~ pi per position (the stationary law the chain reaches at alpha = 0)."""
        return self.jump_sample(tuple(shape), generator, device)

    def prior_kl(self, x0: Tensor) -> Tensor:
        """sum_i KL(p_1(. | x0^i) || pi) in nats (B,): the prior term of the bounds (0 when alpha(1) = 0)."""
        p = self.marginal(x0, torch.ones(x0.shape[0], dtype=torch.float64, device=x0.device))
        pi = self.pi.double().to(x0.device)
        kl = torch.where(p > 0, p * (torch.log(p) - torch.log(pi)), torch.zeros_like(p))
        return kl.sum(dim=(1, 2))

    def check_tokens(self, x: Tensor, what: str = "tokens", states: bool = False) -> None:
        """One line if ``x`` holds ids outside 0..V-1 (or 0..S-1 for noisy states)."""
        n = self.num_states if states else self.vocab
        if x.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"{what} must be integer token ids, got dtype {x.dtype}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= n):
            raise ValueError(f"{what} hold ids from {int(x.min())} to {int(x.max())}; expected 0..{n - 1} "
                             f"(vocabulary {self.vocab}{' + mask' if states and self.mask_index is not None else ''})")

    def config(self) -> dict:
        out = {"name": self.name, "vocab": self.vocab, "schedule": self.schedule.config()}
        return {**out, "block": self.block} if self.block else out

    def __repr__(self) -> str:
        extra = f", block={self.block}" if self.block else ""
        return f"{type(self).__name__}(vocab={self.vocab}, schedule={self.schedule}{extra})"


class Absorbing(DiscreteProcess):
    """Every token jumps to the mask token V (MDLM; SEDD-absorb; D3PM-absorb in continuous time).

    ``block`` = K (block diffusion, BD3-LM, Arriola et al. 2025): the same forward chain per token, but the model
    is p(x) = prod_b p(x^b | x^{<b}), a masked diffusion over each block of K positions given the clean blocks
    before it (and nothing after it). The bound is the sum of the blocks' MDLM bounds, sampling goes block by
    block, left to right (``losses``, ``samplers``); K = 1 is an autoregressive model, K = L plain MDLM. A model
    of such a process is called with the blocks after the current one masked and must ignore them (a
    block-causal network does; the exact oracle marginalises them out).
    """

    name = "absorbing"
    default_schedule = ("loglinear", {"eps": 0.0})

    def __init__(self, vocab: int, schedule: str | Schedule | None = None, schedule_options: dict | None = None,
                 block: int | None = None):
        super().__init__(vocab, schedule, schedule_options)
        if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
            raise ValueError(f"block must be a positive integer (tokens per block) or None, got {block!r}")
        self.block = block
        a1 = float(self.schedule.alpha(torch.tensor(1.0, dtype=torch.float64)))
        if a1 > 0:
            raise ValueError(f"the absorbing process needs a schedule that masks every token by t = 1 (alpha(1) = 0; "
                             f"loglinear or cosine with eps = 0), got alpha(1) = {a1:.3g} for {self.schedule}")
        self.num_states = vocab + 1
        self.mask_index = vocab

    @property
    def pi(self) -> Tensor:
        pi = torch.zeros(self.num_states)
        pi[self.vocab] = 1.0
        return pi

    def jump_sample(self, shape, generator=None, device=None) -> Tensor:
        return torch.full(tuple(shape), self.vocab, dtype=torch.long, device=device)


class Uniform(DiscreteProcess):
    """Every token jumps to a uniformly drawn token (SEDD-uniform; D3PM-uniform in continuous time)."""

    name = "uniform"
    default_schedule = ("geometric", {})

    def __init__(self, vocab: int, schedule: str | Schedule | None = None, schedule_options: dict | None = None):
        super().__init__(vocab, schedule, schedule_options)
        self.num_states = vocab

    @property
    def pi(self) -> Tensor:
        return torch.full((self.vocab,), 1.0 / self.vocab)

    def jump_sample(self, shape, generator=None, device=None) -> Tensor:
        return torch.randint(0, self.vocab, tuple(shape), generator=generator, device=device)


PROCESSES: dict[str, Callable[..., DiscreteProcess]] = {"absorbing": Absorbing, "uniform": Uniform}


def make(name: str, vocab: int, **options) -> DiscreteProcess:
    """``make("absorbing", vocab=V)`` / ``make("uniform", vocab=V, schedule="loglinear", schedule_options={...})``.

    Options: ``schedule`` (one of ``schedules.SCHEDULES``; default: the process's) and ``schedule_options``;
    absorbing also ``block`` (block diffusion, ``Absorbing``).
    """
    if name not in PROCESSES:
        raise unknown("discrete process", name, PROCESSES)
    allowed = ("schedule", "schedule_options", "block") if name == "absorbing" else ("schedule", "schedule_options")
    if name != "absorbing" and "block" in options:
        raise ValueError(f"block diffusion (option block) needs the absorbing process, got {name!r}")
    check_options(f"discrete process {name!r}", options, allowed)
    sched = options.get("schedule")
    if sched is not None and not isinstance(sched, Schedule) and sched not in SCHEDULES:
        raise unknown("discrete noise schedule", sched, SCHEDULES)
    return PROCESSES[name](vocab, **options)
