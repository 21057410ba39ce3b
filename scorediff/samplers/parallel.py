"""Parallel sampling by Picard iteration over a sliding window (ParaDiGMS, Shih et al. 2023,
"Parallel Sampling of Diffusion Models").

A sequential sampler makes its model calls one after the other: call j's input depends on the outputs of
calls 0..j-1. ParaDiGMS guesses the whole trajectory, evaluates the model at every point of a window of
``window`` steps in ONE batched network call, updates the trajectory from those outputs, and repeats until
the trajectory stops moving (a fixed point, which is the sequential sampler's result); the window then
slides past the converged steps. With enough parallel compute the wall time is the number of parallel
*rounds*, which on a smooth problem is well below the number of steps.

How it is done here, for every registered sampler without a second copy of its maths
-----------------------------------------------------------------------------------
Round r replays the registered sampler itself (``scorediff.sample``) from the same start and the same
noise (the generator is restored to one saved state every round, so stochastic samplers see their noise
"drawn up front"), with a *replay denoiser* that answers call j from a table instead of the network:
- calls 0..J-1 (converged) get their stored model outputs;
- calls J..J+window-1 get the output the network gave at the input this call had in the previous round
  (call J+k's first guess is the latest output available: a frozen x0_hat); their inputs are recorded;
- the first call past the window stops the replay.
Then the recorded inputs whose drift since the previous round is within tolerance, in order from J, are
accepted (their outputs were computed at an input equal to theirs within ``tol``), and the network is
evaluated at all other recorded inputs in one batched call (the round). The first window call's input only
depends on accepted outputs, so every round accepts at least one call: rounds <= model calls + 1.

Compared with ParaDiGMS's update (x_{k+j} = x_k + sum of the window's drifts, a Jacobi sweep), the replay
propagates the sampler's own step, including its exact linear part, multistep history and noise (a
Gauss-Seidel sweep with frozen model outputs): the same fixed point, reached in no more rounds, and it
works for multistep (DPM-Solver++(2M)), multi-evaluation (Heun) and stochastic (DDPM) samplers alike. The
replay's arithmetic costs O(steps) cheap tensor operations per round, no network calls.

Tolerance: call j's input x_j is accepted when, for every example b,
RMS_coords(x_j^(r) - x_j^(r-1))[b] <= tol * sigma(t_j) (the per-step drift in units of that step's noise
level, as ParaDiGMS scales its tolerance by the noise variance). The result then equals the sequential
sampler's within an error of that order.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..processes.base import Process
from ._common import Denoiser


class _WindowFull(Exception):
    """Raised by the replay denoiser at the first call past the window (ends the round's replay)."""


class _Replay:
    """The denoiser a round's replay sees: stored outputs, guesses for the window, then a stop."""

    def __init__(self, done: list[Tensor], guesses: list[tuple[Tensor, Tensor, Tensor]], window: int):
        self.done, self.guesses, self.window = done, guesses, window
        self.calls = 0
        self.queries: list[tuple[Tensor, Tensor]] = []  # (x, t) of the window's calls, in order
        self.cond: dict[str, Any] = {}

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        j, self.calls = self.calls, self.calls + 1
        if j < len(self.done):
            return self.done[j]
        k = j - len(self.done)
        if k >= self.window:
            raise _WindowFull
        self.cond = cond
        self.queries.append((x, t))
        if k < len(self.guesses):
            return self.guesses[k][0]
        # first visit: the latest output available (x0_hat frozen), or 0 before any call was evaluated
        if self.guesses:
            return self.guesses[-1][0]
        if self.done:
            return self.done[-1]
        return torch.zeros_like(x)


def _tile(value: Any, times: int, batch: int) -> Any:
    """A conditioning value for ``times`` stacked copies of a batch of ``batch`` (tensors with that batch dim)."""
    if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == batch:
        return value.repeat(times, *([1] * (value.ndim - 1)))
    return value


def parallel(
    denoiser: Denoiser,
    process: Process,
    x: tuple[int, ...] | Tensor,
    *,
    sampler: str = "ddim",
    steps: int = 50,
    schedule: str | Tensor | list[float] | None = None,
    window: int = 16,
    tol: float = 1e-3,
    seed: int = 0,
    max_rounds: int | None = None,
    cond: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    **options,
) -> tuple[Tensor, dict[str, Any]]:
    """Sample with ``sampler`` by Picard iteration over a sliding window of model calls.

    Args:
        denoiser, process: as for ``scorediff.sample``.
        x: the batch shape (start from the prior, drawn with ``seed`` exactly as ``scorediff.sample`` does)
            or a start tensor at ts[0].
        sampler, steps, schedule, options: the sequential sampler whose result is computed (any registered one).
        window: model calls evaluated together per round (the batch of one network call is window * B).
        tol: acceptance tolerance on the per-call input drift, relative to that call's noise level sigma(t).
        seed: seeds the prior and the sampler's noise (the same draws as ``scorediff.sample(..., seed=seed)``).
        max_rounds: a ValueError if not converged after this many rounds (default: no limit but the bound
            rounds <= model calls + 1, which always holds).
        cond: conditioning keywords passed to every model call (e.g. ``{"y": labels}``).
        device: where a start drawn from the prior lives (default: cpu; a start tensor keeps its own).

    Returns:
        (x0, info) with info = {"rounds": parallel rounds (batched network calls), "nfe": model evaluations
        per example in total, "sequential_nfe": the sequential sampler's model calls, "window", "tol"}.
    """
    from . import sample  # the package's entry point (this module is imported by it, not the reverse)

    if getattr(process, "phase_space", False):  # a window replays the sampler from positions alone
        raise ValueError(f"parallel: process '{process.name}' carries a velocity; parallel sampling is for data-space "
                         "processes")
    if window < 1:
        raise ValueError(f"parallel: window must be >= 1, got {window}")
    if not tol > 0:
        raise ValueError(f"parallel: tol must be > 0, got {tol}")
    device = x.device if torch.is_tensor(x) else torch.device(device if device is not None else "cpu")
    gen = torch.Generator(device=device).manual_seed(int(seed))
    state = gen.get_state()
    done: list[Tensor] = []
    guesses: list[tuple[Tensor, Tensor, Tensor]] = []  # (output, x, t) from the last round's batched call
    rounds = nfe = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"parallel {sampler}", unit="round")
    try:
        while True:
            replay = _Replay(done, guesses, window)
            gen.set_state(state)
            try:
                out = sample(replay, process, x, sampler=sampler, steps=steps, seed=seed, schedule=schedule,
                             generator=gen, cond=cond, device=device, **options)
                finished = True
            except _WindowFull:
                out, finished = None, False
            # accept, in order, the window calls whose input did not move since their output was computed
            accepted = 0
            for k, (xq, tq) in enumerate(replay.queries):
                if k >= len(guesses) or not _close(process, xq, tq, guesses[k][1], guesses[k][2], tol):
                    break
                accepted += 1
            done.extend(g[0] for g in guesses[:accepted])
            if finished and accepted == len(replay.queries):
                return out, {"rounds": rounds, "nfe": nfe, "sequential_nfe": len(done), "window": window,
                             "tol": tol}
            pending = replay.queries[accepted:]
            if not pending:  # the whole window was accepted: slide it, no network call needed
                guesses = []
                continue
            if max_rounds is not None and rounds >= max_rounds:
                raise ValueError(f"parallel: not converged after max_rounds={max_rounds} "
                                 f"({len(done)} model calls accepted); raise tol or max_rounds")
            guesses = _evaluate(denoiser, pending, replay.cond)
            rounds += 1
            nfe += len(pending)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(accepted=len(done))
    finally:
        if bar is not None:
            bar.close()


def _close(process: Process, x: Tensor, t: Tensor, x_prev: Tensor, t_prev: Tensor, tol: float) -> bool:
    """Whether input (x, t) equals (x_prev, t_prev) within tol * sigma(t) per example (RMS over coordinates)."""
    if x.shape != x_prev.shape or not torch.equal(t, t_prev):
        return False
    B = x.shape[0]
    rms = (x - x_prev).reshape(B, -1).double().pow(2).mean(dim=1).sqrt()
    sigma = process._sigma(t.detach().double().reshape(-1)).expand(B)
    return bool((rms <= tol * sigma).all())


def _evaluate(denoiser: Denoiser, queries: list[tuple[Tensor, Tensor]], cond: dict[str, Any]
              ) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The network at every query in ONE batched call: [(output, x, t)] in the queries' order."""
    B = queries[0][0].shape[0]
    n = len(queries)
    xs = torch.cat([q[0] for q in queries])
    ts = torch.cat([q[1].reshape(-1).expand(B) for q in queries])
    big = {k: _tile(v, n, B) for k, v in cond.items()}
    with torch.no_grad():
        outs = denoiser(xs, ts, **big).split(B)
    return [(o, q[0], q[1]) for o, q in zip(outs, queries)]

