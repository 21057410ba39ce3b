"""What a config builds (``Components``) and the data description a run stores (``info_dict``): shared by the
continuous builder (``build``) and the token builder (``tokens``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

from torch import nn

from .. import parameterizations, processes


def info_dict(info: Any) -> dict:
    """A dataset's ``info`` as a plain JSON-able dict."""
    if hasattr(info, "to_dict"):
        info = info.to_dict()
    elif is_dataclass(info):
        info = asdict(info)
    out = dict(info)
    for k, v in out.items():
        if isinstance(v, tuple):
            out[k] = list(v)
    return out



@dataclass
class Components:
    dataset: Any
    info: dict
    net: nn.Module
    process: processes.Process
    param: parameterizations.Parameterization
    loss: Any
    task: str = "diffusion"  # "diffusion" | "autoencoder" (a KL autoencoder for latent diffusion) | "discrete" | "autoregressive"
    cascade_factor: int = 0  # > 0: a super-resolution stage conditioned on the data downsampled by this factor
    model: Any = None  # token runs: net -> the callable the loss takes (runs/tokens.py); None: NetDenoiser
