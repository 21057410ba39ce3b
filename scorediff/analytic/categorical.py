"""Closed-form truth for discrete diffusion: categorical data whose denoising posterior is exact.

For a forward process acting per position (``scorediff.discrete``: K_t(a -> x) = alpha [a = x] + (1 - alpha) pi_x),
the posterior p(x0^i | x_t) of

* a **mixture of products of categoricals** p(x0) = sum_k w_k prod_i P[k, i, x0^i] is exact by enumeration over
  the components: p(k | x_t) ~ w_k prod_j sum_a P[k, j, a] K_t(a -> x_t^j), then
  p(x0^i = a | x_t) = sum_k p(k | x_t) P[k, i, a] K_t(a -> x_t^i) / sum_b P[k, i, b] K_t(b -> x_t^i);
* a **first-order Markov chain** p(x0) = p_1(x0^1) prod_i T[x0^{i-1}, x0^i] is exact by the forward-backward
  recursions with emissions K_t(. -> x_t^i).

Both give ``log_prob(x0)`` (exact log p(x0)), ``sample(n, generator)``, ``model(process)`` (the exact model of the
discrete interface, ``(x_t, t) -> log p(x0^i | x_t)``), and, for small V^L, ``probabilities()`` over every state
and ``conditional(fixed, values)`` (exact infilling truth). ``total_variation`` compares samples with them.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

__all__ = ["CategoricalMixture", "MarkovChain", "all_sequences", "random_mixture", "total_variation"]


def all_sequences(vocab: int, length: int) -> Tensor:
    """Every sequence of ``length`` tokens over 0..vocab-1 (vocab^length, length), in lexicographic order."""
    return torch.tensor(list(itertools.product(range(vocab), repeat=length)), dtype=torch.long).reshape(-1, length)


def _index(x: Tensor, vocab: int) -> Tensor:
    """The lexicographic index of each sequence (the row of ``all_sequences``)."""
    powers = vocab ** torch.arange(x.shape[1] - 1, -1, -1, device=x.device)
    return (x * powers).sum(-1)


def total_variation(samples: Tensor, probs: Tensor, vocab: int) -> float:
    """TV = 1/2 sum |empirical - p| over all vocab^L states (samples (N, L), probs (vocab^L,) as ``all_sequences``)."""
    counts = torch.bincount(_index(samples.cpu(), vocab), minlength=probs.numel()).double()
    return 0.5 * float((counts / counts.sum() - probs.double().cpu()).abs().sum())


class _Categorical:
    vocab: int
    length: int

    def log_prob(self, x0: Tensor) -> Tensor:
        raise NotImplementedError

    def log_p0_given(self, x: Tensor, emission: Tensor) -> Tensor:
        raise NotImplementedError

    def probabilities(self) -> Tensor:
        """p(x0) of every sequence, in the order of ``all_sequences`` (float64)."""
        return self.log_prob(all_sequences(self.vocab, self.length)).exp()

    def conditional(self, fixed: Tensor, values: Tensor) -> Tensor:
        """p(x0 | x0[fixed] = values[fixed]) over every sequence (the exact infilling target); fixed (L,) bool."""
        seqs = all_sequences(self.vocab, self.length)
        p = self.probabilities() * (seqs[:, fixed] == values[fixed]).all(-1)
        return p / p.sum()

    def model(self, process) -> _ExactModel:
        """The exact model of ``scorediff.discrete``: (x_t, t) -> log p(x0^i | x_t) (B, L, V)."""
        return _ExactModel(self, process)


class _ExactModel:
    """log p(x0^i | x_t) of an oracle under ``process`` (time enters only through K_t)."""

    def __init__(self, oracle: _Categorical, process):
        if process.vocab != oracle.vocab:
            raise ValueError(f"the oracle has vocabulary {oracle.vocab}, the process {process.vocab}")
        self.oracle, self.process = oracle, process

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        # alpha > 0 keeps an observed token possible at t = 1 (infilling shows fixed tokens unmasked from the start);
        # where alpha > 0 already, nothing changes: a common factor alpha per unmasked position cancels
        alpha = self.process.alpha(t.double()).clamp_min(1e-30)
        emission = self.process.kernel_to(x, t.double(), alpha=alpha)  # K_t(a -> x_t^i), (B, L, V)
        return self.oracle.log_p0_given(x, emission).float()


class CategoricalMixture(_Categorical):
    """p(x0) = sum_k weights[k] prod_i probs[k, i, x0^i]; weights (K,), probs (K, L, V)."""

    def __init__(self, weights: Tensor, probs: Tensor):
        weights, probs = torch.as_tensor(weights, dtype=torch.float64), torch.as_tensor(probs, dtype=torch.float64)
        if probs.ndim != 3 or weights.shape != probs.shape[:1]:
            raise ValueError(f"probs must be (K, L, V) and weights (K,), got {tuple(probs.shape)}, {tuple(weights.shape)}")
        if (weights < 0).any() or (probs < 0).any():
            raise ValueError("mixture weights and probabilities must be >= 0")
        self.weights = weights / weights.sum()
        self.probs = probs / probs.sum(-1, keepdim=True)
        self.num_components, self.length, self.vocab = probs.shape

    def log_prob(self, x0: Tensor) -> Tensor:
        """Exact log p(x0) (B,), float64."""
        x0 = x0.cpu()
        lp = torch.log(self.probs)  # (K, L, V)
        per = lp[:, torch.arange(self.length)[None, :], x0]  # (K, B, L)
        return torch.logsumexp(torch.log(self.weights)[:, None] + per.sum(-1), dim=0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        p = self.probs[k].reshape(n * self.length, self.vocab)
        return torch.multinomial(p, 1, generator=generator).reshape(n, self.length)

    def log_p0_given(self, x: Tensor, emission: Tensor) -> Tensor:
        e = emission.double().cpu()  # (B, L, V)
        joint = self.probs[None] * e[:, None]  # (B, K, L, V): P[k, i, a] K(a -> x^i)
        lik = joint.sum(-1)  # (B, K, L)
        log_post_k = torch.log(self.weights) + torch.log(lik).sum(-1)  # (B, K)
        post_k = torch.softmax(log_post_k, dim=-1)
        p = (post_k[..., None, None] * joint / lik[..., None]).sum(1)  # (B, L, V)
        return torch.log(p).to(x.device)


class MarkovChain(_Categorical):
    """p(x0) = initial[x0^1] prod_{i>1} transition[x0^{i-1}, x0^i] over ``length`` positions."""

    def __init__(self, initial: Tensor, transition: Tensor, length: int):
        self.initial = torch.as_tensor(initial, dtype=torch.float64)
        self.transition = torch.as_tensor(transition, dtype=torch.float64)
        self.vocab = self.initial.numel()
        if self.transition.shape != (self.vocab, self.vocab) or length < 1:
            raise ValueError(f"transition must be ({self.vocab}, {self.vocab}) and length >= 1")
        self.initial = self.initial / self.initial.sum()
        self.transition = self.transition / self.transition.sum(-1, keepdim=True)
        self.length = int(length)

    def log_prob(self, x0: Tensor) -> Tensor:
        x0 = x0.cpu()
        lp = torch.log(self.initial)[x0[:, 0]]
        return lp + torch.log(self.transition[x0[:, :-1], x0[:, 1:]]).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        xs = [torch.multinomial(self.initial, n, replacement=True, generator=generator)]
        for _ in range(self.length - 1):
            xs.append(torch.multinomial(self.transition[xs[-1]], 1, generator=generator)[:, 0])
        return torch.stack(xs, dim=1)

    def log_p0_given(self, x: Tensor, emission: Tensor) -> Tensor:
        e = emission.double().cpu()  # (B, L, V)
        B, L, V = e.shape
        fwd, bwd = torch.empty_like(e), torch.empty_like(e)
        f = self.initial * e[:, 0]
        fwd[:, 0] = f / f.sum(-1, keepdim=True)
        for i in range(1, L):  # normalised forward messages: p(x0^i, x_t^{1..i}) up to a constant
            f = (fwd[:, i - 1] @ self.transition) * e[:, i]
            fwd[:, i] = f / f.sum(-1, keepdim=True)
        bwd[:, L - 1] = 1.0
        for i in range(L - 2, -1, -1):
            b = (bwd[:, i + 1] * e[:, i + 1]) @ self.transition.T
            bwd[:, i] = b / b.sum(-1, keepdim=True)
        p = fwd * bwd
        return torch.log(p / p.sum(-1, keepdim=True)).to(x.device)


def random_mixture(vocab: int, length: int, components: int = 3, sharpness: float = 1.5,
                   seed: int = 0) -> CategoricalMixture:
    """A test problem: ``components`` equally weighted products of categoricals, each row softmax(sharpness z),
    z ~ N(0, I) from a generator seeded by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(components, length, vocab, generator=g, dtype=torch.float64)
    weights = torch.full((components,), 1.0 / components, dtype=torch.float64)
    return CategoricalMixture(weights, torch.softmax(sharpness * z, dim=-1))
