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

    @property
    def task(self) -> str:
        """"diffusion", "autoencoder" (a latent diffusion run's autoencoder) or "super_resolution" (a cascade stage)."""
        from ..nets import Autoencoder

        if isinstance(self.net, Autoencoder):
            return "autoencoder"
        return "super_resolution" if self.config["cascade"]["factor"] else "diffusion"

    @property
    def latent(self) -> bool:
        """Whether the model lives in an autoencoder's latent space (its samples must be decoded)."""
        return self.kind == "latents"

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """A latent run's samples as data: the autoencoder's decoder at z / scale (identity for other runs)."""
        if not self.latent:
            return z
        from ..latent import decode

        lat = self.info["latent"]
        if getattr(self, "_codec", None) is None:
            self._codec = load_codec(lat["source"], device=z.device)
        return decode(self._codec, z, float(lat["scale"]))

    def fitted_schedule(self, sampler: str, steps: int) -> torch.Tensor | None:
        """The time grid ``scorediff fit-schedule`` fitted for this run, ``sampler`` and ``steps``, or None.

        None unless a valid one exists for exactly this sampler and step count, fitted on this checkpoint (step,
        EMA weights); ``scorediff.training.fitted.lookup`` also gives the one-line reason. Reads only.
        """
        from .fitted import lookup

        return lookup(self, sampler, steps).times

    def require_task(self, task: str, command: str) -> None:
        """One clear line when a command meets a run of another kind (e.g. sampling an autoencoder)."""
        if self.task == task:
            return
        what = {"autoencoder": "an autoencoder (use it as autoencoder.path of a latent diffusion config)",
                "super_resolution": "a super-resolution stage (sample it with `scorediff sample BASE --cascade RUN`)",
                "diffusion": "a diffusion model"}[self.task]
        raise ValueError(f"{command}: run {str(self.path)!r} is {what}")


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
    try:
        step = int(meta.get("step", 0))
    except ValueError:
        raise ValueError(f"{str(path / name)!r}: metadata step {meta.get('step')!r} is not an integer") from None
    from . import tokens

    if tokens.is_token_config(cfg):  # discrete diffusion / autoregressive: a TokenRun
        return tokens.load_token_run(path, cfg, info, state, step, ema, device)
    net = build_net(cfg, info)
    ckpt.load_state(net, state, path / name)
    process, param = build_process_param(cfg)
    denoiser = NetDenoiser(net.to(device), process, param).eval().requires_grad_(False)
    return Run(denoiser, process, cfg, info, path, step, ema)


def load_codec(path: str | Path, device: str | torch.device = "cpu"):
    """The autoencoder of a latent diffusion run: a scorediff autoencoder run folder (read like every run: the
    last committed checkpoint, EMA weights, nothing modified) or a diffusers ``AutoencoderKL`` folder
    (``scorediff.latent.load_codec``)."""
    from ..latent import AutoencoderCodec
    from ..latent import load_codec as load_external

    path = Path(path)
    if (path / "info.json").is_file():
        r = load_run(path, device=device)
        if r.task != "autoencoder":
            raise ValueError(f"autoencoder {str(path)!r} is a run of a {type(r.net).__name__}, not an autoencoder")
        return AutoencoderCodec(r.net)
    return load_external(path, device)
