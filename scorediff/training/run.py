"""Loading a finished (or running) run folder for sampling, likelihood and evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import parameterizations, processes
from ..parameterizations import NetDenoiser
from . import checkpoint as ckpt
from . import config as config_mod


@dataclass
class Run:
    """A trained model: ``denoiser(x, t, **cond) -> x0_hat`` with its process, config and data description."""

    denoiser: NetDenoiser
    process: processes.Process
    config: dict
    info: dict  # the dataset's info: shape, num_classes, kind ("points" | "images"), ...
    path: Path
    step: int
    ema: bool

    @property
    def net(self) -> nn.Module:
        return self.denoiser.net

    @property
    def param(self) -> parameterizations.Parameterization:
        return self.denoiser.param

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.info["shape"])

    @property
    def kind(self) -> str:
        return self.info.get("kind", "images" if len(self.shape) == 3 else "points")

    @property
    def class_conditional(self) -> bool:
        return bool(self.config["net"]["class_conditional"])


def load_run(path: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> Run:
    """Load the run folder ``path``: its network with the EMA (default) or raw weights, in eval mode.

    Only JSON and safetensors are read; nothing is unpickled. The data set is not needed.
    """
    from .components import build_net, build_process_param

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{str(path)!r} is not a run folder (no config.json)")
    ckpt.recover(path)
    weights = path / ("ema.safetensors" if ema else "model.safetensors")
    if not weights.exists():
        raise FileNotFoundError(f"run {str(path)!r} has no checkpoint yet ({weights.name} missing)")
    cfg = config_mod.resolve(json.loads((path / "config.json").read_text()))
    info = json.loads((path / "info.json").read_text())["data"]
    net = build_net(cfg, info)
    ckpt.load_weights(net, weights)
    process, param = build_process_param(cfg)
    step = json.loads((path / "state.json").read_text())["step"] if (path / "state.json").exists() else 0
    denoiser = NetDenoiser(net.to(device), process, param).eval().requires_grad_(False)
    return Run(denoiser, process, cfg, info, path, int(step), ema)
