"""Training a noisy classifier p(y | x_t) on a run's own data at the run's noise levels (classifier guidance).

Dhariwal & Nichol (2021), sec. 4.1: the classifier is trained with cross-entropy on x_t = alpha(t) x0 +
sigma(t) eps, eps ~ N(0, I), with t drawn as the diffusion model's training draws it (here: the run's
loss's time sampling, ``losses.DSMLoss.sample_t``), so it is accurate wherever the sampler will ask.
Its network is the encoder half of the run's U-Net (``nets.EncoderClassifier``, same widths, levels and
noise embedding) or an ``nets.MLPClassifier`` for (B, D) data.

A classifier folder (default ``RUN/classifier/``) holds ``config.json`` (the network's config),
``model.safetensors`` and ``info.json`` (num_classes, shape, process, parameterization, t_range,
training steps and accuracies); ``scorediff.guidance.load_classifier`` reads it back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import data, losses, nets
from ..guidance import TimeClassifier
from ..runs import checkpoint as ckpt
from ..runs.build import build_process_param, info_dict
from ..runs.config import resolve

# keys of the run's denoiser network config that the classifier trunk shares
_UNET_KEYS = ("channels", "channel_mult", "num_res_blocks", "attention_levels", "mid_attention", "num_heads",
              "time_injection", "embedding", "emb_features", "emb_mult", "fourier_scale", "input_scale", "norm_groups",
              "seed")
_MLP_KEYS = ("width", "depth", "emb_dim", "embedding", "fourier_scale", "input_scale", "seed")


def classifier_config(net_config: dict[str, Any], num_classes: int, shape: tuple[int, ...]) -> dict[str, Any]:
    """The classifier network config matching a denoiser network config: the U-Net's encoder half, or an MLP."""
    kind = net_config.get("type")
    if kind == "unet":
        cfg = {"type": "unet-classifier", "in_channels": int(shape[0]), "num_classes": num_classes}
        cfg.update({k: net_config[k] for k in _UNET_KEYS if k in net_config})
        return cfg
    if kind == "mlp":
        cfg = {"type": "mlp-classifier", "dim": int(torch.Size(shape).numel()), "num_classes": num_classes}
        cfg.update({k: net_config[k] for k in _MLP_KEYS if k in net_config})
        return cfg
    raise ValueError(f"no classifier for a network of type {kind!r}; expected 'unet' or 'mlp'")


def fit_classifier(
    clf: TimeClassifier,
    x: Tensor,
    y: Tensor,
    sample_t: Callable[[int, torch.Generator], Tensor],
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Train ``clf`` in place by cross-entropy on (x_t, y), x_t ~ q(x_t | x0), t ~ ``sample_t(n, generator)``.

    ``x`` (N, *shape) clean data and ``y`` (N,) labels in 0..K-1. AdamW, a cosine learning-rate decay to 0
    (the last steps settle the weights, no EMA needed). Returns the loss of every step.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"need as many labels as examples (> 0), got {x.shape[0]} examples, {y.shape[0]} labels")
    device = next(clf.parameters()).device
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    clf.train().requires_grad_(True)
    losses = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="classifier")
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=g)
        x0, labels = x[idx].to(device), y[idx].to(device)
        t = sample_t(batch_size, g).to(device=device, dtype=x0.dtype)
        noise = torch.randn(x0.shape, generator=g).to(device=device, dtype=x0.dtype)
        xt = clf.process.marginal(x0, t, noise)
        loss = F.cross_entropy(clf(xt, t), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clf.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    if bar is not None:
        bar.close()
    clf.eval().requires_grad_(False)
    return losses


@torch.no_grad()
def accuracy(clf: TimeClassifier, x: Tensor, y: Tensor, t: float, seed: int = 0, batch: int = 1000) -> float:
    """The fraction of x_t (x noised to time t with a seeded draw) classified as y."""
    g = torch.Generator().manual_seed(seed)
    device = next(clf.parameters()).device
    hits = 0
    for start in range(0, x.shape[0], batch):
        x0 = x[start:start + batch].to(device)
        noise = torch.randn(x0.shape, generator=g).to(device=device, dtype=x0.dtype)
        xt = clf.process.marginal(x0, t, noise)
        hits += int((clf(xt, t).argmax(1) == y[start:start + batch].to(device)).sum())
    return hits / x.shape[0]


def save_classifier(clf: TimeClassifier, out: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the classifier folder (config.json, model.safetensors, info.json) atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "num_classes": clf.num_classes,
        "shape": list(clf.shape),
        "process": clf.process.config(),
        "parameterization": clf.param.config(),
        "t_range": list(clf.t_range),
        **(extra or {}),
    }
    ckpt.save_files(out, {"model.safetensors": clf.net.state_dict()}, {"config.json": clf.net.config, "info.json": info})
    return out


def train_classifier(
    run: str | Path,
    out: str | Path | None = None,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    net: str | dict[str, Any] | None = None,
    progress: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Train a noisy classifier on the data of the run folder ``run``, at its noise levels; write it to ``out``
    (default ``RUN/classifier``). ``net``: a classifier preset or config instead of the run's encoder half.
    Returns (folder, info) where info holds the accuracies on the training data at t_lo, the median training
    time and t_hi."""
    run = Path(run)
    if not (run / "config.json").exists():
        raise FileNotFoundError(f"{str(run)!r} is not a run folder (no config.json)")
    cfg = resolve(ckpt.read_json(run / "config.json"))
    if cfg["autoencoder"]["path"] is not None or cfg["cascade"]["factor"] or cfg["loss"]["name"] == "autoencoder":
        raise ValueError(f"train-classifier: run {str(run)!r} is a latent diffusion run, an autoencoder or a cascade "
                         "stage; a noisy classifier is trained for a pixel-space diffusion run")

    process, param = build_process_param(cfg)
    loss = losses.make(cfg["loss"]["name"], process, param, **cfg["loss"]["options"])
    sample_t = getattr(loss, "sample_t", None)
    if sample_t is None:
        raise ValueError(f"run {str(run)!r}: loss {cfg['loss']['name']!r} has no time sampling to train a classifier on")
    dataset = data.make(cfg["data"]["name"], **cfg["data"]["options"])
    info = info_dict(dataset.info)
    num_classes = int(info.get("num_classes") or 0)
    if num_classes < 2:
        raise ValueError(f"run {str(run)!r}: data {cfg['data']['name']!r} has no class labels to train a classifier on")
    if hasattr(dataset, "x"):
        x, y = dataset.x, dataset.y
    else:
        items = [dataset[i] for i in range(len(dataset))]
        x, y = torch.stack([a for a, _ in items]), torch.as_tensor([b for _, b in items])
    keep = y >= 0
    x, y = x[keep].float(), y[keep].long()
    shape = tuple(info["shape"])
    if net is None:
        denoiser_cfg = nets.make(cfg["net"]["config"] if cfg["net"]["config"] is not None else cfg["net"]["preset"],
                                 shape=shape, **cfg["net"]["overrides"]).config
        net_module = nets.make(classifier_config(denoiser_cfg, num_classes, shape))
    else:
        net_module = nets.make(net, shape=shape, num_classes=num_classes)
    torch.manual_seed(seed)
    t_range = (float(loss.t_lo), float(loss.t_hi))
    clf = TimeClassifier(net_module.to(device), process, param, shape, t_range)
    fit_classifier(clf, x, y, lambda n, g: sample_t(n, generator=g), steps, batch_size, lr, seed, progress)
    t_mid = float(sample_t(10001, generator=torch.Generator().manual_seed(seed)).median())
    acc = {f"{t:.4g}": accuracy(clf, x, y, t, seed) for t in (t_range[0], t_mid, t_range[1])}
    extra = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "accuracy_on_training_data": acc}
    out = Path(out) if out is not None else run / "classifier"
    return save_classifier(clf, out, extra), extra
