"""Loading a finished (or running) run folder for sampling, likelihood and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import latent, parameterizations, processes
from ..distributed import pick_device
from ..nets import Autoencoder
from ..parameterizations import NetDenoiser
from ..text_encoders import from_config
from . import checkpoint as ckpt
from . import fitted, tokens
from .build import build_process_param, load_codec, read_net

EMA_DOMINATED = 0.5  # Run.weights_note warns when the EMA still puts more than this weight on the initial weights


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
    def text_encoder(self):
        """The encoder of a run's prompts (``scorediff.text_encoders``), None for a run without prompts."""
        if getattr(self, "_text", None) is None:
            self._text = from_config(self.config["text"], self.net, next(self.net.parameters()).device)
        return self._text

    @property
    def task(self) -> str:
        """"diffusion", "autoencoder" (a latent diffusion run's autoencoder) or "super_resolution" (a cascade stage)."""
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
        lat = self.info["latent"]
        if getattr(self, "_codec", None) is None:
            self._codec = load_codec(lat["source"], device=z.device)
        return latent.decode(self._codec, z, float(lat["scale"]))

    def fitted_schedule(self, sampler: str, steps: int) -> torch.Tensor | None:
        """The time grid ``scorediff fit-schedule`` fitted for this run, ``sampler`` and ``steps``, or None.

        None unless a valid one exists for exactly this sampler and step count, fitted on this checkpoint (step,
        EMA weights); ``scorediff.runs.fitted.lookup`` also gives the one-line reason. Reads only.
        """
        return fitted.lookup(self, sampler, steps).times

    def ema_average(self) -> tuple[float, float | None]:
        """The EMA average of this checkpoint: (weight of the network's initial weights in it, average age in steps
        or None when unknown).

        Reads the averaging state the trainer saves in state.json (``ema``: steps, init_weight, age); a run saved
        before it existed averaged with a fixed decay, so its initial weight is decay ** step.
        """
        state_path = self.path / "state.json"
        state = ckpt.read_json(state_path) if state_path.exists() else {}
        ema = state.get("ema")
        if ema is None:
            return float(state.get("ema_decay", 0.0)) ** self.step, None
        return float(ema["init_weight"]), float(ema["age"])

    def weights_note(self) -> tuple[str, str | None]:
        """Which weights sampling uses (one line), and a warning when the EMA average is still mostly the initial
        weights (a run much shorter than its EMA half-life), else None."""
        step = self.step
        if not self.ema:
            return f"sampled with the raw weights of step {step}", None
        try:  # only this note needs state.json: a damaged one costs the note, never the samples
            init_weight, age = self.ema_average()
        except (ValueError, TypeError, KeyError, AttributeError):
            return (f"sampled with the EMA weights of step {step} ({str(self.path / 'state.json')!r} is damaged: the "
                    "average's age is unknown)"), None
        age_text = f", average age {age:.0f} steps" if age is not None else ""
        note = f"sampled with the EMA weights of step {step}{age_text}, {100 * init_weight:.3g}% initial weights"
        warning = None
        if init_weight > EMA_DOMINATED:
            warning = (f"the EMA average of step {step} is still {100 * init_weight:.0f}% the network's initial "
                       "random weights (a run much shorter than its EMA half-life, without EMA warm-up): its samples "
                       "will be noise-like. Use --raw for the raw weights, or train longer")
        return note, warning

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
    path = Path(path)
    device = pick_device(device)
    net, cfg, info, step = read_net(path, ema)
    if tokens.is_token_config(cfg):  # discrete diffusion / autoregressive: a TokenRun
        return tokens.token_run(net, cfg, info, path, step, ema, device)
    process, param = build_process_param(cfg)
    denoiser = NetDenoiser(net.to(device), process, param).eval().requires_grad_(False)
    return Run(denoiser, process, cfg, info, path, step, ema)


__all__ = ["Run", "load_codec", "load_run"]
