"""Latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models";
Vahdat et al. 2021): an autoencoder on the data side, a diffusion model in its latent space.

The samplers never see the autoencoder (DESIGN.md): a latent diffusion run is an ordinary run whose data are
the scaled latents z = s * E(x) of a frozen autoencoder, and whose samples are decoded, x = D(z / s).

- ``autoencoder_loss``: the KL-autoencoder objective, reconstruction (L1 or L2) + kl_weight * KL(q(z|x) || N(0, I))
  (LDM's "KL-reg", App. G; a small weight such as 1e-6 keeps the latent space close to the data's detail while
  bounding its scale).
- ``Codec``: ``encode(x) -> z`` (unscaled posterior mean), ``decode(z) -> x``, ``latent_shape(shape)``; for a
  scorediff ``Autoencoder`` (``AutoencoderCodec``; a run folder is loaded by ``scorediff.runs.load_codec``)
  and for a diffusers ``AutoencoderKL`` from a local ``save_pretrained`` folder (``DiffusersVAECodec``,
  ``load_diffusers_vae``: Stable-Diffusion-style VAEs users have on disk; diffusers is imported only then).
- The latent scale factor s (LDM Sec. 4.3.2 / App. G: "rescale the latent space with 1 / std of the latents")
  is measured on the training data when the latent data set is built (``LatentDataset``), so the diffusion
  model sees latents of unit variance; a diffusers VAE's own ``scaling_factor`` is used when asked.

Latents are the posterior *mean*: deterministic, so a resumed run sees exactly the same data. With the small KL
weight the posterior std is tiny (measured and stored as ``LatentDataset.posterior_std``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) per example, summed over the latent coordinates."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(dim=1)


RECONSTRUCTIONS = ("l1", "l2")


def autoencoder_loss(
    ae: nn.Module, x: Tensor, *, generator: torch.Generator | None = None, kl_weight: float = 1e-6,
    recon: str = "l1",
) -> Tensor:
    """Per-example loss: mean |x - x_hat| (or squared) over pixels + kl_weight * KL(q(z|x) || N(0, I)).

    The decoder sees a posterior sample z = mean + std * noise (noise from ``generator``), as in LDM training.
    ``ae`` is a ``nets.Autoencoder`` (or a DDP wrapper of one: a single forward call).
    """
    if recon not in RECONSTRUCTIONS:
        raise ValueError(f"autoencoder recon {recon!r} unknown; one of: {', '.join(RECONSTRUCTIONS)}")
    if kl_weight < 0:
        raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
    x_hat, mean, logvar = ae(x, generator, sample=True)
    err = (x_hat - x).abs() if recon == "l1" else (x_hat - x).pow(2)
    return err.flatten(1).mean(dim=1) + kl_weight * kl_divergence(mean, logvar)


class AutoencoderObjective:
    """The training loss of an autoencoder run (config ``loss.name = "autoencoder"``, options ``kl_weight``,
    ``recon``), called like every training loss: ``loss(model, x0, generator) -> (B,)``, where ``model`` is the
    trainer's wrapper around the network (``model.net`` is the autoencoder)."""

    def __init__(self, kl_weight: float = 1e-6, recon: str = "l1"):
        if recon not in RECONSTRUCTIONS:
            raise ValueError(f"loss 'autoencoder': recon {recon!r} unknown; one of: {', '.join(RECONSTRUCTIONS)}")
        if not (isinstance(kl_weight, (int, float)) and kl_weight >= 0):
            raise ValueError(f"loss 'autoencoder': kl_weight must be a number >= 0, got {kl_weight!r}")
        self.kl_weight, self.recon = float(kl_weight), recon

    def __call__(self, model, x0: Tensor, generator: torch.Generator | None = None, **cond) -> Tensor:
        return autoencoder_loss(getattr(model, "net", model), x0, generator=generator, kl_weight=self.kl_weight,
                                recon=self.recon)


class Codec(Protocol):
    """What latent diffusion needs of an autoencoder (all without gradients)."""

    def encode(self, x: Tensor) -> Tensor: ...  # data (B, C, H, W) -> unscaled latents (posterior mean)

    def decode(self, z: Tensor) -> Tensor: ...  # unscaled latents -> data

    def latent_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]: ...


class AutoencoderCodec:
    """A scorediff ``nets.Autoencoder`` as a codec."""

    def __init__(self, ae: nn.Module):
        self.ae = ae.eval()

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        return self.ae.encode(x)[0]

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        return self.ae.decode(z)

    def latent_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        C, H, W = shape
        f = self.ae.factor
        if C != self.ae.in_channels or H % f or W % f:
            raise ValueError(f"autoencoder for {self.ae.in_channels} channels and factor {f} does not fit data "
                             f"of shape {tuple(shape)}")
        return (self.ae.latent_channels, H // f, W // f)


class DiffusersVAECodec:
    """A diffusers ``AutoencoderKL`` as a codec: ``encode`` is ``latent_dist.mean``, ``decode`` ``.sample``.

    ``scaling_factor`` is the VAE config's (e.g. 0.18215 for Stable Diffusion 1.x); ``LatentDataset`` uses it
    when built with ``scale="config"``.
    """

    def __init__(self, vae: nn.Module):
        self.vae = vae.eval()
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 1.0))
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        return self.vae.encode(x).latent_dist.mean

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode(z).sample

    def latent_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        C, H, W = shape
        if C != self.vae.config.in_channels or H % self.factor or W % self.factor:
            raise ValueError(f"VAE for {self.vae.config.in_channels} channels and factor {self.factor} does not "
                             f"fit data of shape {tuple(shape)}")
        return (self.vae.config.latent_channels, H // self.factor, W // self.factor)


def load_diffusers_vae(path: str | Path, device: str | torch.device = "cpu") -> DiffusersVAECodec:
    """A diffusers ``AutoencoderKL`` from a local ``save_pretrained`` folder (only JSON and safetensors are read).

    A scorediff autoencoder *run* is loaded by ``scorediff.runs.load_codec``, which reads its last committed
    checkpoint like every run reader and falls back to this function for other folders.
    """
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"autoencoder {str(path)!r}: no config.json (expected a scorediff autoencoder run "
                                "or a diffusers AutoencoderKL folder)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"autoencoder {str(cfg_file)!r} is not valid JSON: {e}") from None
    if cfg.get("_class_name") != "AutoencoderKL":
        raise ValueError(f"{str(path)!r} is neither a scorediff autoencoder run nor a diffusers AutoencoderKL folder "
                         f"(config.json _class_name: {cfg.get('_class_name')!r})")
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise ValueError(f"{str(path)!r} is a diffusers AutoencoderKL: install the extra, "
                         "pip install 'scorediff[diffusers]'") from None
    return DiffusersVAECodec(AutoencoderKL.from_pretrained(str(path), use_safetensors=True).to(device))


@torch.no_grad()
def encode_all(codec: Codec, x: Tensor, batch: int = 256) -> Tensor:
    """Unscaled latents of every example of x, in batches."""
    return torch.cat([codec.encode(x[i:i + batch]) for i in range(0, x.shape[0], batch)])


def measure_scale(latents: Tensor) -> float:
    """LDM's scale factor 1 / std of the latents (over every coordinate), so that s * z has unit variance."""
    std = float(latents.double().std())
    if not std > 0:
        raise ValueError("the latents have zero variance; cannot measure a scale factor")
    return 1.0 / std


@dataclass
class LatentInfo:
    """What a latent run records (in its data info under "latent"): enough to decode its samples."""

    source: str  # the autoencoder folder
    scale: float  # s: the model's data are s * E(x)
    image_shape: list[int]  # the decoded data's shape (C, H, W)
    image_kind: str  # the decoded data's kind ("images")

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "scale": self.scale, "image_shape": list(self.image_shape),
                "image_kind": self.image_kind}


class LatentDataset(torch.utils.data.Dataset):
    """The scaled latents s * E(x) of a data set (computed once, as float32), with the same labels.

    ``scale``: a float, "measure" (1 / std of the latents: unit variance), or "config" (a diffusers VAE's
    ``scaling_factor``). ``info`` is the base data's info with the latent shape, kind "latents" and a
    ``latent`` entry (``LatentInfo``).
    """

    def __init__(self, base: Any, codec: Codec, source: str, scale: float | str = "measure", batch: int = 256):
        base_info = base.info.to_dict() if hasattr(base.info, "to_dict") else dict(base.info)
        shape = tuple(base_info["shape"])
        if len(shape) != 3:
            raise ValueError(f"latent diffusion needs image data (C, H, W), got data of shape {shape}")
        latent_shape = codec.latent_shape(shape)
        xs, ys = zip(*(base[i] for i in range(len(base))))
        x = torch.stack([torch.as_tensor(v) for v in xs]).float()
        z = encode_all(codec, x, batch).float()
        if isinstance(scale, str):
            if scale == "measure":
                scale = measure_scale(z)
            elif scale == "config" and hasattr(codec, "scaling_factor"):
                scale = codec.scaling_factor
            else:
                raise ValueError(f"latent scale {scale!r} unknown; a number, 'measure', or 'config' (diffusers VAE)")
        self.scale = float(scale)
        self.z = z * self.scale
        self.y = torch.as_tensor(ys, dtype=torch.long)
        self.codec = codec
        self.latent = LatentInfo(str(source), self.scale, list(shape), base_info.get("kind", "images"))
        self.info = {**base_info, "shape": list(latent_shape), "kind": "latents", "latent": self.latent.to_dict()}
        if z.shape[1:] != torch.Size(latent_shape):
            raise ValueError(f"autoencoder gave latents of shape {tuple(z.shape[1:])}, expected {latent_shape}")

    def __len__(self) -> int:
        return self.z.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.z[i], int(self.y[i])

    def decode(self, z: Tensor) -> Tensor:
        return decode(self.codec, z, self.scale)


def decode(codec: Codec, z: Tensor, scale: float, batch: int = 256) -> Tensor:
    """Data from scaled latents: D(z / s), in batches."""
    return torch.cat([codec.decode(z[i:i + batch] / scale) for i in range(0, z.shape[0], batch)])

