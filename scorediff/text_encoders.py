"""Text encoders: prompts -> (context (B, L, D), context_mask (B, L)), the ``cond`` of a text-conditioned model.

One small interface (DESIGN.md, "Prompts travel in cond"): ``encode(list[str]) -> (context, mask)`` and
``null() -> (context, mask)`` of batch 1, the unconditional prompt (the empty string) that prompt dropout
trains on and classifier-free guidance's unconditional branch uses; ``dim`` is D.

- ``JointEncoder``: the built-in byte-level Transformer (``nets.text.ByteTextTransformer``) trained together
  with the diffusion model; it lives inside the run's network (``nets.text.TextConditioned``), so the EMA
  model has its own (averaged) encoder: ``JointEncoder(run.net.text)``.
- ``PretrainedEncoder``: a frozen CLIP or T5 text encoder (Radford et al. 2021; Raffel et al. 2020; Imagen,
  Saharia et al. 2022, sec. 2.1, freezes T5) read from a LOCAL folder with the optional ``transformers``
  package (``pip install 'scorediff[text]'``); nothing is downloaded. The folder holds the model's
  ``config.json`` and weights with its tokenizer files, or is a pipeline folder with ``text_encoder/`` and
  ``tokenizer/``. context is the last hidden state, the mask the tokenizer's attention mask.

``from_config(text_cfg, net)`` gives a run's encoder; ``context_dim(text_cfg)`` the width D its network needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .guidance import classifier_free
from .nets.text import ByteTextTransformer, TextConditioned

__all__ = ["ENCODERS", "JointEncoder", "PretrainedEncoder", "TextEncoder", "context_dim", "from_config",
           "prompt_cond", "prompt_guidance", "pretrained_dim"]

ENCODERS = ("bytes", "pretrained")


class TextEncoder(Protocol):
    dim: int

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]: ...

    def null(self) -> tuple[Tensor, Tensor]: ...


class JointEncoder:
    """The built-in encoder of a run (its network's ``.text`` module); gradients flow while training."""

    def __init__(self, module: ByteTextTransformer):
        self.module, self.dim = module, module.width

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        return self.module.encode(list(prompts))

    def null(self) -> tuple[Tensor, Tensor]:
        return self.encode([""])


def _folders(path: Path) -> tuple[Path, Path]:
    """(model folder, tokenizer folder) of a text encoder folder or a pipeline folder."""
    if (path / "text_encoder" / "config.json").is_file():
        return path / "text_encoder", (path / "tokenizer" if (path / "tokenizer").is_dir() else path / "text_encoder")
    if (path / "config.json").is_file():
        return path, path
    raise FileNotFoundError(f"text encoder folder {str(path)!r} holds no config.json (nor text_encoder/config.json)")


def pretrained_dim(path: str | Path) -> int:
    """The hidden width D of a local CLIP / T5 text encoder folder, read from its config.json (no transformers)."""
    model_dir, _ = _folders(Path(path))
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(model_dir / 'config.json')!r} is not valid JSON: {e}") from None
    cfg = cfg.get("text_config", cfg)  # a full CLIPConfig keeps the text tower's settings apart
    for key in ("hidden_size", "d_model"):
        if key in cfg:
            return int(cfg[key])
    raise ValueError(f"{str(model_dir / 'config.json')!r} has neither hidden_size nor d_model")


class PretrainedEncoder:
    """A frozen CLIP / T5 text encoder from a local folder (``transformers``, imported lazily)."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", max_length: int | None = None):
        try:
            import transformers
        except ImportError:
            raise ImportError("a pretrained text encoder needs the transformers package: "
                              "pip install 'scorediff[text]'") from None
        model_dir, tok_dir = _folders(Path(path))
        model_type = json.loads((model_dir / "config.json").read_text()).get("model_type", "")
        cls = {"t5": transformers.T5EncoderModel, "clip_text_model": transformers.CLIPTextModel,
               "clip": transformers.CLIPTextModel}.get(model_type, transformers.AutoModel)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        self.model: nn.Module = cls.from_pretrained(str(model_dir), local_files_only=True).to(device)
        self.model.eval().requires_grad_(False)
        self.dim = pretrained_dim(path)
        # the tokenizer's own limit may be "unlimited" (a huge int): cap it by the model's positions (T5: 512)
        limit = int(getattr(self.model.config, "max_position_embeddings", None) or 512)
        self.max_length = max_length or min(int(getattr(self.tokenizer, "model_max_length", limit)), limit)
        self.device = torch.device(device)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        t = self.tokenizer(list(prompts), padding="longest", truncation=True, max_length=self.max_length,
                           return_tensors="pt").to(self.device)
        out = self.model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).last_hidden_state
        return out, t["attention_mask"].bool()

    def null(self) -> tuple[Tensor, Tensor]:
        return self.encode([""])


def context_dim(text_cfg: dict[str, Any]) -> int:
    """D, the width of the prompt embeddings a run's network takes (0: no prompts)."""
    kind = text_cfg.get("encoder")
    if kind is None:
        return 0
    if kind == "bytes":
        return int(text_cfg.get("options", {}).get("width", 64))
    if kind == "pretrained":
        return pretrained_dim(text_cfg["path"])
    raise ValueError(f"text.encoder {kind!r} unknown; one of: {', '.join(ENCODERS)} (or null)")


def wrap_net(net: nn.Module, text_cfg: dict[str, Any]) -> nn.Module:
    """The network of a run with prompts: with the built-in encoder, ``net`` and a new encoder together."""
    if text_cfg.get("encoder") != "bytes":
        return net
    try:
        return TextConditioned(net, ByteTextTransformer(**text_cfg.get("options", {})))
    except TypeError as e:
        raise ValueError(f"text.options: {e}") from None


def from_config(text_cfg: dict[str, Any], net: nn.Module, device: str | torch.device = "cpu",
                pretrained: TextEncoder | None = None) -> TextEncoder | None:
    """The encoder of a run's prompts for the network ``net`` (its own built-in encoder, or the frozen one,
    loaded once: pass an already loaded one as ``pretrained``); None for a run without prompts."""
    kind = text_cfg.get("encoder")
    if kind is None:
        return None
    if kind == "bytes":
        if not isinstance(net, TextConditioned):
            raise ValueError("text.encoder 'bytes' needs a network built with its encoder (nets.text.TextConditioned)")
        return JointEncoder(net.text)
    return pretrained or PretrainedEncoder(text_cfg["path"], device)


def prompt_cond(encoder: TextEncoder, prompts: list[str]) -> dict[str, Tensor]:
    """``cond`` for a batch of prompts: ``{"context": (B, L, D), "context_mask": (B, L)}``, without gradients."""
    with torch.no_grad():
        context, mask = encoder.encode(list(prompts))
    return {"context": context, "context_mask": mask}


def prompt_guidance(denoiser, encoder: TextEncoder, scale: float, negative_prompt: str | None = None, **options):
    """Classifier-free guidance on prompts (``scorediff.guidance.classifier_free``): the unconditional branch sees
    the null prompt, or ``negative_prompt``'s encoding; options (interval, rescale, threshold) pass through."""

    with torch.no_grad():
        negative = encoder.null() if negative_prompt is None else encoder.encode([negative_prompt])
    return classifier_free(denoiser, scale, negative=negative, **options)
