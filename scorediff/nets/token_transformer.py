"""A transformer over token sequences: ``net(x, noise_input, y=None) -> (B, L, out)`` for x a LongTensor (B, L).

The bidirectional denoiser of discrete diffusion (the DiT backbone of SEDD and MDLM, Peebles & Xie 2023): token
embedding (vocab + 1 entries: the absorbing mask, or the autoregressive start token, is index vocab), ``depth``
blocks with adaLN-Zero conditioning on the embedded noise input (``NoiseEmbedding``), a final adaLN and a linear
head to ``out`` logits (vocab for the mean parameterisation, vocab + 1 for log-ratios).

Positions (``positions``): ``rotary`` (RoFormer, Su et al. 2021; SEDD's and MDLM's DiT) rotates queries and keys by
their position, so attention sees relative offsets from the first step; ``learned`` adds an absolute embedding to
the input; ``rotary+learned`` (default) has both, the absolute one starting at 0 (data whose statistics depend on
the position, such as 8x8 digits as 64 tokens, need it; text does not). A masked position carries no token of its
own, so a denoiser can only use context through attention: with learned positions alone (random, std 0.02) the
text-chars run stayed at the unigram entropy for 1200 steps; rotary positions leave it within 300 steps
(docs/results/discrete.md; tests/test_discrete_training.py checks it on a Markov chain).

``causal=True`` makes the same network the autoregressive baseline (GPT-style masked self-attention); its noise
input is a constant 0, so the adaLN reduces to learned per-block scales.

``block=K`` makes it the denoiser of block diffusion (BD3-LM, Arriola et al. 2025): attention is block-causal (a
position sees its own block of K and the blocks before it), so its output for block b depends on blocks <= b only.
``forward(x_t, s, clean=x0)`` is BD3-LM's training pass: the 2L tokens [x_t, x0] in one call, x_t's block b seeing
itself and x0's blocks before b, x0's block b seeing x0's blocks up to b, both halves at the same positions; it
returns the x_t half, equal to what ``forward`` gives block b of [x0^{<b}, x_t^b, anything] (tested), for every
block at once.

Presets (``scorediff.nets.PRESETS``; parameters at the vocabularies and lengths shown): ``tokens-tiny`` (tests;
51 k at vocab 103, length 64), ``tokens-digits`` (0.71 M at vocab 17, length 64), ``tokens-small`` (the CPU text
runs; 1.29 M at vocab 103, length 64), ``tokens-gpt2-small`` (GPT-2 small's shape: hidden 768, 12 blocks, 12 heads,
length 1024, vocab 50257; 208 M parameters, GPT-2's 124 M plus an untied output head (39 M) and the adaLN
modulation (42 M); documented, not trained here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dit import DiTBlock, _modulate
from .embeddings import LabelEmbedding, NoiseEmbedding

POSITIONS = ("rotary+learned", "rotary", "learned")


def rotary_tables(length: int, dim: int) -> tuple[Tensor, Tensor]:
    """cos, sin (length, dim / 2) of rotary position embedding (RoFormer, Su et al. 2021): frequencies 10000^(-2k/dim)."""
    if dim % 2:
        raise ValueError(f"rotary positions need an even head width, got {dim}")
    freq = 1.0 / 10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angle = torch.arange(length, dtype=torch.float64)[:, None] * freq[None, :]
    return torch.cos(angle).float(), torch.sin(angle).float()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair (x_k, x_{k + d/2}) of x (B, heads, L, d) by the angle of its position: q.k then depends on
    the positions only through their difference (the "rotate half" layout of GPT-NeoX, used by SEDD and MDLM)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class TokenBlock(DiTBlock):
    """DiT's adaLN-Zero block, with optional causal attention (the autoregressive baseline) and rotary positions."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, dropout: float, causal: bool):
        super().__init__(hidden, heads, mlp_ratio, dropout)
        self.causal = causal

    def forward(self, h: Tensor, c: Tensor, rope: tuple[Tensor, Tensor] | None = None,
                mask: Tensor | None = None) -> Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.ada(c).chunk(6, dim=1)
        B, N, W = h.shape
        q, k, v = self.qkv(_modulate(self.norm1(h), shift_a, scale_a)).view(B, N, 3, self.heads, -1).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        if mask is not None:  # (N, N) bool, True where a query (row) may attend to a key (column)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        h = h + gate_a[:, None, :] * self.proj(a.transpose(1, 2).reshape(B, N, W))
        return h + gate_m[:, None, :] * self.mlp(_modulate(self.norm2(h), shift_m, scale_m))


class TokenTransformer(nn.Module):
    """Transformer over (B, L) token ids conditioned on a noise input (B,); output (B, L, out) logits."""

    def __init__(
        self,
        vocab: int = 256,  # token values 0..vocab-1; index vocab is the mask / start token
        length: int = 128,  # the longest sequence (learned positions)
        hidden: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        out: int | None = None,  # output logits per position; None: vocab
        causal: bool = False,  # masked self-attention: the autoregressive baseline
        emb_features: int = 128,  # width of the sinusoidal features of the noise input
        num_classes: int = 0,  # 0: unconditional; else labels 0..num_classes-1 and -1 (null)
        positions: str = "rotary+learned",  # rotary (relative; SEDD, MDLM) and/or learned (absolute) positions
        block: int = 0,  # > 0: block-causal attention over blocks of this many tokens (block diffusion)
    ):
        super().__init__()
        if vocab < 2 or length < 1:
            raise ValueError(f"token transformer needs vocab >= 2 and length >= 1, got {vocab}, {length}")
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        if positions not in POSITIONS:
            raise ValueError(f"positions {positions!r} unknown; one of: {', '.join(POSITIONS)}")
        if isinstance(block, bool) or not isinstance(block, int) or block < 0 or (block and causal):
            raise ValueError(f"block must be an integer >= 0 (0: full attention) and not set with causal, got {block!r}")
        self.vocab, self.length, self.causal, self.positions, self.block = vocab, length, causal, positions, block
        self.tok = nn.Embedding(vocab + 1, hidden)
        nn.init.normal_(self.tok.weight, std=0.02)
        if "learned" in positions:
            self.pos = nn.Parameter(torch.zeros(1, length, hidden))
            if positions == "learned":
                nn.init.normal_(self.pos, std=0.02)
            # with rotary positions the absolute ones start at 0: random ones (std 0.02, as large as the token
            # embedding) hide the relative structure from the attention, and on text (pydoc-text, L = 64) the
            # model then stays at the unigram entropy for hundreds of steps as learned positions alone do
        if "rotary" in positions:
            cos, sin = rotary_tables(length, hidden // heads)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        # noise inputs lie in [0, 1] (the masked / jumped fraction): spread them over the sinusoid's range
        self.emb = NoiseEmbedding(emb_features, hidden, "sinusoidal", input_scale=1000.0)
        self.label = LabelEmbedding(num_classes, hidden) if num_classes > 0 else None
        self.blocks = nn.ModuleList(TokenBlock(hidden, heads, mlp_ratio, dropout, causal) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Linear(hidden, 2 * hidden)
        self.head = nn.Linear(hidden, out or vocab)
        for layer in (self.ada, self.head):  # the output starts at 0: uniform logits
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def attention_mask(self, length: int, pair: bool, device=None) -> Tensor | None:
        """The block-causal mask (None without ``block``): (L, L), or (2L, 2L) for the [x_t, x0] training pass."""
        if not self.block:
            return None
        b = torch.arange(length, device=device) // self.block
        if not pair:
            return b[None, :] <= b[:, None]
        noisy = b[None, :] == b[:, None]  # x_t sees its own block of x_t ...
        before = b[None, :] < b[:, None]  # ... and x0's blocks before it
        upto = b[None, :] <= b[:, None]  # x0 sees x0's blocks up to its own, never x_t
        return torch.cat([torch.cat([noisy, before], 1), torch.cat([torch.zeros_like(upto), upto], 1)], 0)

    def forward(self, x: Tensor, noise_input: Tensor, y: Tensor | None = None, clean: Tensor | None = None) -> Tensor:
        B, L = x.shape
        if L > self.length:
            raise ValueError(f"sequence length {L} exceeds the network's length {self.length}")
        if clean is not None and (not self.block or clean.shape != x.shape):
            raise ValueError(f"clean= is the block-diffusion training pass: it needs block > 0 (got {self.block}) "
                             f"and x0 of x_t's shape {tuple(x.shape)}, got {tuple(clean.shape)}")
        s = noise_input.float().expand(B) if noise_input.ndim == 0 else noise_input.float()
        c = self.emb(s)
        if self.label is not None:
            c = c + self.label(y, B, x.device)
        c = F.silu(c)
        pos = torch.arange(L, device=x.device)
        if clean is not None:  # [x_t, x0], both halves at positions 0..L-1
            x, pos = torch.cat([x, clean], 1), pos.repeat(2)
        h = self.tok(x)
        rope = None
        if "learned" in self.positions:
            h = h + self.pos[0, pos]
        if "rotary" in self.positions:
            rope = (self.rope_cos[pos].to(h.dtype), self.rope_sin[pos].to(h.dtype))
        mask = self.attention_mask(L, clean is not None, x.device)
        for block in self.blocks:
            h = block(h, c, rope, mask)
        shift, scale = self.ada(c).chunk(2, dim=1)
        return self.head(_modulate(self.norm(h), shift, scale))[:, :L]
