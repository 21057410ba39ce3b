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
the model; ``sampling_schedule(config)`` gives the scorediff time grid that matches them. Thresholding
and ``clip_sample`` are not carried over (they change the sampler, not the model).

The denoiser is a ``parameterizations.NetDenoiser`` around a small adapter (``DiffusersNet``) that calls
the diffusers model and returns ``.sample``; conditioning keywords (``encoder_hidden_states`` for
``UNet2DConditionModel``, ``class_labels``) pass through ``cond`` unchanged, and scorediff's prompt
``context`` / ``context_mask`` becomes ``encoder_hidden_states`` / ``encoder_attention_mask``, so
``scorediff.guidance.classifier_free`` with ``negative=`` (the null or a negative prompt's embeddings) is
Stable Diffusion's classifier-free guidance. ``text_to_image(folder)`` loads a whole Stable-Diffusion-style
pipeline folder (``unet/``, ``scheduler/``, optional ``vae/`` and ``text_encoder/`` + ``tokenizer/``, the
latter through the optional transformers package) as a ``TextToImage``: prompts in, images out, with any
scorediff sampler and guidance. diffusers is imported
only when this module needs it: install it with ``pip install scorediff[diffusers]``.

The other direction, ``to_diffusers(denoiser, shape)`` / ``save_diffusers(denoiser, shape, folder)``:
scorediff's U-Net (``nets.UNet``) as a ``UNet2DModel`` that computes the same function, with a
``DDPMScheduler`` (vp-discrete, T = 1000) or ``EDMEulerScheduler`` (edm); whatever does not map
exactly is refused with one line naming every mismatch (``_export_problems``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import parameterizations
from .guidance import classifier_free
from .latent import decode as vae_decode
from .latent import load_diffusers_vae
from .nets.unet import Attention, Downsample, ResBlock, Upsample
from .parameterizations import NetDenoiser
from .processes import EDM, Process, VPDiscrete
from .processes.vp import cosine_betas, scaled_linear_betas
from .samplers import sample
from .text_encoders import PretrainedEncoder
from .utils import check_counts

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
    (twice the input channels out) returns its first half, the mean prediction. x is cast to the model's
    dtype and the output back; the noise input arrives in x's dtype, so sample in float32 (float16 cannot
    hold 1000 t to the integer).
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
        # scorediff's prompt (DESIGN.md: context, context_mask) is diffusers' encoder_hidden_states / attention mask
        if "context" in cond:
            cond["encoder_hidden_states"] = cond.pop("context")
        if "context_mask" in cond:
            cond["encoder_attention_mask"] = cond.pop("context_mask")
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
        process = EDM(float(cfg["sigma_min"]), float(cfg["sigma_max"]))
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


def sampling_schedule(scheduler_or_config: Any) -> dict[str, Any]:
    """The scorediff grid matching the scheduler's sampling-time options, as keywords for ``scorediff.sample``:
    ``{"schedule": "karras", "schedule_options": {"denoise_to_zero": True, "rho": ...}}`` for
    ``use_karras_sigmas`` or an EDM scheduler with Karras sigmas (Karras et al. 2022, eq. 5, ending on
    sigma = 0 as diffusers does), ``"logsnr"`` (ending on 0) for exponential (log-uniform) sigmas, else
    ``{"schedule": timestep_spacing}`` ("leading", "trailing", "linspace"; "leading" with the scheduler's
    ``steps_offset``).

    ``scorediff.sample(denoiser, process, shape, sampler="euler", steps=N, **sampling_schedule(scheduler))``
    """
    cfg = scheduler_config(scheduler_or_config)
    if cfg.get("use_karras_sigmas") or cfg.get("sigma_schedule") == "karras":
        return {"schedule": "karras", "schedule_options": {"denoise_to_zero": True, "rho": float(cfg.get("rho", 7.0))}}
    if cfg.get("use_exponential_sigmas") or cfg.get("sigma_schedule") == "exponential":
        # sigma log-uniform = uniform in lambda = -log sigma~
        return {"schedule": "logsnr", "schedule_options": {"denoise_to_zero": True}}
    if "sigma_data" in cfg:
        raise ValueError(f"EDM scheduler sigma_schedule {cfg.get('sigma_schedule')!r} is not mapped; one of: karras, exponential")
    spacing = cfg.get("timestep_spacing", "leading")
    if spacing == "leading" and int(cfg.get("steps_offset", 0) or 0):  # Stable Diffusion's schedulers: 1
        return {"schedule": spacing, "schedule_options": {"steps_offset": int(cfg["steps_offset"])}}
    return {"schedule": spacing}


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
    # low_cpu_mem_usage=False: the plain load (the default path wants the optional accelerate package)
    kw: dict[str, Any] = {"low_cpu_mem_usage": False}
    if torch_dtype is not None:
        kw["torch_dtype"] = torch_dtype
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
    (``encoder_hidden_states=...``, ``class_labels=...``). ``sampling_schedule(scheduler)`` gives the grid
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



@dataclass
class TextToImage:
    """A latent text-to-image model (Stable Diffusion's layout, Rombach et al. 2022) driven by scorediff.

    ``denoiser`` / ``process``: the U-Net as a scorediff Denoiser (``from_diffusers``); ``text_encoder``: a
    ``scorediff.text_encoders`` encoder (or None: pass embeddings yourself); ``vae``: the latent codec (or None:
    samples stay latents); ``scale``: the VAE's scaling factor (latents z = scale E(x)); ``latent_shape`` (C, h, w).
    """

    denoiser: NetDenoiser
    process: Process
    latent_shape: tuple[int, int, int]
    text_encoder: Any = None
    vae: Any = None
    scale: float = 1.0
    scheduler: dict | None = None  # the scheduler's config: its grid is ``sampling_schedule(scheduler)``

    @property
    def conditional(self) -> bool:
        """Whether the U-Net takes prompts (a ``UNet2DConditionModel``) or not (a ``UNet2DModel``)."""
        return type(self.denoiser.net.model).__name__ != "UNet2DModel"

    @torch.no_grad()
    def sample(self, prompts: list[str] | tuple[Tensor, Tensor | None] | int | None, *, guidance: float | None = None,
               negative: str | tuple[Tensor, Tensor | None] | None = None, sampler: str = "ddim", steps: int = 50,
               seed: int = 0, start: Tensor | None = None, decode: bool = True, **options: Any) -> Tensor:
        """Images (or latents, ``decode=False`` or no VAE) for ``prompts``: strings (encoded by ``text_encoder``)
        or embeddings (context, mask); for an unconditional U-Net the number of samples (or None: one).
        ``guidance``: classifier-free scale s (None: the conditional model alone);
        ``negative``: the unconditional branch's prompt or embeddings (default: the empty prompt).
        ``start``: the state at the first time (default: prior noise from ``seed``). Options go to
        ``scorediff.sample`` (schedule, ...)."""

        def embed(p):
            if isinstance(p, tuple):
                return p
            if self.text_encoder is None:
                raise ValueError("this model has no text encoder: pass prompt embeddings (context, mask)")
            return self.text_encoder.encode([p] if isinstance(p, str) else list(p))

        if prompts is None or isinstance(prompts, int):  # an unconditional U-Net (UNet2DModel): a batch size
            if self.conditional:
                raise ValueError("this U-Net is text-conditioned (UNet2DConditionModel): give prompts")
            if guidance is not None or negative is not None:
                raise ValueError("guidance and negative prompts need a text-conditioned U-Net (UNet2DConditionModel)")
            denoiser, cond = self.denoiser, {}
            shape = start if start is not None else (int(prompts or 1), *self.latent_shape)
        else:
            if not self.conditional:
                raise ValueError("this U-Net is unconditional (UNet2DModel): it takes no prompts")
            context, mask = embed(prompts)
            denoiser = self.denoiser
            if guidance is not None:
                denoiser = classifier_free(self.denoiser, guidance,
                                           negative=embed("" if negative is None else negative))
            cond = {"context": context} if mask is None else {"context": context, "context_mask": mask}
            shape = start if start is not None else (context.shape[0], *self.latent_shape)
        z = sample(denoiser, self.process, shape, sampler=sampler, steps=steps, seed=seed, cond=cond, **options)
        return z if not decode or self.vae is None else self.decode(z)

    def decode(self, z: Tensor) -> Tensor:
        """Images from latents: the VAE's decoder at z / scale."""
        return vae_decode(self.vae, z, self.scale)


def text_to_image(folder: str | Path, scheduler_or_config: Any = None, *, text_encoder: str | Path | None = None,
                  vae: str | Path | None = None, device: str | torch.device = "cpu") -> TextToImage:
    """A Stable-Diffusion-style pipeline folder as a ``TextToImage``: ``unet/`` (a ``UNet2DConditionModel``),
    ``scheduler/``, and when present (or named) ``vae/`` (``AutoencoderKL``) and ``text_encoder/`` with
    ``tokenizer/`` (a frozen CLIP / T5 encoder: needs the transformers package). Only local files are read."""

    root = Path(folder)
    denoiser, process = from_diffusers(root, scheduler_or_config)
    model = denoiser.net.model
    cfg = model.config
    vae_dir = Path(vae) if vae is not None else (root / "vae" if (root / "vae" / "config.json").is_file() else None)
    codec, scale = None, 1.0
    if vae_dir is not None:
        codec = load_diffusers_vae(vae_dir, device)
        scale = codec.scaling_factor
    text_dir = text_encoder if text_encoder is not None else (root if (root / "text_encoder").is_dir() else None)
    encoder = PretrainedEncoder(text_dir, device) if text_dir is not None else None
    size = cfg.sample_size if isinstance(cfg.sample_size, (list, tuple)) else (cfg.sample_size, cfg.sample_size)
    return TextToImage(denoiser.to(device), process, (int(cfg.in_channels), *map(int, size)), encoder, codec, scale,
                       scheduler_config(scheduler_or_config if scheduler_or_config is not None else root))


# -- `scorediff sample FOLDER`: a diffusers pipeline folder sampled like a run ----------------------------------

# the scorediff sampler that does what a diffusers scheduler does: the default of `scorediff sample FOLDER`
SCHEDULER_SAMPLERS = {
    "DDIMScheduler": "ddim", "DDPMScheduler": "ddpm", "PNDMScheduler": "pndm", "EulerDiscreteScheduler": "euler",
    "HeunDiscreteScheduler": "heun", "DPMSolverMultistepScheduler": "dpm_solver_pp_2m",
    "UniPCMultistepScheduler": "unipc_bh2", "EDMEulerScheduler": "euler",
    "EDMDPMSolverMultistepScheduler": "dpm_solver_pp_2m",
}
DEFAULT_STEPS = 50  # diffusers' pipelines' num_inference_steps


def is_pipeline_folder(path: str | Path) -> bool:
    """Whether ``path`` looks like a diffusers pipeline folder (``model_index.json`` or ``unet/``)."""
    path = Path(path)
    return (path / "model_index.json").is_file() or (path / "unet").is_dir()


def pipeline_problems(path: str | Path) -> list[str]:
    """What a diffusers pipeline folder lacks for ``load_pipeline`` (empty if nothing): its U-Net, its scheduler,
    and a tokenizer beside a text encoder. Read from the folder's files alone (no diffusers import)."""
    path = Path(path)
    problems = []
    if not (path / "unet" / "config.json").is_file():
        problems.append("no unet/config.json (the U-Net)")
    if not (path / "scheduler" / "scheduler_config.json").is_file():
        problems.append("no scheduler/scheduler_config.json (the training noise schedule)")
    if (path / "text_encoder").is_dir() and not (path / "tokenizer").is_dir():
        problems.append("text_encoder/ without tokenizer/")
    return problems


def load_pipeline(folder: str | Path, device: str | torch.device = "cpu") -> TextToImage:
    """A local diffusers pipeline folder for sampling: a Stable-Diffusion-style one (``unet/`` a
    ``UNet2DConditionModel``, ``scheduler/``, ``text_encoder/`` + ``tokenizer/``, ``vae/``) or an unconditional
    one (``unet/`` a ``UNet2DModel`` and ``scheduler/``, as ``DDPMPipeline`` saves), checked first: one line naming
    the folder and every missing part."""
    problems = pipeline_problems(folder)
    if problems:
        raise ValueError(f"diffusers pipeline folder {str(folder)!r}: {'; '.join(problems)}")
    return text_to_image(folder, device=device)


def default_sampler(pipe: TextToImage) -> str:
    """The scorediff sampler matching the pipeline's scheduler (``SCHEDULER_SAMPLERS``), else "ddim"."""
    return SCHEDULER_SAMPLERS.get((pipe.scheduler or {}).get("_class_name"), "ddim")


@dataclass
class PipelineSamples:
    """What ``generate_pipeline`` returns: images (or latents, without a VAE), the latents, and how."""

    x: Tensor
    latents: Tensor | None
    sampler: str
    steps: int
    prompts: list[str] | None


def generate_pipeline(pipe: TextToImage, num: int, *, prompts: list[str] | None = None,
                      negative_prompt: str | None = None, guidance: float | None = None, sampler: str | None = None,
                      steps: int | None = None, seed: int = 0, batch: int | None = None,
                      options: dict[str, Any] | None = None) -> PipelineSamples:
    """``num`` samples of a pipeline (``load_pipeline``) with any scorediff sampler: the engine of
    ``scorediff sample FOLDER``.

    prompts: cycled over the samples (default: the empty prompt, for a text-conditioned U-Net); guidance: the
    classifier-free scale with the empty prompt or ``negative_prompt`` as the other branch. sampler: default the
    one matching the folder's scheduler (``SCHEDULER_SAMPLERS``, else "ddim"); steps: default 50; the grid is the
    scheduler's own spacing (``sampling_schedule``) unless ``options`` names one. Batch i (``batch`` samples,
    default all) draws from its own generator seeded ``seed + i``, as ``scorediff.generate`` does for runs; a
    DDPM-family model starts, as diffusers' pipelines do, from ``torch.randn`` of that generator (so one batch of
    a seed starts from the latents a diffusers pipeline draws from a generator of that seed).
    """
    check_counts(num, steps, batch)
    sampler = sampler or default_sampler(pipe)
    steps = steps or DEFAULT_STEPS
    opts = dict(options or {})
    if "schedule" not in opts and pipe.scheduler is not None:
        opts.update(sampling_schedule(pipe.scheduler))
    if pipe.conditional:
        if pipe.text_encoder is None:
            raise ValueError("the U-Net is text-conditioned (UNet2DConditionModel) but the folder has no "
                             "text_encoder/ and tokenizer/ to encode prompts")
        prompts = list(prompts or [""])
    elif prompts or negative_prompt is not None or guidance is not None:
        raise ValueError("--prompt, --negative-prompt and --guidance need a text-conditioned U-Net "
                         "(UNet2DConditionModel); this folder's is a UNet2DModel")
    if negative_prompt is not None and guidance is None:
        raise ValueError("--negative-prompt needs --guidance SCALE")
    batch = batch or num
    xs, zs = [], []
    for i, start in enumerate(range(0, num, batch)):
        n = min(batch, num - start)
        what = [prompts[j % len(prompts)] for j in range(start, start + n)] if pipe.conditional else n
        generator = torch.Generator().manual_seed(seed + i)
        x_start = None
        if isinstance(pipe.process, VPDiscrete):  # diffusers' pipelines start from N(0, I) (in VP coordinates) on
            # every grid, where scorediff would start from N(0, sigma(ts[0])^2): the same seed, diffusers' start
            x_start = torch.randn((n, *pipe.latent_shape), generator=generator)
            x_start = x_start.to(next(pipe.denoiser.parameters()).device)  # the state stays float32 (DiffusersNet)
        z = pipe.sample(what, guidance=guidance, negative=negative_prompt, sampler=sampler, steps=steps,
                        start=x_start, generator=generator, decode=False, **opts)
        zs.append(z)
        xs.append(z if pipe.vae is None else pipe.decode(z))
    x, z = torch.cat(xs).cpu(), torch.cat(zs).cpu()
    used = [prompts[j % len(prompts)] for j in range(num)] if pipe.conditional else None
    return PipelineSamples(x, None if pipe.vae is None else z, sampler, steps, used)


# -- the other direction: a scorediff run as a diffusers UNet2DModel + scheduler ------------------------------


def _export_problems(net_cfg: dict, process: Process, param: parameterizations.Parameterization) -> list[str]:
    """What keeps (network, process, parameterization) from mapping exactly onto diffusers; empty if it maps."""
    if net_cfg.get("type") != "unet":
        return [f"network type {net_cfg.get('type')!r} has no diffusers counterpart (only scorediff's 'unet' maps, "
                "onto UNet2DModel)"]
    problems = []
    if int(net_cfg.get("context_dim", 0) or 0):
        problems.append(f"context_dim {net_cfg['context_dim']} (a text-conditioned U-Net: its cross-attention has no "
                        "UNet2DModel counterpart)")
    if isinstance(process, VPDiscrete):
        if param.name not in ("eps", "v", "x0"):
            problems.append(f"parameterization {param.name!r} on vp-discrete (diffusers' prediction types are eps, v, x0)")
        if param.noise_input != "t1000":
            problems.append(f"noise input {param.noise_input!r} (diffusers feeds the integer timestep: needs 't1000')")
        if process.steps != 1000:
            problems.append(f"vp-discrete with {process.steps} steps (the network sees 1000 t = 1000 (k + 1) / T, not "
                            "diffusers' timestep k; only T = 1000 maps)")
    elif isinstance(process, EDM):
        if param.name != "edm" or param.noise_input != "log_sigma":
            problems.append(f"parameterization {param.name!r} with noise input {param.noise_input!r} on edm "
                            "(diffusers' EDM schedulers need EDM preconditioning with log(sigma) / 4)")
    else:
        problems.append(f"process {process.name!r} (diffusers' schedulers are discrete VP (vp-discrete) or EDM (edm))")
    channels = int(net_cfg["channels"])
    widths = [channels * int(m) for m in net_cfg["channel_mult"]]
    if net_cfg.get("embedding") != "sinusoidal":
        problems.append(f"embedding {net_cfg.get('embedding')!r} (diffusers' UNet2DModel maps 'sinusoidal')")
    if float(net_cfg.get("input_scale", 1.0)) != 1.0:
        problems.append(f"input_scale {net_cfg['input_scale']} (UNet2DModel feeds the timestep unscaled)")
    if net_cfg.get("emb_features") not in (None, channels):
        problems.append(f"emb_features {net_cfg['emb_features']} != channels {channels} (UNet2DModel's timestep "
                        "features are block_out_channels[0] wide)")
    groups = int(net_cfg.get("norm_groups", 32))
    if any(w % groups for w in widths):
        problems.append(f"norm_groups {groups} does not divide every width {widths} (scorediff reduces it per layer, "
                        "UNet2DModel's norm_num_groups is one number)")
    if net_cfg.get("skip_rescale"):
        problems.append("skip_rescale=True (diffusers would divide attention outputs by sqrt(2) as well)")
    heads = int(net_cfg.get("num_heads", 1))
    attended = [widths[lv] for lv in net_cfg.get("attention_levels", [])] + ([widths[-1]] if net_cfg.get("mid_attention", True) else [])
    if heads > 1 and len({w // heads for w in attended}) > 1:
        problems.append(f"num_heads {heads} over attention widths {attended} (UNet2DModel has one attention_head_dim)")
    return problems


def _unet2d_config(net_cfg: dict, shape: tuple[int, ...]) -> dict:
    if int(net_cfg.get("dims", 2)) != 2:  # diffusers' UNet2DModel: images only
        raise ValueError(f"only an image U-Net (dims 2) converts to a diffusers UNet2DModel, got dims {net_cfg['dims']}")
    channels = int(net_cfg["channels"])
    levels = len(net_cfg["channel_mult"])
    attn = {int(v) for v in net_cfg.get("attention_levels", [])}
    heads = int(net_cfg.get("num_heads", 1))
    attended = [channels * int(net_cfg["channel_mult"][lv]) for lv in sorted(attn)]
    if net_cfg.get("mid_attention", True):
        attended.append(channels * int(net_cfg["channel_mult"][-1]))
    cfg = {
        "sample_size": list(shape[1:]) if shape[1] != shape[2] else shape[1],
        "in_channels": int(net_cfg["in_channels"]),
        "out_channels": int(net_cfg.get("out_channels") or net_cfg["in_channels"]),
        "block_out_channels": [channels * int(m) for m in net_cfg["channel_mult"]],
        "layers_per_block": int(net_cfg["num_res_blocks"]),
        "down_block_types": ["AttnDownBlock2D" if lv in attn else "DownBlock2D" for lv in range(levels)],
        "up_block_types": ["AttnUpBlock2D" if lv in attn else "UpBlock2D" for lv in reversed(range(levels))],
        "add_attention": bool(net_cfg.get("mid_attention", True)),
        # one head everywhere (None), or the common head width
        "attention_head_dim": None if heads == 1 else attended[0] // heads,
        "dropout": float(net_cfg.get("dropout", 0.0)),
        "norm_num_groups": int(net_cfg.get("norm_groups", 32)),
        "attn_norm_num_groups": int(net_cfg.get("norm_groups", 32)),
        "norm_eps": 1e-6,
        "resnet_time_scale_shift": "scale_shift" if net_cfg.get("time_injection") == "scale_shift" else "default",
        # scorediff's sinusoidal features: [sin, cos] with frequencies max_period^(-k / (half - 1))
        "flip_sin_to_cos": False,
        "freq_shift": 1,
        "time_embedding_dim": int(net_cfg.get("emb_mult", 4)) * channels,
    }
    if int(net_cfg.get("num_classes", 0)) > 0:
        cfg["num_class_embeds"] = int(net_cfg["num_classes"]) + 1  # the last row is the null label
    return cfg


def _copy(dst: nn.Module, src: nn.Module) -> None:
    dst.weight.data.copy_(src.weight.data.reshape(dst.weight.shape))
    if getattr(src, "bias", None) is not None:
        dst.bias.data.copy_(src.bias.data)


def _copy_resblock(dst, src) -> None:
    for d, s in ((dst.norm1, src.norm1), (dst.conv1, src.conv1), (dst.time_emb_proj, src.emb), (dst.norm2, src.norm2),
                 (dst.conv2, src.conv2)):
        _copy(d, s)
    if isinstance(src.skip, nn.Conv2d):
        _copy(dst.conv_shortcut, src.skip)


def _copy_attention(dst, src) -> None:
    _copy(dst.group_norm, src.norm)
    C = src.proj.weight.shape[0]
    w, b = src.qkv.weight.data[:, :, 0, 0], src.qkv.bias.data
    for i, lin in enumerate((dst.to_q, dst.to_k, dst.to_v)):  # qkv's output channels are [q | k | v]
        lin.weight.data.copy_(w[i * C:(i + 1) * C])
        lin.bias.data.copy_(b[i * C:(i + 1) * C])
    _copy(dst.to_out[0], src.proj)


def unet_to_diffusers(net: nn.Module, shape: tuple[int, ...], time_shift: float = 0.0) -> nn.Module:
    """scorediff's ``nets.UNet`` as a diffusers ``UNet2DModel`` computing the same function.

    ``time_shift`` s: the diffusers model at timestep k equals ours at noise input k + s. A shift of the
    sinusoidal features is a rotation of each (sin, cos) pair, sin(w (k + s)) = sin(wk) cos(ws) + cos(wk) sin(ws),
    absorbed exactly into the first embedding layer's weights (W' = W R(s)). DDPM-family: s = 1, since our
    noise input 1000 t is diffusers' k + 1.
    """
    cfg = _unet2d_config(net.config, shape)
    unet = _diffusers().UNet2DModel(**cfg).eval()
    if next(net.parameters()).dtype != torch.float32:
        unet = unet.to(next(net.parameters()).dtype)
    _copy(unet.conv_in, net.conv_in)
    _copy(unet.conv_norm_out, net.norm_out)
    _copy(unet.conv_out, net.conv_out)
    mlp = net.emb.mlp
    w1 = mlp[0].weight.data.double()
    if time_shift:
        freqs = net.emb.features.freqs.double()
        c, s = torch.cos(freqs * time_shift), torch.sin(freqs * time_shift)
        half = freqs.numel()
        w_sin, w_cos = w1[:, :half], w1[:, half:]
        # W [sin(w(k+s)); cos(w(k+s))] = (W_sin c - W_cos s) sin(wk) + (W_sin s + W_cos c) cos(wk)
        w1 = torch.cat([w_sin * c - w_cos * s, w_sin * s + w_cos * c], dim=1)
    unet.time_embedding.linear_1.weight.data.copy_(w1.to(mlp[0].weight.dtype))
    unet.time_embedding.linear_1.bias.data.copy_(mlp[0].bias.data)
    _copy(unet.time_embedding.linear_2, mlp[2])
    if net.label is not None:
        unet.class_embedding.weight.data.copy_(net.label.table.weight.data)

    def fill(blocks, layers):
        """Walk our flat layer list alongside diffusers' blocks: (resnet[, attention]) ... then the resampler."""
        it = iter(layers)
        for block in blocks:
            for j, resnet in enumerate(block.resnets):
                layer = list(next(it))
                assert isinstance(layer[0], ResBlock)
                _copy_resblock(resnet, layer[0])
                if getattr(block, "attentions", None):
                    assert isinstance(layer[1], Attention)
                    _copy_attention(block.attentions[j], layer[1])
            resamplers = getattr(block, "downsamplers", None) or getattr(block, "upsamplers", None)
            if resamplers:
                (m,) = list(next(it))
                assert isinstance(m, (Downsample, Upsample))
                _copy(resamplers[0].conv, m.conv)
        assert next(it, None) is None

    fill(unet.down_blocks, net.down)
    fill(unet.up_blocks, net.up)
    _copy_resblock(unet.mid_block.resnets[0], net.mid[0])
    _copy_resblock(unet.mid_block.resnets[1], net.mid[2])
    if isinstance(net.mid[1], Attention):
        _copy_attention(unet.mid_block.attentions[0], net.mid[1])
    return unet


def scheduler_for(process: Process, param: parameterizations.Parameterization):
    """The diffusers scheduler holding the training setup of (process, parameterization)."""
    d = _diffusers()
    if isinstance(process, EDM):
        return d.EDMEulerScheduler(sigma_min=process.t_min, sigma_max=process.t_max, sigma_data=param.sigma_data,
                                   prediction_type="epsilon")
    prediction = {v: k for k, v in PREDICTION_TYPES.items()}[param.name]
    cfg: dict[str, Any] = {"num_train_timesteps": process.steps, "prediction_type": prediction, "clip_sample": False}
    if process.schedule in ("linear", "scaled_linear"):
        cfg.update(beta_schedule=process.schedule, beta_start=process.beta_start, beta_end=process.beta_end)
    elif process.schedule == "cosine":
        cfg.update(beta_schedule="squaredcos_cap_v2")
    else:
        cfg.update(trained_betas=process.betas.tolist())
    return d.DDPMScheduler(**cfg)


def to_diffusers(denoiser: NetDenoiser, shape: tuple[int, ...]) -> tuple[nn.Module, Any]:
    """(UNet2DModel, scheduler) equal to a scorediff U-Net denoiser, or a ValueError naming what does not map.

    Maps: vp-discrete (T = 1000) with eps / v / x0 and the "t1000" noise input onto a ``DDPMScheduler``,
    and edm with EDM preconditioning onto an ``EDMEulerScheduler``; the network must be scorediff's U-Net
    with sinusoidal features as wide as ``channels``, one GroupNorm group count for every width, no
    ``skip_rescale`` and one attention head width (``_export_problems`` lists every mismatch).
    """
    net, process, param = denoiser.net, denoiser.process, denoiser.param
    problems = _export_problems(getattr(net, "config", {}), process, param)
    if problems:
        raise ValueError("cannot export to diffusers: " + "; ".join(problems))
    shift = 1.0 if isinstance(process, VPDiscrete) else 0.0
    return unet_to_diffusers(net, tuple(shape), time_shift=shift), scheduler_for(process, param)


def save_diffusers(denoiser: NetDenoiser, shape: tuple[int, ...], folder: str | Path) -> Path:
    """Write a U-Net denoiser as a diffusers folder: ``unet/`` and ``scheduler/`` (plus ``model_index.json`` of a
    ``DDPMPipeline`` for DDPM-family models), loadable by diffusers' ``from_pretrained`` and by ``from_diffusers``.

    ``shape`` is one example's (C, H, W). ``folder`` must be new or empty.
    """
    if len(shape) != 3:
        raise ValueError(f"cannot export to diffusers: examples of shape {tuple(shape)} are not images (C, H, W)")
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"export folder {str(folder)!r} exists and is not empty")
    unet, scheduler = to_diffusers(denoiser, shape)
    if isinstance(denoiser.process, VPDiscrete):
        _diffusers().DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(str(folder))
    else:  # no diffusers pipeline samples an EDM UNet2DModel: the two parts alone
        unet.save_pretrained(str(folder / "unet"))
        scheduler.save_pretrained(str(folder / "scheduler"))
    return folder

__all__ = [
    "DEFAULT_STEPS", "DiffusersNet", "MODEL_CLASSES", "PREDICTION_TYPES", "PipelineSamples", "SCHEDULER_SAMPLERS",
    "TextToImage", "default_sampler", "from_diffusers", "generate_pipeline", "is_pipeline_folder", "load_model", "load_pipeline",
    "pipeline_problems", "text_to_image",
    "process_from_scheduler", "sampling_schedule", "save_diffusers", "scheduler_config", "scheduler_for", "to_diffusers",
    "unet_to_diffusers",
]
