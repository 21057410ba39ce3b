"""Feature networks for FID / KID / precision-recall, and the cache of reference features.

A ``Features`` maps data (B, *event) to feature vectors (B, F); it carries a ``name`` and a ``digest`` (sha256 of
its weights) that key the cache. Built by ``make_features(spec)``:
==================  =============================================================================================
spec                features
==================  =============================================================================================
``raw``             the data itself, flattened (points; tiny images)
``inception:PATH``  pool3 of FID's Inception-v3 with the weights file PATH (``scorediff.eval.inception``): numbers
                    comparable with papers on natural images
``classifier:PATH`` ``.features(x)`` of a classifier written by ``scorediff train-classifier``
                    (``scorediff.guidance.load_classifier``): the choice for small or non-natural images
==================  =============================================================================================

and ``module_features(module)`` for any ``torch.nn.Module`` (its ``features`` method if it has one, else its
output, flattened).

Reference features are cached per data set and feature network: ``reference_features(data, features, cache)``
stores them under ``cache/<sha256 of the data, the network's name and its weights>.pt`` and reads them back on
the next call. The cache folder is ``$SCOREDIFF_CACHE/eval`` or ``~/.cache/scorediff/eval`` unless given.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..atomic import write_atomic
from ..guidance import load_classifier
from .inception import load_inception

__all__ = ["Features", "default_cache_dir", "make_features", "module_features", "reference_features"]


def _digest_state(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class Features:
    """A feature map ``fn`` (B, *event) -> (B, F) run in batches without gradients; ``name`` and ``digest`` key
    the reference cache (``digest``: sha256 of the weights, "" for parameter-free features)."""

    fn: Callable[[Tensor], Tensor]
    name: str
    digest: str = ""
    batch_size: int = 256
    device: torch.device | str = "cpu"

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        out = []
        for i in range(0, x.shape[0], self.batch_size):
            f = self.fn(x[i:i + self.batch_size].to(self.device, torch.float32))
            out.append(f.reshape(f.shape[0], -1).to("cpu", torch.float32))
        return torch.cat(out)


def raw_features() -> Features:
    """The data itself, flattened: for points, where the data space is the feature space."""
    return Features(lambda x: x.reshape(x.shape[0], -1), "raw")


def module_features(module: nn.Module, name: str | None = None, device: torch.device | str = "cpu",
                    batch_size: int = 256) -> Features:
    """Features of any ``torch.nn.Module``: its ``features(x)`` method if it has one, else ``module(x)``."""
    module = module.to(device).eval()
    fn = module.features if callable(getattr(module, "features", None)) else module
    return Features(fn, name or f"module:{type(module).__name__}", _digest_state(module), batch_size, device)


def make_features(spec: str, device: torch.device | str = "cpu", batch_size: int | None = None) -> Features:
    """``raw`` | ``inception:PATH`` | ``classifier:PATH`` (see the module docstring)."""
    kind, _, path = spec.partition(":")
    if kind == "raw" and not path:
        return raw_features()
    if kind == "inception" and path:
        net = load_inception(path, device)
        return module_features(net, "inception-fid", device, batch_size or 32)
    if kind == "classifier" and path:
        net = load_classifier(path, device)
        return module_features(net, "classifier", device, batch_size or 256)
    raise ValueError(f"features {spec!r} unknown; expected raw, inception:PATH or classifier:PATH")


def default_cache_dir() -> Path:
    """``$SCOREDIFF_CACHE/eval`` if set, else ``~/.cache/scorediff/eval``."""
    root = os.environ.get("SCOREDIFF_CACHE")
    return Path(root) / "eval" if root else Path.home() / ".cache" / "scorediff" / "eval"


def data_digest(data: Tensor) -> str:
    x = data.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(str(tuple(x.shape)).encode())
    h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def reference_features(data: Tensor, features: Features, cache_dir: str | os.PathLike | None = None,
                       use_cache: bool = True) -> Tensor:
    """``features(data)``, read from / written to the cache keyed by the data, the network name and weights.

    The cache file is safetensors (one tensor, "features"), written whole (``scorediff.atomic.write_atomic``); a
    damaged or foreign file is recomputed and replaced, with a one-line warning.
    """
    if not use_cache:
        return features(data)
    from safetensors.torch import load, save


    key = hashlib.sha256(f"{data_digest(data)}|{features.name}|{features.digest}".encode()).hexdigest()[:32]
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"{features.name}-{key}.safetensors"
    if path.is_file():
        try:
            cached = load(path.read_bytes())["features"]
            if cached.shape[0] == data.shape[0]:
                return cached
            raise ValueError(f"{cached.shape[0]} rows for {data.shape[0]} examples")
        except Exception as e:  # safetensors' own error type for truncated or garbage bytes, a missing key
            print(f"warning: feature cache {str(path)!r} is damaged ({type(e).__name__}); recomputing it",
                  file=sys.stderr)
    feats = features(data)
    write_atomic(path, save({"features": feats.detach().to("cpu").contiguous()}))
    return feats
