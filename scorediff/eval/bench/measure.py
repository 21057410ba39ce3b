"""Matching a sampler's step count to a target number of model calls (NFE), and one measured run."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ...utils import Counted
from .problems import Problem, errors


def match_steps(nfe_of: Callable[[int], int], target: int, max_steps: int | None = None) -> tuple[int, int]:
    """The step count whose NFE is closest to ``target`` (ties: the smaller NFE); returns (steps, nfe).

    ``nfe_of(steps)`` must not decrease with steps. Binary search for the first step count reaching the
    target, then compare with the one before it.
    """
    hi = max_steps if max_steps is not None else max(target, 1) + 1
    lo = 1
    cache: dict[int, int] = {}

    def f(s: int) -> int:
        if s not in cache:
            cache[s] = int(nfe_of(s))
        return cache[s]

    if f(hi) < target:
        return hi, f(hi)
    while lo < hi:  # first s with f(s) >= target
        mid = (lo + hi) // 2
        if f(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    best = lo
    if lo > 1 and target - f(lo - 1) <= f(lo) - target:
        best = lo - 1
    return best, f(best)


@dataclass
class SamplerConfig:
    """One way of sampling: a library, a sampler and its grid; ``run(x_T, steps, seed, denoiser)`` draws."""

    library: str  # "scorediff", "diffusers", "k-diffusion"
    sampler: str
    grid: str
    stochastic: bool
    run: Callable[[Tensor, int, int, Any], Tensor]  # (x_T, steps, seed, denoiser) -> x0
    adaptive: bool = False  # NFE not set by steps (reported at its own NFE)
    max_steps: int | None = None

    @property
    def label(self) -> str:
        return f"{self.library}:{self.sampler}[{self.grid}]"


@dataclass
class Row:
    """One measured run."""

    problem: str
    process: str
    library: str
    sampler: str
    grid: str
    stochastic: bool
    target_nfe: int
    steps: int = 0
    nfe: int = 0
    sw: float | None = None
    gap: float | None = None
    rms: float | None = None
    seconds: float = 0.0
    error: str | None = None
    extra: dict = field(default_factory=dict)


ADAPTIVE_STEPS = 10  # the initial grid an adaptive solver is handed (its NFE is its own)
_STEPS_CACHE: dict[tuple[str, str, int], int] = {}  # (config label, process, target NFE) -> steps
NFE_SLACK = 0.5  # a run whose NFE misses the target by more than this fraction is not a fair comparison


def _identity(x: Tensor, t, **cond) -> Tensor:
    return x


class _CountingIdentity(Counted):
    """x0_hat = x at no cost, counting calls (for NFE probes)."""

    def __init__(self):
        super().__init__(_identity)


def measure(problem: Problem, config: SamplerConfig, target: int, seed: int = 0, probe: int = 1) -> Row:
    """Run ``config`` at the step count matching ``target`` NFE (probed on ``probe`` start states).

    An adaptive solver runs once with its default tolerances; its row carries its own NFE.
    """
    row = Row(problem.name, problem.process.name, config.library, config.sampler, config.grid,
              config.stochastic, target)
    try:
        def nfe_of(steps: int) -> int:
            # a fixed-step sampler's NFE does not depend on the model's values: probe with a free one
            d = _CountingIdentity()
            config.run(problem.x_T[:probe], steps, seed, d)
            return d.nfe

        key = (config.label, problem.process.name, target)
        if config.adaptive:
            steps = ADAPTIVE_STEPS
        elif key in _STEPS_CACHE:  # the NFE of a fixed-step sampler does not depend on the data
            steps = _STEPS_CACHE[key]
        else:
            steps, _ = match_steps(nfe_of, target, config.max_steps)
            _STEPS_CACHE[key] = steps
        d = problem.denoiser()
        t0 = time.perf_counter()
        x = config.run(problem.x_T, steps, seed, d)
        row.seconds = time.perf_counter() - t0
        row.steps, row.nfe = steps, d.nfe
        m = errors(problem, x, not config.stochastic)
        row.sw, row.gap, row.rms = m["sw"], m["gap"], m["rms"]
        row.extra = {k: v for k, v in m.items() if k in ("gap_plain", "gap_se", "rms_sq")}
    except Exception as e:  # a sampler that cannot run this grid / NFE is a table entry, not a crash
        row.error = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    return row


def accuracy(problem: Problem, configs: Iterable[SamplerConfig], targets: Iterable[int], seed: int = 0,
             log: Callable[[str], None] | None = None) -> list[Row]:
    """Measure every config at every target NFE (an adaptive one once, with ``target_nfe`` = 0)."""
    rows = []
    for config in configs:
        for target in [0] if config.adaptive else targets:
            row = measure(problem, config, target, seed)
            rows.append(row)
            if log is not None:
                log(f"{problem.name}/{problem.process.name} {config.label} NFE {row.nfe} "
                    f"({row.seconds:.2f} s){' ' + row.error if row.error else ''}")
    return rows


def matched(row: Row) -> bool:
    """Whether a row ran at (close to) its target NFE, so that it may be compared with others there."""
    return row.target_nfe > 0 and abs(row.nfe - row.target_nfe) <= NFE_SLACK * row.target_nfe
