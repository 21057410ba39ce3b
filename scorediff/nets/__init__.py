"""Denoising networks: ``net(x, noise_input, y=None) -> raw output`` of x's shape.

``noise_input`` is a float tensor (B,) (or a scalar) that the parameterization supplies
(1000 t, log(sigma) / 4, ...); ``y`` optional class labels, a LongTensor (B,) with values
0..num_classes-1 or the null label ``NULL_LABEL = -1`` (classifier-free guidance); ``y=None`` means
all-null. An unconditional network (num_classes=0) accepts only y=None or null labels.

A network is built from a JSON-able config, ``{"type": "unet" | "dit" | "mlp", **constructor options}``, or
from a preset name; the built module carries its full config in ``.config`` so that
``make(net.config)`` rebuilds it. This package imports nothing else from scorediff.

>>> import torch
>>> net = make("mlp-2d")
>>> net(torch.randn(4, 2), torch.rand(4) * 1000).shape
torch.Size([4, 2])
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from .autoencoder import Autoencoder, SuperResolution
from .classifier import EncoderClassifier, MLPClassifier
from .dit import DiT
from .embeddings import FourierEmbedding, LabelEmbedding, NoiseEmbedding, SinusoidalEmbedding
from .masked import MaskedConditional
from .mlp import MLP
from .token_transformer import TokenTransformer
from .unet import UNet

__all__ = [
    "ARCHITECTURES",
    "Autoencoder",
    "CLASSIFIER_PRESETS",
    "DiT",
    "EncoderClassifier",
    "MLP",
    "MLPClassifier",
    "MaskedConditional",
    "NULL_LABEL",
    "PRESETS",
    "FourierEmbedding",
    "LabelEmbedding",
    "NoiseEmbedding",
    "SinusoidalEmbedding",
    "SuperResolution",
    "TokenTransformer",
    "UNet",
    "count_parameters",
    "default_config",
    "make",
]

NULL_LABEL = -1

# config "type" -> class; every constructor argument is a config key
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "unet": UNet, "dit": DiT, "mlp": MLP, "autoencoder": Autoencoder, "super_resolution": SuperResolution,
    "unet-classifier": EncoderClassifier, "mlp-classifier": MLPClassifier,
    "masked": MaskedConditional,  # CSDI-style conditioning on observed entries (forecasting, imputation)
    "token_transformer": TokenTransformer,
}

PRESETS: dict[str, dict[str, Any]] = {
    # Ho et al. (2020), CIFAR-10 model: 35.7 M parameters.
    "ddpm-cifar10": {
        "type": "unet", "in_channels": 3, "channels": 128, "channel_mult": [1, 2, 2, 2], "num_res_blocks": 2,
        "attention_levels": [1], "dropout": 0.1, "time_injection": "add", "embedding": "sinusoidal",
    },
    # 28x28 images (MNIST-like): attention at 7x7.
    "unet-28": {
        "type": "unet", "in_channels": 1, "channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 2,
        "attention_levels": [2], "dropout": 0.1, "time_injection": "scale_shift", "embedding": "sinusoidal",
    },
    # scikit-learn's 8x8 digits: small enough to train in minutes on a laptop CPU.
    "unet-digits": {
        "type": "unet", "in_channels": 1, "channels": 16, "channel_mult": [1, 2, 4], "num_res_blocks": 1,
        "attention_levels": [2], "dropout": 0.0, "time_injection": "scale_shift", "embedding": "sinusoidal",
        "norm_groups": 8,
    },
    # for tests: a few thousand parameters, two levels.
    "unet-tiny": {
        "type": "unet", "in_channels": 1, "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
        "attention_levels": [1], "dropout": 0.0, "time_injection": "scale_shift", "embedding": "sinusoidal",
        "norm_groups": 4, "emb_mult": 2,
    },
    # DiT-S/2 (Peebles & Xie 2023) on a 32x32x4 latent (a 256x256 image through an 8x VAE): 33 M parameters.
    "dit-s-2": {
        "type": "dit", "in_channels": 4, "image_size": 32, "patch_size": 2, "hidden": 384, "depth": 12, "heads": 6,
    },
    # a small DiT for small latents (e.g. 8x8x4 from scorediff's autoencoder) or small pixel data.
    "dit-latent-small": {
        "type": "dit", "in_channels": 4, "image_size": 8, "patch_size": 1, "hidden": 128, "depth": 6, "heads": 4,
    },
    # scikit-learn's 8x8 digits in pixel space: 2x2 patches, 16 tokens.
    "dit-digits": {
        "type": "dit", "in_channels": 1, "image_size": 8, "patch_size": 2, "hidden": 96, "depth": 4, "heads": 4,
    },
    # for tests
    "dit-tiny": {
        "type": "dit", "in_channels": 1, "image_size": 8, "patch_size": 2, "hidden": 32, "depth": 2, "heads": 2,
        "emb_features": 32,
    },
    # KL autoencoder for latent diffusion: f = 2 (e.g. 8x8 digits -> 4x4x4 latents; 28x28 -> 14x14x4).
    "autoencoder-f2": {
        "type": "autoencoder", "in_channels": 1, "latent_channels": 4, "channels": 32, "channel_mult": [1, 2],
        "num_res_blocks": 1, "norm_groups": 8,
    },
    # KL autoencoder, f = 4 (32x32 -> 8x8x4).
    "autoencoder-f4": {
        "type": "autoencoder", "in_channels": 3, "latent_channels": 4, "channels": 32, "channel_mult": [1, 2, 2],
        "num_res_blocks": 1, "norm_groups": 8,
    },
    # a x2 super-resolution stage of a cascade (e.g. 4x4 -> 8x8 digits, 14x14 -> 28x28)
    "sr-x2": {
        "type": "super_resolution", "in_channels": 1, "factor": 2,
        "base": {"type": "unet", "channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_levels": [],
                 "dropout": 0.0, "time_injection": "scale_shift", "norm_groups": 8},
    },
    # Sequences (B, C, L) (scorediff.data "series", "sinusoids", "gp-series"): the U-Net with dims = 1.
    # for tests: two levels, L divisible by 2.
    "unet1d-tiny": {
        "type": "unet", "dims": 1, "in_channels": 1, "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
        "attention_levels": [1], "dropout": 0.0, "time_injection": "scale_shift", "norm_groups": 4, "emb_mult": 2,
    },
    # trains in minutes on a CPU (series of 32-64 steps): 0.59 M parameters; L divisible by 4.
    "unet1d-series": {
        "type": "unet", "dims": 1, "in_channels": 1, "channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1,
        "attention_levels": [2], "dropout": 0.0, "time_injection": "scale_shift", "norm_groups": 8,
    },
    # a GPU size for long series (L divisible by 8): 37.5 M parameters.
    "unet1d-large": {
        "type": "unet", "dims": 1, "in_channels": 1, "channels": 128, "channel_mult": [1, 2, 2, 4],
        "num_res_blocks": 2, "attention_levels": [2, 3], "num_heads": 4, "dropout": 0.1,
        "time_injection": "scale_shift",
    },
    # a DiT over 1-D patches (image_size [L]; set from the data)
    "dit1d-tiny": {
        "type": "dit", "in_channels": 1, "image_size": [32], "patch_size": 2, "hidden": 32, "depth": 2, "heads": 2,
        "emb_features": 32,
    },
    "dit1d-series": {
        "type": "dit", "in_channels": 1, "image_size": [64], "patch_size": 4, "hidden": 128, "depth": 6, "heads": 4,
    },
    # Video (B, C, T, H, W) (scorediff.data "video", "moving-digits"): factorised space-time U-Net, dims = 3.
    "unet-video-tiny": {
        "type": "unet", "dims": 3, "in_channels": 1, "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
        "attention_levels": [1], "dropout": 0.0, "time_injection": "scale_shift", "norm_groups": 4, "emb_mult": 2,
    },
    # moving digits (16x16 frames): 0.33 M parameters, temporal convolutions (half the cost of temporal
    # attention on a CPU), trains in minutes on a CPU.
    "unet-video-digits": {
        "type": "unet", "dims": 3, "in_channels": 1, "channels": 16, "channel_mult": [1, 2, 2], "num_res_blocks": 1,
        "attention_levels": [2], "dropout": 0.0, "time_injection": "scale_shift", "norm_groups": 8,
        "temporal": "conv",
    },
    # a GPU size (Video Diffusion Models' layout, e.g. 16 frames of 64x64 RGB): 44 M parameters.
    "unet-video-large": {
        "type": "unet", "dims": 3, "in_channels": 3, "channels": 128, "channel_mult": [1, 2, 2, 2],
        "num_res_blocks": 2, "attention_levels": [2, 3], "num_heads": 4, "dropout": 0.1,
        "time_injection": "scale_shift",
    },
    # token transformers (discrete diffusion; causal=True: the autoregressive baseline); vocab and length
    # come from the data. tiny: tests; digits: 64-token digits; small: CPU text runs (1.3 M parameters);
    # gpt2-small: GPT-2 small's shape (208 M parameters at vocab 50257, length 1024: untied head, adaLN),
    # documented, not trained here.
    "tokens-tiny": {"type": "token_transformer", "hidden": 32, "depth": 2, "heads": 2, "emb_features": 32},
    "tokens-digits": {"type": "token_transformer", "hidden": 96, "depth": 4, "heads": 4, "emb_features": 64},
    "tokens-small": {"type": "token_transformer", "hidden": 128, "depth": 4, "heads": 4},
    "tokens-gpt2-small": {"type": "token_transformer", "vocab": 50257, "length": 1024, "hidden": 768, "depth": 12,
                          "heads": 12, "emb_features": 256},
    # toy 2-D data (scorediff.data "8gaussians", "moons", ...).
    "mlp-2d": {
        "type": "mlp", "dim": 2, "width": 128, "depth": 4, "emb_dim": 64, "embedding": "sinusoidal",
        "time_injection": "add", "residual": True,
    },
}


# Noise-conditional classifiers ``net(x_t, noise_input) -> logits (B, K)`` (classifier guidance; kept apart
# from PRESETS, whose networks all map x to x's shape).
CLASSIFIER_PRESETS: dict[str, dict[str, Any]] = {
    # the encoder half of unet-digits with a pooling head (8x8 digits, 10 classes)
    "classifier-digits": {
        "type": "unet-classifier", "in_channels": 1, "num_classes": 10, "channels": 16, "channel_mult": [1, 2, 4],
        "num_res_blocks": 1, "attention_levels": [2], "time_injection": "scale_shift", "embedding": "sinusoidal",
        "norm_groups": 8,
    },
    # toy (B, D) data
    "classifier-2d": {
        "type": "mlp-classifier", "dim": 2, "num_classes": 8, "width": 128, "depth": 3, "emb_dim": 64,
        "embedding": "sinusoidal",
    },
}


# the data layouts each network accepts, by len(shape); the others take (C, H, W) only
_LAYOUTS: dict[str, dict[int, str]] = {
    "unet": {2: "(C, L)", 3: "(C, H, W)", 4: "(C, T, H, W)"},
    "dit": {2: "(C, L)", 3: "(C, H, W)"},
    "masked": {2: "(C, L)", 3: "(C, H, W)", 4: "(C, T, H, W)"},
}


def _signature_defaults(cls: type[nn.Module]) -> dict[str, Any]:
    return {
        k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"
    }


def _jsonable(v: Any) -> Any:
    return [_jsonable(u) for u in v] if isinstance(v, (tuple, list)) else v


def default_config(arch: str) -> dict[str, Any]:
    """Every key an architecture accepts, with its default: ``{"type": arch, ...}``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"network type {arch!r} unknown; one of: {', '.join(sorted(ARCHITECTURES))}")
    return {"type": arch, **{k: _jsonable(v) for k, v in _signature_defaults(ARCHITECTURES[arch]).items()}}


def make(spec: str | dict[str, Any], *, shape: Sequence[int] | None = None, **overrides: Any) -> nn.Module:
    """Build a network from a preset name or a config dict, with keyword overrides.

    ``shape``, the per-example data shape (e.g. ``dataset.info.shape``), sets ``in_channels``
    (U-Net and DiT, from shape[0] of (C, H, W); the DiT also ``image_size`` from (H, W)) or ``dim``
    (MLP, the product of the shape) over the preset's value, unless that key is among the overrides.
    The module's ``.config`` holds the complete config (defaults filled in), JSON-able.
    Raises ValueError for an unknown preset, type or key, naming it and listing the known ones.
    """
    if isinstance(spec, str):
        known = {**PRESETS, **CLASSIFIER_PRESETS}
        if spec not in known:
            raise ValueError(f"network preset {spec!r} unknown; one of: {', '.join(sorted(known))}")
        config = copy.deepcopy(known[spec])
    elif isinstance(spec, dict):
        config = copy.deepcopy(spec)
    else:
        raise ValueError(f"network spec must be a preset name or a config dict, got {type(spec).__name__}")
    config.update(overrides)
    arch = config.pop("type", None)
    if arch is None:
        raise ValueError(f"network config needs a 'type'; one of: {', '.join(sorted(ARCHITECTURES))}")
    full = default_config(arch)
    bad = sorted(set(config) - set(full))
    if bad:
        raise ValueError(
            f"network config key(s) {', '.join(map(repr, bad))} unknown for type {arch!r}; "
            f"allowed: {', '.join(k for k in full if k != 'type')}"
        )
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if "in_channels" in full:  # image networks: U-Net, DiT, autoencoder, super-resolution, encoder classifier
            layouts = _LAYOUTS.get(arch, {3: "(C, H, W)"})
            if len(shape) not in layouts:
                raise ValueError(f"a {arch} network needs data of shape {' or '.join(layouts.values())}, got {shape}")
            if "in_channels" not in overrides:
                config["in_channels"] = shape[0]
            if arch == "dit" and "image_size" not in overrides:
                config["image_size"] = list(shape[1:])
            if arch == "unet" and "dims" not in overrides:
                config["dims"] = len(shape) - 1
            if arch == "masked" and "size" not in overrides:
                config["size"] = list(shape[1:])
        else:
            n = 1
            for s in shape:
                n *= s
            if "dim" not in overrides:
                config["dim"] = n
    full.update({k: _jsonable(v) for k, v in config.items()})
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in full.items() if k != "type"}
    net = ARCHITECTURES[arch](**kwargs)
    net.config = full
    return net


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; works on a module built on the meta device."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
