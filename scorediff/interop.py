"""diffusers interoperability: drive a diffusers U-Net with every scorediff sampler, guidance and likelihood.

``from_diffusers(model_or_folder, scheduler_or_config) -> (denoiser, process)`` reads the scheduler's
*training* setup and maps it onto scorediff's process and parameterization:

- DDPM-family schedulers (DDPM, DDIM, Euler, DPM-Solver, UniPC, PNDM, ...: anything with ``betas``):
  the process is ``vp-discrete`` (Ho et al. 2020) with the exact float64 betas of ``beta_schedule``
  ("linear", "scaled_linear", "squaredcos_cap_v2", or ``trained_betas``). diffusers' integer timestep
  k in 0..T-1 is our time t = (k + 1) / T, so the network is fed k = t T - 1 (DESIGN.md's "step i is
  t = i / T" with i = k + 1). ``prediction_type`` "epsilon" / "v_prediction" / "sample" is our
  parameterization "eps" / "v" / "x0" (Salimans & Ho 2022 for v).
- EDM schedulers (``EDMEulerScheduler``, ``EDMDPMSolverMultistepScheduler``; Karras et al. 2022):
  the process is ``edm`` (alpha = 1, sigma = t) with the scheduler's sigma_min / sigma_max, and the
  parameterization is EDM's preconditioning with its sigma_data: the network sees c_in x and
  c_noise = log(sigma) / 4 and x0_hat = c_skip x + c_out F (Table 1). For "v_prediction" diffusers
  uses c_out with the opposite sign; the adapter negates F so that the same formula holds.

Sampling-side options of the scheduler (``timestep_spacing``, ``use_karras_sigmas``) are not part of
the model; ``sampling_schedule(config)`` names the scorediff time grid that matches them. Thresholding
and ``clip_sample`` are not carried over (they change the sampler, not the model).

The denoiser is a ``parameterizations.NetDenoiser`` around a small adapter (``DiffusersNet``) that calls
the diffusers model and returns ``.sample``; conditioning keywords (``encoder_hidden_states`` for
``UNet2DConditionModel``, ``class_labels``) pass through ``cond`` unchanged. diffusers is imported
only when this module needs it: install it with ``pip install scorediff[diffusers]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import parameterizations
from .parameterizations import NetDenoiser
from .processes import EDM, Process, VPDiscrete
from .processes.vp import cosine_betas, scaled_linear_betas

PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
MODEL_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
# diffusers' timesteps are integers; a time computed in float32 lands within ~1e-4 of one
_SNAP = 1e-3


def _diffusers():
    try:
        import diffusers
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("scorediff.interop needs diffusers: pip install 'scorediff[diffusers]'") from e
    return diffusers


class DiffusersNet(nn.Module):
    """``net(x, noise_input, **cond)`` over a diffusers model ``model(x, timestep, **cond).sample``.

    ``steps`` T > 0: a DDPM-family model; the noise input is scorediff's "t1000" (1000 t) and the model
    gets k = t T - 1, snapped to the nearest integer when within 1e-3 of it (float32 rounding of t).
    ``steps`` = 0: an EDM model; the noise input (log sigma / 4) is passed as is.
    ``sign`` = -1 negates the output (diffusers' EDM v_prediction). A model with a learned variance
    (twice the input channels out) returns its first half, the mean prediction.
    """

    def __init__(self, model: nn.Module, steps: int = 0, sign: float = 1.0):
        super().__init__()
        self.model, self.steps, self.sign = model, int(steps), float(sign)

    def timestep(self, noise_input: Tensor) -> Tensor:
        if not self.steps:
            return noise_input
        k = noise_input.double() * (self.steps / 1000.0) - 1
        near = torch.round(k)
        return torch.where((k - near).abs() < _SNAP, near, k)

    def forward(self, x: Tensor, noise_input: Tensor, **cond) -> Tensor:
        p = next(self.model.parameters())
        k = self.timestep(noise_input).to(device=p.device, dtype=p.dtype)
        out = self.model(x.to(p.dtype), k, **cond, return_dict=False)[0]
        if out.shape[1] == 2 * x.shape[1]:  # learned variance (Nichol & Dhariwal 2021): keep the mean part
            out = out[:, : x.shape[1]]
        return (self.sign * out).to(x.dtype)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON: {e}") from None


def scheduler_config(scheduler_or_config: Any) -> dict:
    """The scheduler's config as a dict, from a scheduler object, a dict, a ``scheduler_config.json`` file or
    a folder holding one (a pipeline folder's ``scheduler/`` is looked into)."""
    if hasattr(scheduler_or_config, "config"):
        return dict(scheduler_or_config.config)
    if isinstance(scheduler_or_config, dict):
        return dict(scheduler_or_config)
    if isinstance(scheduler_or_config, (str, Path)):
        path = Path(scheduler_or_config)
        for candidate in (path, path / "scheduler_config.json", path / "scheduler" / "scheduler_config.json"):
            if candidate.is_file():
                return _read_json(candidate)
        raise FileNotFoundError(f"no scheduler config at {str(path)!r} (expected scheduler_config.json)")
    raise ValueError(f"scheduler_or_config: expected a diffusers scheduler, a dict or a path, got {type(scheduler_or_config).__name__}")


def _betas(cfg: dict) -> Tensor:
    """The training betas in float64, computed from the config as diffusers does (not read from its float32)."""
    T = int(cfg.get("num_train_timesteps", 1000))
    if cfg.get("trained_betas") is not None:
        betas = torch.as_tensor(cfg["trained_betas"], dtype=torch.float64).flatten()
        if len(betas) != T:
            raise ValueError(f"scheduler trained_betas has {len(betas)} entries but num_train_timesteps is {T}")
        return betas
    kind = cfg.get("beta_schedule", "linear")
    start, end = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    if kind == "linear":
        return torch.linspace(start, end, T, dtype=torch.float64)
    if kind == "scaled_linear":
        return scaled_linear_betas(T, start, end, rescale=False)
    if kind == "squaredcos_cap_v2":
        return cosine_betas(T)
    raise ValueError(
        f"scheduler beta_schedule {kind!r} is not mapped; one of: linear, scaled_linear, squaredcos_cap_v2 "
        "(or give trained_betas)"
    )


def process_from_scheduler(scheduler_or_config: Any) -> tuple[Process, parameterizations.Parameterization, int, float]:
    """(process, parameterization, T, output sign) for a diffusers scheduler's training setup; T = 0 for EDM."""
    cfg = scheduler_config(scheduler_or_config)
    pred = cfg.get("prediction_type", "epsilon")
    if pred not in PREDICTION_TYPES:
        raise ValueError(f"scheduler prediction_type {pred!r} is not mapped; one of: {', '.join(PREDICTION_TYPES)}")
    if "sigma_data" in cfg:  # EDM schedulers
        if pred == "sample":
            raise ValueError("EDM scheduler prediction_type 'sample' is not mapped; one of: epsilon, v_prediction")
        process = EDM(float(cfg["sigma_min"]), float(cfg["sigma_max"]), float(cfg["sigma_data"]))
        param = parameterizations.make("edm", sigma_data=float(cfg["sigma_data"]))
        return process, param, 0, -1.0 if pred == "v_prediction" else 1.0
    if cfg.get("rescale_betas_zero_snr"):
        raise ValueError(
            "scheduler rescale_betas_zero_snr=True gives alpha_bar_T = 0 (beta_T = 1), which a vp-discrete process "
            "cannot hold (every beta must lie in (0, 1))"
        )
    T = int(cfg.get("num_train_timesteps", 1000))
    kind = cfg.get("beta_schedule", "linear")
    if cfg.get("trained_betas") is None and kind == "squaredcos_cap_v2":
        process = VPDiscrete(steps=T, schedule="cosine")
    elif cfg.get("trained_betas") is None and kind in ("linear", "scaled_linear") and T == 1000:
        process = VPDiscrete(steps=T, schedule=kind, beta_start=float(cfg.get("beta_start", 1e-4)),
                             beta_end=float(cfg.get("beta_end", 0.02)))
    else:
        process = VPDiscrete(betas=_betas(cfg))
    return process, parameterizations.make(PREDICTION_TYPES[pred]), process.steps, 1.0


def sampling_schedule(scheduler_or_config: Any) -> str:
    """The scorediff grid (``scorediff.schedules``) that matches the scheduler's sampling-time options:
    "karras" for ``use_karras_sigmas`` or an EDM scheduler, else its ``timestep_spacing``
    ("leading", "trailing", "linspace")."""
    cfg = scheduler_config(scheduler_or_config)
    if cfg.get("use_karras_sigmas") or cfg.get("sigma_schedule") == "karras":
        return "karras"
    return cfg.get("timestep_spacing", "leading")


def load_model(folder: str | Path, torch_dtype: torch.dtype | None = None) -> nn.Module:
    """A diffusers model saved with ``save_pretrained`` (a model folder, or a pipeline folder with ``unet/``)."""
    path = Path(folder)
    if (path / "unet" / "config.json").is_file():
        path = path / "unet"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{str(folder)!r} holds no diffusers model (no config.json, no unet/config.json)")
    name = _read_json(path / "config.json").get("_class_name")
    if name not in MODEL_CLASSES:
        raise ValueError(f"{str(path / 'config.json')!r}: model class {name!r} is not mapped; one of: {', '.join(MODEL_CLASSES)}")
    cls = getattr(_diffusers(), name)
    kw = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    return cls.from_pretrained(str(path), **kw)


def from_diffusers(
    model_or_folder: nn.Module | str | Path,
    scheduler_or_config: Any = None,
    *,
    torch_dtype: torch.dtype | None = None,
) -> tuple[NetDenoiser, Process]:
    """A diffusers model as a scorediff Denoiser, with the process it was trained on.

    Args:
        model_or_folder: a ``UNet2DModel`` / ``UNet2DConditionModel``, or a local ``save_pretrained`` folder
            (the model's, or a pipeline's with ``unet/`` and ``scheduler/``).
        scheduler_or_config: the scheduler (any diffusers scheduler, its config dict, or a folder / JSON
            file); default: the ``scheduler/`` folder next to a pipeline's ``unet/``.
        torch_dtype: load the folder's weights in this dtype (default: as saved).

    Returns ``(denoiser, process)``: ``denoiser(x, t, **cond) -> x0_hat`` in eval mode, ready for
    ``scorediff.sample``, guidance and ``scorediff.likelihood``; ``cond`` reaches the model's forward
    (``encoder_hidden_states=...``, ``class_labels=...``). ``sampling_schedule(scheduler)`` names the grid
    that reproduces the scheduler's own timesteps.
    """
    if isinstance(model_or_folder, (str, Path)):
        if scheduler_or_config is None:
            scheduler_or_config = Path(model_or_folder)
        model = load_model(model_or_folder, torch_dtype)
    elif isinstance(model_or_folder, nn.Module):
        model = model_or_folder
    else:
        raise ValueError(f"model_or_folder: expected a diffusers model or a folder, got {type(model_or_folder).__name__}")
    if scheduler_or_config is None:
        raise ValueError("from_diffusers: a model object needs its scheduler (or the scheduler's config) as well")
    process, param, steps, sign = process_from_scheduler(scheduler_or_config)
    denoiser = NetDenoiser(DiffusersNet(model, steps, sign), process, param)
    return denoiser.eval(), process


__all__ = [
    "DiffusersNet", "MODEL_CLASSES", "PREDICTION_TYPES", "from_diffusers", "load_model",
    "process_from_scheduler", "sampling_schedule", "scheduler_config",
]
