"""The autoregressive baseline: p(x) = prod_i p(x^i | x^{<i}) by a causal transformer of the same size.

The comparison the SEDD and MDLM papers make against GPT-2: the same ``TokenTransformer`` with ``causal=True``,
fed the sequence shifted right behind a start token (index vocab), trained by the same loop on the same data with
the exact negative log-likelihood (teacher forcing). Its -log p(x) is exact, the diffusion models' an upper bound.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .models import check_sharpening, sharpen


class ARModel(nn.Module):
    """``model(x) -> (B, L, V)`` log p(x^i = a | x^{<i}) for every position at once (one causal pass).

    Called as ``model(x, t, **cond)`` by the loop's checks, ``t`` is ignored: it has no noise level.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.vocab = int(getattr(net, "module", net).vocab)  # (a DDP wrapper keeps the network in .module)

    def forward(self, x: Tensor, t: Tensor | None = None, **cond) -> Tensor:
        start = torch.full_like(x[:, :1], self.vocab)
        inp = torch.cat([start, x[:, :-1]], dim=1)
        logits = self.net(inp, torch.zeros(x.shape[0], device=x.device), **cond)
        return torch.log_softmax(logits.float(), dim=-1)


def nll(model: ARModel, x: Tensor, **cond) -> Tensor:
    """Exact -log p(x) (B,) in nats."""
    return -model(x, **cond).gather(-1, x[..., None])[..., 0].sum(-1)


class ARLoss:
    """The training loss: -log p(x) / L (nats per token); ``generator`` unused (no noise to draw)."""

    def __call__(self, model: ARModel, x0: Tensor, generator: torch.Generator | None = None, **cond) -> Tensor:
        return nll(model, x0, **cond) / x0.shape[1]


@torch.no_grad()
def sample(model: ARModel, shape: tuple[int, int], seed: int = 0, device=None, temperature: float = 1.0,
           top_p: float = 1.0, **cond) -> Tensor:
    """Ancestral sampling left to right (L causal passes, no key-value cache: the baseline stays simple);
    ``temperature`` and ``top_p`` as for the diffusion samplers (``models.sharpen``)."""
    check_sharpening(temperature, top_p)
    B, L = shape
    g = torch.Generator(device or "cpu").manual_seed(int(seed))
    x = torch.zeros((B, L), dtype=torch.long, device=device)
    for i in range(L):
        logp = sharpen(model(x, **cond)[:, i], temperature, top_p)
        x[:, i] = torch.multinomial(logp.exp(), 1, generator=g)[:, 0]
    return x
