"""Small shared helpers: broadcasting a per-example time over any tensor shape, argument checks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Right-pad ``v`` (shape (B,) or scalar) with singleton dims so it broadcasts against ndim-D tensors."""
    if v.ndim == 0:
        return v
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def as_time(t: Tensor | float, like: Tensor | None = None) -> Tensor:
    """Turn a float or tensor time into a float tensor on ``like``'s device and dtype (float64 stays float64)."""
    if not torch.is_tensor(t):
        dtype = like.dtype if like is not None and like.is_floating_point() else torch.get_default_dtype()
        device = like.device if like is not None else None
        return torch.tensor(float(t), dtype=dtype, device=device)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if like is not None:
        dtype = like.dtype if like.is_floating_point() else t.dtype
        t = t.to(device=like.device, dtype=dtype)
    return t


def batch_time(t: Tensor | float, x: Tensor) -> Tensor:
    """A time of shape (B,) for the batch ``x``: a scalar is expanded, a (B,) tensor is checked."""
    t = as_time(t, x)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"time must be a scalar or of shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


def sum_flat(x: Tensor) -> Tensor:
    """Sum over every dimension but the first (batch)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the first (batch)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def unknown(kind: str, name: object, known: Iterable[str]) -> ValueError:
    """The error for an unknown name: ``sampler 'dpm++2x' unknown; one of: a, b, c``."""
    return ValueError(f"{kind} {name!r} unknown; one of: {', '.join(sorted(known))}")


def check_options(kind: str, options: dict, allowed: Iterable[str]) -> None:
    """Raise a ValueError naming any option not in ``allowed``."""
    allowed = set(allowed)
    bad = sorted(set(options) - allowed)
    if bad:
        raise ValueError(f"{kind}: unknown option(s) {', '.join(bad)}; allowed: {', '.join(sorted(allowed)) or 'none'}")


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed for one named random stream, e.g. derive_seed(0, "loss", rank)."""
    import hashlib

    digest = hashlib.sha256("/".join(str(v) for v in (seed, *names)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def parse_key_value(text: str, what: str = "--option") -> tuple[str, Any]:
    """``"eta=1.0"`` -> ("eta", 1.0): the value is JSON where it parses, else the string itself. A text without
    ``=`` or with an empty key is a ValueError naming ``what`` (the flag it came from)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{what} expects KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def parse_key_values(items: Iterable[str], what: str = "--option") -> dict[str, Any]:
    """``parse_key_value`` over repeated ``KEY=VALUE`` arguments; a later key overrides an earlier one."""
    return dict(parse_key_value(item, what) for item in items)


def check_counts(num: int, steps: int | None, batch: int | None) -> None:
    """The counts of a sampling request, checked at the door: one line naming the flag (sample, generate)."""
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if batch is not None and batch < 1:
        raise ValueError(f"--batch must be >= 1, got {batch}")


def cycle_labels(start: int, n: int, num_classes: int, device: torch.device | str | None = None) -> Tensor:
    """Class labels start, start + 1, ..., start + n - 1 modulo ``num_classes``: rows ``start .. start + n - 1`` of
    a batch in which every class is equally represented (the labels of every class-conditional sampling)."""
    return torch.arange(start, start + n, device=device) % int(num_classes)


@torch.no_grad()
def ema_update_(average: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """average <- beta average + (1 - beta) model, parameter by parameter (one fused lerp); buffers copied.

    The exponential moving average of weights (Polyak & Juditsky 1992): the trainer's EMA (``training.ema``) and
    consistency distillation's target network theta- (Song et al. 2023, eq. 8) both step with it."""
    params = [p.detach() for p in model.parameters()]
    # lerp: ema + (1 - beta) (p - ema) = beta ema + (1 - beta) p
    torch._foreach_lerp_(list(average.parameters()), params, 1.0 - beta)
    for b_avg, b in zip(average.buffers(), model.buffers()):
        b_avg.copy_(b)


class Counted:
    """A callable (a Denoiser) that counts its calls in ``nfe`` (one call evaluates the model on a whole batch)."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn, self.nfe = fn, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.nfe += 1
        return self.fn(*args, **kwargs)
