"""Guidance: Denoiser wrappers that steer any sampler towards a class, and the noisy classifier they can use.

Each wrapper returns a Denoiser ``D_g(x, t, y=labels, **cond) -> x0_hat``, so every sampler is guidable
without knowing it (``scorediff.sample(classifier_free(D, 2.0), process, shape, cond={"y": labels})``).
Both keep the wrapped denoiser's ``nfe`` counter visible.

* :func:`classifier_free` (Ho & Salimans 2022, "Classifier-free diffusion guidance", eq. 6): with the
  conditional D_c = D(x, t, y) and unconditional D_u = D(x, t, y = -1) (the null label,
  ``scorediff.nets.NULL_LABEL``) of a model trained with label dropout,
      D_g = D_u + s (D_c - D_u),
  s = ``scale`` in diffusers' convention (1 = the conditional model, 0 = unconditional, > 1 guided; Ho &
  Salimans' w is s - 1). D_g is an affine combination at fixed (x, t), and eps_hat, v and the score are
  affine in x0_hat at fixed (x, t), so guiding x0_hat is guiding eps or v. Both branches run in one
  batched call. Options: ``interval = (t_lo, t_hi)`` guides only for t in that range and uses s = 1
  outside it (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval improves sample and
  distribution quality"); ``rescale`` = phi of Lin et al. 2024 ("Common diffusion noise schedules and
  sample steps are flawed", sec. 3.4, Algorithm 2); ``threshold`` = the percentile p of dynamic
  thresholding (Saharia et al. 2022, "Imagen", sec. 2.3), for pixel data in [-1, 1].
  Prompts: with ``cond`` holding ``context`` / ``context_mask`` (a text encoder's output), D_c sees the
  prompt and D_u the unconditional prompt, the encoder's ``null()`` given as ``negative=``, or per example a
  negative prompt's encoding as ``negative_context`` / ``negative_context_mask`` in ``cond`` (the
  "negative prompt" of Stable Diffusion: D_g = D_neg + s (D_c - D_neg) moves away from it). Labels and
  prompts may be given together: then D_u has the null label and the negative prompt.
  Observations (forecasting, imputation): with ``cond`` holding ``observed`` / ``observed_mask`` for a model
  trained CSDI-style with the observation dropped (``masking.MaskedConditionLoss``'s ``p_uncond``), D_c sees
  them and D_u an empty mask (the unconditional model); ``scorediff.forecast.complete(..., guidance=s)``.
  For a Gaussian the guided probability flow maps a Gaussian to a Gaussian, but not to the tilted density
  p(x | y)^s p(x)^(1 - s) (the tilted family is not a diffusion; Chidambaram et al. 2024, "What does guidance
  do?"): ``tests/test_forecast.py`` checks the law against the guided ODE integrated in closed form.
* :func:`classifier` (Dhariwal & Nichol 2021, sec. 4; Song et al. 2021, "Score-based generative modeling
  through SDEs", sec. 5 / eq. 48): the guided score grad log p_t(x) + s grad log p(y | x_t), i.e. by
  Tweedie (x0_hat = (x + sigma^2 score) / alpha)
      D_g = D_u + s (sigma^2 / alpha) grad_x log p(y | x_t).
  At s = 1 with the exact p(y | x_t) this is the exact conditional denoiser E[x0 | x_t, y].
* :class:`TimeClassifier` / :func:`load_classifier`: a classifier of noisy x_t trained on a run's own data
  at its noise levels (``scorediff train-classifier RUN``, ``scorediff.training.classifier``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import nets, parameterizations, processes
from .nets import NULL_LABEL
from .nets.attention import cat_contexts
from .parameterizations import coefficients
from .processes.base import Process
from .utils import append_dims, batch_time

Denoiser = Callable[..., Tensor]
LogProb = Callable[[Tensor, Tensor, Tensor], Tensor]  # log p(y | x_t): (x_t, t (B,), y (B,)) -> (B,)

__all__ = [
    "ClassifierFree", "ClassifierGuided", "TimeClassifier", "classifier", "classifier_free", "dynamic_threshold",
    "load_classifier",
]


def _labels(y: Any, x: Tensor) -> Tensor:
    if y is None:
        raise ValueError("guidance needs class labels: pass y (e.g. scorediff.sample(..., cond={'y': labels}))")
    y = torch.as_tensor(y, device=x.device)
    if y.is_floating_point():
        raise ValueError(f"labels y must be integers, got dtype {y.dtype}")
    if y.ndim == 0:
        y = y.expand(x.shape[0])
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    return y.long()


def dynamic_threshold(x0: Tensor, percentile: float = 0.995) -> Tensor:
    """Dynamic thresholding (Saharia et al. 2022, sec. 2.3): per example, s = max(1, quantile_p |x0|), then
    x0 <- clip(x0, -s, s) / s. Keeps x0_hat inside [-1, 1] (pixel data) where strong guidance pushes it out,
    and leaves an example whose values all lie in [-1, 1] unchanged."""
    if not 0 < percentile <= 1:
        raise ValueError(f"dynamic threshold percentile must lie in (0, 1], got {percentile}")
    flat = x0.reshape(x0.shape[0], -1).abs()
    if flat.dtype in (torch.float16, torch.bfloat16):  # torch.quantile takes float32 / float64 only
        flat = flat.float()
    s = torch.quantile(flat, percentile, dim=1).to(x0.dtype).clamp_min(1.0)
    s = append_dims(s, x0.ndim)
    return torch.maximum(torch.minimum(x0, s), -s) / s


class _Wrapper:
    """A Denoiser wrapping another; ``nfe`` is the wrapped one's counter (as samplers' ``_Bound``)."""

    denoiser: Denoiser

    @property
    def nfe(self) -> int:
        return getattr(self.denoiser, "nfe", 0)


class ClassifierFree(_Wrapper):
    """The Denoiser returned by :func:`classifier_free`; see the module docstring for the maths."""

    def __init__(self, denoiser: Denoiser, scale: float, interval: tuple[float, float] | None, rescale: float,
                 threshold: float | None, negative: tuple[Tensor, Tensor | None] | None = None):
        self.denoiser, self.scale, self.rescale, self.threshold = denoiser, float(scale), float(rescale), threshold
        self.interval = None if interval is None else (float(interval[0]), float(interval[1]))
        self.negative = negative

    def _branches(self, x: Tensor, y: Tensor | None, cond: dict) -> tuple[dict, dict, dict]:
        """(conditional, unconditional, shared) keywords: labels and/or prompts, and what both branches see."""
        context, mask = cond.pop("context", None), cond.pop("context_mask", None)
        neg, neg_mask = cond.pop("negative_context", None), cond.pop("negative_context_mask", None)
        observed, observed_mask = cond.pop("observed", None), cond.pop("observed_mask", None)
        if y is None and context is None and observed is None:
            raise ValueError("guidance needs class labels, a prompt or observations: pass y, context or observed "
                             "(e.g. scorediff.sample(..., cond={'y': labels}) or cond={'context': c, 'context_mask': "
                             "m}, or cond={'observed': x, 'observed_mask': m})")
        c_kw: dict[str, Any] = {}
        u_kw: dict[str, Any] = {}
        if observed is not None:
            if observed_mask is None:
                raise ValueError("guidance on observations needs observed_mask with observed")
            m = torch.as_tensor(observed_mask, device=x.device).bool().expand(x.shape)
            obs = observed.expand(x.shape)
            c_kw["observed"], u_kw["observed"] = obs, obs  # the empty mask: the unconditional model
            c_kw["observed_mask"], u_kw["observed_mask"] = m, torch.zeros_like(m)
        if y is not None:
            y = _labels(y, x)
            c_kw["y"], u_kw["y"] = y, torch.full_like(y, NULL_LABEL)
        if context is not None:
            if neg is None:
                if self.negative is None:
                    raise ValueError("classifier-free guidance on a prompt needs the unconditional prompt: "
                                     "classifier_free(D, scale, negative=encoder.null()), or negative_context in cond")
                neg, neg_mask = self.negative
            B = x.shape[0]
            c_kw["context"], c_kw["context_mask"] = context.expand(B, -1, -1), _mask(context, mask).expand(B, -1)
            u_kw["context"], u_kw["context_mask"] = neg.expand(B, -1, -1), _mask(neg, neg_mask).expand(B, -1)
        elif neg is not None:
            raise ValueError("negative_context given without a prompt (context)")
        return c_kw, u_kw, cond

    def __call__(self, x: Tensor, t: Tensor | float, y: Tensor | None = None, **cond) -> Tensor:
        c_kw, u_kw, cond = self._branches(x, y, dict(cond))
        t = batch_time(t, x)
        s = torch.full_like(t, self.scale)
        if self.interval is not None:
            lo, hi = self.interval
            s = torch.where((t >= lo) & (t <= hi), s, torch.ones_like(s))  # s = 1 (no guidance) outside
        if bool((s == 1).all()):  # the conditional model alone: one call on B examples
            x0 = self.denoiser(x, t, **c_kw, **cond)
        elif bool((s == 0).all()) and self.rescale == 0:  # the unconditional model alone
            x0 = self.denoiser(x, t, **u_kw, **cond)
        else:
            # both branches in one call on 2B examples: [conditional; unconditional]
            both = {}
            for key in ("y", "observed", "observed_mask"):
                if key in c_kw:
                    both[key] = torch.cat([c_kw[key], u_kw[key]])
            if "context" in c_kw:  # prompts of different lengths: padded with masked zeros
                both["context"], both["context_mask"] = cat_contexts((c_kw["context"], c_kw["context_mask"]),
                                                                     (u_kw["context"], u_kw["context_mask"]))
            out = self.denoiser(torch.cat([x, x]), torch.cat([t, t]), **both, **cond)
            x0_c, x0_u = out.chunk(2)
            x0 = x0_u + append_dims(s, x.ndim) * (x0_c - x0_u)  # eq. 6 of Ho & Salimans in x0
            if self.rescale > 0:
                # Lin et al. 2024, Alg. 2: bring the guided prediction's per-example std back to the conditional's,
                # then blend with weight phi (the guided mean shift stays, the over-saturation goes)
                dims = tuple(range(1, x.ndim))
                ratio = x0_c.std(dim=dims, keepdim=True) / x0.std(dim=dims, keepdim=True).clamp_min(1e-12)
                x0 = self.rescale * (x0 * ratio) + (1 - self.rescale) * x0
        if self.threshold is not None:
            x0 = dynamic_threshold(x0, self.threshold)
        return x0


def _mask(context: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
    return mask


def classifier_free(
    denoiser: Denoiser,
    scale: float,
    *,
    interval: Sequence[float] | None = None,
    rescale: float = 0.0,
    threshold: float | None = None,
    negative: tuple[Tensor, Tensor | None] | None = None,
) -> ClassifierFree:
    """Classifier-free guidance (Ho & Salimans 2022): ``D_g(x, t, y) = D_u + scale (D_c - D_u)``, one batched call.

    Args:
        denoiser: a class-conditional Denoiser ``D(x, t, y=labels)`` trained with label dropout (y = -1: null).
        scale: s >= 0 (diffusers' convention: 1 = conditional, 0 = unconditional, > 1 guided).
        interval: (t_lo, t_hi): guide only where t_lo <= t <= t_hi, s = 1 elsewhere (Kynkaanniemi et al. 2024).
        rescale: phi in [0, 1], the std-rescale of Lin et al. 2024 applied to x0_hat (0 = off).
        threshold: a percentile p in (0, 1] for dynamic thresholding of x0_hat (Saharia et al. 2022); for
            pixel data in [-1, 1] only. None = off.
    Returns a Denoiser ``D_g(x, t, y=labels, **cond)``; y is a (B,) LongTensor or one int.
    """
    scale = float(scale)
    if not scale >= 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale:g}")
    if interval is not None:
        if len(interval) != 2 or not float(interval[0]) <= float(interval[1]):
            raise ValueError(f"guidance interval must be (t_lo, t_hi) with t_lo <= t_hi, got {tuple(interval)}")
    if not 0 <= rescale <= 1:
        raise ValueError(f"guidance rescale must lie in [0, 1], got {rescale}")
    if threshold is not None and not 0 < threshold <= 1:
        raise ValueError(f"dynamic threshold percentile must lie in (0, 1], got {threshold}")
    return ClassifierFree(denoiser, scale, interval, float(rescale), threshold, negative)


class ClassifierGuided(_Wrapper):
    """The Denoiser returned by :func:`classifier`; see the module docstring for the maths."""

    def __init__(self, denoiser: Denoiser, process: Process, log_prob: LogProb, scale: float):
        self.denoiser, self.process, self.log_prob, self.scale = denoiser, process, log_prob, float(scale)

    def __call__(self, x: Tensor, t: Tensor | float, y: Tensor | None = None, **cond) -> Tensor:
        y = _labels(y, x)
        t = batch_time(t, x)
        x0 = self.denoiser(x, t, **cond)  # the unconditional model (no y: the null label for a conditional net)
        if self.scale == 0:
            return x0
        # samplers run under no_grad; the classifier's gradient needs autograd on a detached copy of x
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_prob(xg, t, y).sum(), xg)
        alpha, sigma = coefficients(self.process, t, x)
        # sigma^2 / alpha, 0 where alpha = 0 (there x_t carries no information about y: the gradient is 0)
        gain = torch.where(alpha > 0, sigma**2 / alpha.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(alpha))
        return x0 + self.scale * gain * grad.to(x0.dtype)


def classifier(denoiser: Denoiser, process: Process, log_prob: LogProb, scale: float) -> ClassifierGuided:
    """Classifier guidance (Dhariwal & Nichol 2021): ``D_g = D_u + scale sigma^2 / alpha grad_x log p(y | x_t)``.

    Args:
        denoiser: an unconditional Denoiser (it is called without y; a class-conditional network then sees
            the null label).
        process: the process both the denoiser and the classifier belong to.
        log_prob: ``log_prob(x_t, t, y) -> (B,)``, log p(y | x_t), differentiable in x_t: a
            :class:`TimeClassifier`'s ``log_prob``, or the oracle's exact one.
        scale: s >= 0; 1 with the exact p(y | x_t) gives the exact conditional denoiser.
    The gradient is taken by autograd inside the wrapper, also when the sampler runs under ``torch.no_grad``.
    """
    scale = float(scale)
    if not scale >= 0:
        raise ValueError(f"classifier guidance scale must be >= 0, got {scale:g}")
    return ClassifierGuided(denoiser, process, log_prob, scale)


# -- the noisy classifier ------------------------------------------------------------------------------


class TimeClassifier(nn.Module):
    """A classifier of noisy data: ``forward(x_t, t) -> logits (B, K)`` for a network ``net(x, noise_input)``.

    Like ``NetDenoiser``, it feeds the network c_in(t) x_t and the noise input c_noise(t) of the run's
    parameterization, so it sees exactly what the run's denoiser sees. ``t_range`` = (t_lo, t_hi), the
    times it was trained on; ``features`` uses t_lo (clean data).

    Attributes: ``num_classes`` (K), ``shape`` (one example's shape), ``process``, ``param``, ``t_range``.
    """

    def __init__(self, net: nn.Module, process: Process, param: parameterizations.Parameterization,
                 shape: Sequence[int], t_range: tuple[float, float]):
        super().__init__()
        self.net, self.process, self.param = net, process, param
        self.num_classes = int(net.num_classes)
        self.shape = tuple(int(s) for s in shape)
        self.t_range = (float(t_range[0]), float(t_range[1]))

    def _inputs(self, x: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        t = batch_time(t, x)
        return self.param.c_in(self.process, t, x) * x, self.param.c_noise(self.process, t).to(x.dtype)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self.net(*self._inputs(x, t))

    def log_prob(self, x: Tensor, t: Tensor | float, y: Tensor) -> Tensor:
        """log p(y | x_t), shape (B,): the log-softmax of the logits at the labels y."""
        y = _labels(y, x)
        return torch.log_softmax(self(x, t), dim=1).gather(1, y[:, None])[:, 0]

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations (B, F) of clean data x, i.e. at the smallest trained time t_lo."""
        return self.net.features(*self._inputs(x, self.t_range[0]))


CLASSIFIER_FILES = ("config.json", "model.safetensors", "info.json")


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> TimeClassifier:
    """Load a classifier folder (``config.json`` network config, ``model.safetensors``, ``info.json`` with
    num_classes, shape, process, parameterization, t_range) written by ``scorediff train-classifier``; the path of
    one of its files also names it.
    Only JSON and safetensors are read; nothing is unpickled. Returns the classifier in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_file() and path.name in CLASSIFIER_FILES:  # a file of the folder named instead of the folder
        path = path.parent
    for name in CLASSIFIER_FILES:
        if not (path / name).exists():
            raise FileNotFoundError(f"{str(path)!r} is not a classifier folder ({name} missing); "
                                    f"write one with `scorediff train-classifier RUN`")
    info = json.loads((path / "info.json").read_text())
    missing = [k for k in ("num_classes", "shape", "process", "parameterization", "t_range") if k not in info]
    if missing:
        raise ValueError(f"classifier info {str(path / 'info.json')!r} lacks key(s) {', '.join(missing)}")
    net = nets.make(json.loads((path / "config.json").read_text()))
    state = load_file(str(path / "model.safetensors"))
    bad = net.load_state_dict(state, strict=False)
    if bad.missing_keys or bad.unexpected_keys:
        raise ValueError(f"weights {str(path / 'model.safetensors')!r} do not fit the classifier's config: missing "
                         f"{sorted(bad.missing_keys)[:5]}, unexpected {sorted(bad.unexpected_keys)[:5]}")
    clf = TimeClassifier(net, processes.from_config(info["process"]), parameterizations.from_config(
        info["parameterization"]), info["shape"], tuple(info["t_range"]))
    return clf.to(device).eval().requires_grad_(False)
