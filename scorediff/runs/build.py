"""Building a run's components from its config, once: data, network, process, parameterization, loss,
and the typed settings the loop reads (so the loop never indexes the nested config dict).

Every bad name or option raises ``ValueError`` here, before any training step or any write to the run
folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import cascade, data, few_step, latent, losses, nets, parameterizations, processes, text_encoders
from ..distributed import pick_device
from ..masking import MaskedConditionLoss
from ..samplers import SAMPLERS, options_of
from ..utils import check_options
from . import checkpoint as ckpt
from . import config as config_mod
from . import tokens
from .components import Components, info_dict

# -- typed settings ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimSettings:
    """AdamW with a linear warm-up (DDPM, Ho et al. 2020, Appendix B) and global gradient-norm clipping."""

    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    warmup_steps: int
    grad_clip: float  # max global gradient norm; inf: no clipping
    batch_size: int  # global batch (split over DDP ranks)
    grad_accum: int  # micro-batches per optimizer step
    steps: int  # optimizer steps in total

    def lr_at(self, step: int) -> float:
        """Linear warm-up from lr / warmup_steps to lr over the first warmup_steps steps, then constant."""
        w = self.warmup_steps
        return self.lr * min(1.0, (step + 1) / w) if w > 0 else self.lr


@dataclass(frozen=True)
class SampleSettings:
    sampler: str
    steps: int
    num: int
    every: int  # optimizer steps between sample grids; 0: only at the end
    seed: int
    options: dict


@dataclass(frozen=True)
class Settings:
    """Everything the loop reads from a resolved config, typed once."""

    seed: int
    precision: str  # "fp32" | "bf16" | "fp16"
    threads: int | None
    class_conditional: bool
    label_dropout: float
    hflip: bool
    optim: OptimSettings
    ema_decay: float | None
    ema_half_life_steps: float | None
    ema_rampup_ratio: float | None  # EMA warm-up: half-life capped at this fraction of the steps so far (EDM)
    sample: SampleSettings
    log_every: int
    progress: bool
    tensorboard: bool
    ckpt_every: int
    eval_every: int  # optimizer steps between evaluations (scorediff.training.evaluation); 0: none

    @classmethod
    def from_config(cls, cfg: dict) -> Settings:
        o, s = cfg["optim"], cfg["sample"]
        optim = OptimSettings(
            lr=float(o["lr"]), betas=(float(o["betas"][0]), float(o["betas"][1])), eps=float(o["eps"]),
            weight_decay=float(o["weight_decay"]), warmup_steps=int(o["warmup_steps"]),
            grad_clip=float(o["grad_clip"] or float("inf")), batch_size=int(o["batch_size"]),
            grad_accum=int(o["grad_accum"]), steps=int(o["steps"]),
        )
        sample = SampleSettings(sampler=s["sampler"], steps=int(s["steps"]), num=int(s["num"]), every=int(s["every"]),
                                seed=int(s["seed"]), options=dict(s["options"]))
        return cls(
            seed=int(cfg["seed"]), precision=cfg["precision"], threads=cfg["threads"],
            class_conditional=bool(cfg["net"]["class_conditional"]), label_dropout=float(cfg["net"]["label_dropout"]),
            hflip=bool(cfg["data"]["hflip"]), optim=optim, ema_decay=cfg["ema"]["decay"],
            ema_half_life_steps=cfg["ema"]["half_life_steps"], ema_rampup_ratio=cfg["ema"]["rampup_ratio"],
            sample=sample, log_every=int(cfg["log"]["every"]),
            progress=bool(cfg["log"]["progress"]), tensorboard=bool(cfg["log"]["tensorboard"]),
            ckpt_every=int(cfg["ckpt"]["every"]), eval_every=int(cfg["eval"]["every"]),
        )


# -- components -----------------------------------------------------------------------------------------------


def build_net(cfg: dict, info: dict) -> nn.Module:
    """The network of a config (``net.preset`` or ``net.config`` with ``net.overrides``)."""
    if tokens.is_token_config(cfg):  # a token transformer (discrete diffusion or its autoregressive baseline)
        return tokens.build_net(cfg, info)
    ncfg = cfg["net"]
    spec = ncfg["config"] if ncfg["config"] is not None else ncfg["preset"]
    overrides = dict(ncfg["overrides"])
    base = spec if isinstance(spec, dict) else nets.PRESETS.get(spec, {})
    arch = overrides.get("type", base.get("type"))
    if arch in nets.ARCHITECTURES:
        defaults = {**nets.default_config(arch), **base}
        for key, value in overrides.items():
            expected = _expected_type(value, defaults.get(key))
            if expected:
                raise ValueError(f"net.overrides.{key}={value!r} must be {expected} (the {arch} default is "
                                 f"{defaults[key]!r})")
    if ncfg["class_conditional"]:
        num_classes = info.get("num_classes") or 0
        if num_classes < 1:
            raise ValueError(f"net.class_conditional is set but data {cfg['data']['name']!r} has no classes")
        overrides.setdefault("num_classes", num_classes)
    # prompts: cross-attention of the encoder's width, the built-in encoder inside
    dim = text_encoders.context_dim(cfg["text"])
    if dim:
        overrides.setdefault("context_dim", dim)
    if (cfg.get("conditioning") or {}).get("task"):  # CSDI-style: the network also sees the known entries
        base = {**(spec if isinstance(spec, dict) else nets.PRESETS.get(spec) or nets.make(spec).config), **overrides}
        net = nets.make({"type": "masked", "base": base, "fill": cfg["conditioning"].get("fill", "zeros")},
                        shape=info["shape"])
    else:
        shape = processes.make(cfg["process"]["name"], **cfg["process"]["options"]).state_shape(info["shape"])
        net = nets.make(spec, shape=shape, **overrides)  # cld: the network sees the phase state (x, v)
    return text_encoders.wrap_net(net, cfg["text"])


def build_process_param(cfg: dict) -> tuple[processes.Process, parameterizations.Parameterization]:
    process = processes.make(cfg["process"]["name"], **cfg["process"]["options"])
    param = parameterizations.make(cfg["parameterization"]["name"], **cfg["parameterization"]["options"])
    return process, parameterizations.for_process(param, process)


def read_net(path: str | Path, ema: bool = True) -> tuple[nn.Module, dict, dict, int]:
    """The network of run folder ``path`` with its EMA (default) or raw weights: (net, config, data info, step).

    A reader: it never modifies the folder (no recovery of an interrupted save, no lock), so it may run while a
    trainer writes the folder; it reads the last committed checkpoint (``checkpoint.read_committed``) and takes
    the step from the weights file itself, so weights and step always belong together. Only JSON and safetensors
    are read; nothing is unpickled. The data set is not needed.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {str(path)!r} does not exist")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{str(path)!r} is not a run folder (no config.json)")
    name = "ema.safetensors" if ema else "model.safetensors"
    try:
        data_ = ckpt.read_committed(path, name)
    except FileNotFoundError:
        raise FileNotFoundError(f"run {str(path)!r} has no checkpoint yet ({name} missing)") from None
    state, meta = ckpt.parse_tensors(data_, path / name)
    cfg = config_mod.resolve(ckpt.read_json(path / "config.json"))
    try:
        info = ckpt.read_json(path / "info.json")["data"]
    except (KeyError, TypeError):
        raise ValueError(f"{str(path / 'info.json')!r} has no 'data' entry") from None
    net = build_net(cfg, info)
    ckpt.load_state(net, state, path / name)
    try:
        step = int(meta.get("step", 0))
    except ValueError:
        raise ValueError(f"{str(path / name)!r}: metadata step {meta.get('step')!r} is not an integer") from None
    return net, cfg, info, step


def load_codec(path: str | Path, device: str | torch.device = "cpu") -> latent.Codec:
    """The autoencoder of a latent diffusion run (``autoencoder.path``): a scorediff autoencoder run folder (read
    like every run: the last committed checkpoint, EMA weights, nothing modified) or a diffusers ``AutoencoderKL``
    folder (``scorediff.latent.load_diffusers_vae``)."""
    path = Path(path)
    if (path / "info.json").is_file():
        net, _, _, _ = read_net(path)
        if not isinstance(net, nets.Autoencoder):
            raise ValueError(f"autoencoder {str(path)!r} is a run of a {type(net).__name__}, not an autoencoder")
        return latent.AutoencoderCodec(net.to(pick_device(device)).eval().requires_grad_(False))
    return latent.load_diffusers_vae(path, device)


def check_sampler_options(name: str, options: dict) -> None:
    """Fail now, with the option named, on an unknown sampler, an unknown option, or a value whose type does
    not match the option's default (a string where a number belongs would otherwise fail deep in a step)."""
    allowed = options_of(name)  # raises for an unknown sampler
    check_options(f"sampler '{name}'", options, {*allowed, "schedule", "schedule_options", "ending"})
    for key, value in options.items():
        expected = _expected_type(value, "" if key == "schedule" else allowed.get(key))
        if expected:
            raise ValueError(f"sampler '{name}': option {key}={value!r} must be {expected} "
                             f"(default {allowed.get(key)!r})")


def _expected_type(value: Any, default: Any) -> str | None:
    """What ``value`` should be, judged by the type of the option's ``default``; None if it fits (or no rule)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if number and float(value).is_integer() else "an integer"
    if isinstance(default, float):
        return None if number else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    if isinstance(default, (list, tuple)):
        return None if isinstance(value, (list, tuple)) else "a list"
    return None


def check_sampler(cfg: dict) -> None:
    """Fail now, not at the first sample grid hours later, on a bad sampler name or option."""
    check_sampler_options(cfg["sample"]["sampler"], cfg["sample"]["options"])
    _runs_on(cfg["sample"]["sampler"], processes.make(cfg["process"]["name"], **cfg["process"]["options"]))


def _runs_on(sampler: str, process: processes.Process) -> None:
    if not SAMPLERS[sampler].info.runs_on(process):
        ok = ", ".join(n for n, f in SAMPLERS.items() if f.info.runs_on(process))
        raise ValueError(f"sample.sampler '{sampler}' does not run on process '{process.name}'; one of: {ok}")


def build(cfg: dict) -> Components:
    """Build every component of a config; any bad name or option raises ValueError before training.

    Two config sections change what is trained without a second loop: ``autoencoder.path`` (latent diffusion:
    the data become the scaled latents of that frozen autoencoder, ``scorediff.latent.LatentDataset``) and
    ``cascade.factor`` (a super-resolution stage: the loss adds the augmented low-resolution conditioning,
    ``scorediff.cascade.SuperResolutionLoss``). An autoencoder network trains with ``loss.name = "autoencoder"``.
    """
    if tokens.is_token_config(cfg):  # discrete diffusion or its autoregressive baseline on token data
        return tokens.build(cfg)
    process, param = build_process_param(cfg)
    check_sampler(cfg)
    try:
        dataset = data.make(cfg["data"]["name"], **cfg["data"]["options"])
    except TypeError as e:  # a required option missing, e.g. a folder's path
        raise ValueError(f"data {cfg['data']['name']!r}: {e}; set it with --set data.options.KEY=VALUE") from None
    ae = cfg["autoencoder"]
    if ae["path"] is not None:
        source = str(Path(ae["path"]).resolve())
        dataset = latent.LatentDataset(dataset, load_codec(source), source=source, scale=ae["scale"])
    info = info_dict(dataset.info)
    if cfg["text"]["encoder"] is not None and not hasattr(dataset, "prompts"):
        raise ValueError(f"text.encoder is set but data {cfg['data']['name']!r} has no captions (use digits-text or "
                         "folder-captions)")
    net = build_net(cfg, info)
    task = "autoencoder" if isinstance(net, nets.Autoencoder) else "diffusion"
    if cfg["loss"]["name"] == "autoencoder":
        if task != "autoencoder":
            raise ValueError("loss 'autoencoder' trains an autoencoder network (net.preset autoencoder-f2, "
                             f"autoencoder-f4 or a config of type 'autoencoder'), not a {type(net).__name__}")
        loss = latent.AutoencoderObjective(**cfg["loss"]["options"])
    elif task == "autoencoder":
        raise ValueError("an autoencoder network trains with loss.name = 'autoencoder' "
                         f"(got {cfg['loss']['name']!r})")
    elif cfg["loss"]["name"] in few_step.OBJECTIVES:  # a few-step objective (distillation, consistency training)
        loss = few_step.make(cfg["loss"]["name"], process, param, int(cfg["optim"]["steps"]), **cfg["loss"]["options"])
    else:
        name = cfg["loss"]["name"]
        name = "hsm" if name == "dsm" and getattr(process, "phase_space", False) else name  # cld: DSM in phase space
        loss = losses.make(name, process, param, **cfg["loss"]["options"])
    c = cfg.get("conditioning") or {}
    if c.get("task"):
        loss = MaskedConditionLoss(loss, c["task"], c["p_uncond"], c["context"], c["known"])
    factor = int(cfg["cascade"]["factor"])
    if factor:
        if not isinstance(net, nets.SuperResolution) or net.factor != factor:
            raise ValueError(f"cascade.factor = {factor} needs a super_resolution network of that factor (e.g. "
                             f"net.preset sr-x2), got {type(net).__name__} {getattr(net, 'factor', '')}".rstrip())
        loss = cascade.SuperResolutionLoss(loss, factor, cfg["cascade"]["aug_max"])
    elif isinstance(net, nets.SuperResolution):
        raise ValueError("a super_resolution network is a cascade stage: set cascade.factor (e.g. 2)")
    return Components(dataset, info, net, process, param, loss, task, factor)
