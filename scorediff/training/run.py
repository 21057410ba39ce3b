"""Loading a finished (or running) run folder for sampling, likelihood and evaluation."""

from __future__ import annotations

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

    A reader: it never modifies the folder (no recovery of an interrupted save, no lock), so it may run
    while a trainer writes the folder; it reads the last committed checkpoint (``checkpoint.read_committed``)
    and takes the step from the weights file itself, so weights and step always belong together. Only JSON
    and safetensors are read; nothing is unpickled. The data set is not needed.
    """
    from .components import build_net, build_process_param
    from .ddp import pick_device

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {str(path)!r} does not exist")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{str(path)!r} is not a run folder (no config.json)")
    device = pick_device(device)
    name = "ema.safetensors" if ema else "model.safetensors"
    try:
        data = ckpt.read_committed(path, name)
    except FileNotFoundError:
        raise FileNotFoundError(f"run {str(path)!r} has no checkpoint yet ({name} missing)") from None
    state, meta = ckpt.parse_tensors(data, path / name)
    cfg = config_mod.resolve(ckpt.read_json(path / "config.json"))
    try:
        info = ckpt.read_json(path / "info.json")["data"]
    except (KeyError, TypeError):
        raise ValueError(f"{str(path / 'info.json')!r} has no 'data' entry") from None
    net = build_net(cfg, info)
    ckpt.load_state(net, state, path / name)
    process, param = build_process_param(cfg)
    try:
        step = int(meta.get("step", 0))
    except ValueError:
        raise ValueError(f"{str(path / name)!r}: metadata step {meta.get('step')!r} is not an integer") from None
    denoiser = NetDenoiser(net.to(device), process, param).eval().requires_grad_(False)
    return Run(denoiser, process, cfg, info, path, step, ema)
