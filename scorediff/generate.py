"""Sampling a trained run: the library engine behind ``scorediff sample``.

``generate(run, num, ...)`` wires guidance (classifier-free, Ho & Salimans 2022; classifier, Dhariwal & Nichol 2021)
around the run's Denoiser, picks the grid (a grid fitted by ``scorediff fit-schedule`` for this sampler, step count
and checkpoint replaces the default one), draws the samples in batches with class labels cycling through the classes,
optionally by parallel (Picard) sampling, decodes a latent run's samples, applies super-resolution stages
(``cascade.run_stages``), and refuses non-finite samples. Scripts, tests and the CLI call it alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import cascade, distributed, guidance, samplers
from .runs import Run
from .runs.build import check_sampler_options
from .runs.fitted import Lookup, lookup
from .text_encoders import prompt_cond, prompt_guidance
from .utils import check_counts, cycle_labels

# On a CPU a batch whose activations exceed glibc's largest mmap threshold (32 MB) is allocated and freed
# through mmap on every layer: the page faults made sampling 500 28x28 images at batch 500 2.3x slower in
# CPU time, mostly system time, than at batch 32 (benchmarks/sample_throughput.py).
AUTO_BATCH_ELEMENTS = 32 * 28 * 28
MAX_AUTO_BATCH = 1000


class NonFiniteSamplesError(ValueError):
    """Some samples are NaN or inf: never handed out as if they were samples."""


def auto_batch(shape: tuple[int, ...]) -> int:
    """Samples per batch when none is given: about AUTO_BATCH_ELEMENTS values, 1..MAX_AUTO_BATCH."""
    numel = 1
    for n in shape:
        numel *= int(n)
    return max(1, min(MAX_AUTO_BATCH, AUTO_BATCH_ELEMENTS // numel))


@dataclass
class Guidance:
    """How to guide a run's Denoiser (``guidance.classifier_free`` / ``guidance.classifier``); all off by default.

    scale: classifier-free guidance scale (1 = the conditional model, 0 = unconditional, > 1 guided); needs a
        class-conditional run trained with label dropout. interval, threshold, rescale: its options.
    classifier_scale: classifier guidance with a noisy classifier folder (``classifier``, default RUN/classifier).
    """

    scale: float | None = None
    interval: tuple[float, float] | None = None
    threshold: float | None = None
    rescale: float = 0.0
    classifier_scale: float | None = None
    classifier: str | Path | None = None


@dataclass
class Samples:
    """What ``generate`` returns: the samples as data (decoded for a latent run, upsampled through the stages), the
    model's own latents (latent runs), the labels used (class-conditional or classifier-guided sampling), and how."""

    x: Tensor
    kind: str  # "points" | "images"
    sampler: str
    steps: int
    latents: Tensor | None = None
    labels: Tensor | None = None
    fitted: Lookup | None = None  # the fitted-grid lookup (None when a grid was named)
    rounds: int = 0  # parallel sampling: batched model-call rounds in total
    stages: int = 0
    notes: list[str] = field(default_factory=list)


def sampling_options(run: Run, sampler: str | None, steps: int | None, options: dict[str, Any] | None = None,
                     schedule: str | None = None, ending: str | None = None) -> tuple[str, int, dict, Lookup | None]:
    """(sampler, steps, options, fitted-grid lookup) for sampling ``run``: the run's config where not given, its
    config's options only for its own sampler, a fitted grid unless a grid is named. Checked (ValueError)."""
    sampler = sampler or run.config["sample"]["sampler"]
    steps = steps or int(run.config["sample"]["steps"])
    given = dict(options or {})
    opts = dict(run.config["sample"]["options"]) if sampler == run.config["sample"]["sampler"] else {}
    opts.update(given)
    if schedule is not None:
        opts["schedule"] = schedule
    if ending is not None:
        opts["ending"] = ending
    check_sampler_options(sampler, opts)
    fitted = None
    if schedule is None and "schedule" not in given:  # a grid fitted by `scorediff fit-schedule` for this
        # sampler, step count and checkpoint replaces the default grid (and one in the run's config): fitting it
        # was an explicit act for this run
        fitted = lookup(run, sampler, steps)
        if fitted.times is not None:
            opts["schedule"] = fitted.times
            opts.pop("schedule_options", None)  # they shape a named grid; a fitted grid is given whole
    return sampler, steps, opts, fitted


def guided(run: Run, g: Guidance, label: int | None = None, device: str | torch.device = "cpu",
           prompted: bool = False, negative_prompt: str | None = None) -> tuple[Any, int, bool]:
    """(the Denoiser to sample, the number of classes labels cycle through, whether labels are passed).

    A text-conditioned run (``text.encoder``) is guided on its prompts (``text_encoders.prompt_guidance``: the null
    prompt, or ``negative_prompt``, is the other branch), and on its labels too when it has both."""
    num_classes = int(run.info.get("num_classes") or 0)
    name = str(run.path)
    text = run.text_encoder
    if (prompted or negative_prompt is not None) and text is None:
        raise ValueError(f"--prompt given but run {name!r} has no text encoder (text.encoder)")
    if negative_prompt is not None and g.scale is None:
        raise ValueError("--negative-prompt needs --guidance SCALE")
    clf = None
    if g.classifier is not None and g.classifier_scale is None:
        raise ValueError("--classifier needs --classifier-guidance SCALE")
    if g.classifier_scale is not None:
        if g.scale is not None:
            raise ValueError("give --guidance (classifier-free) or --classifier-guidance, not both")
        if not g.classifier_scale >= 0:  # before the classifier is loaded
            raise ValueError(f"classifier guidance scale must be >= 0, got {g.classifier_scale:g}")
        if run.class_conditional and not run.config["net"]["label_dropout"] > 0:
            raise ValueError(f"--classifier-guidance needs an unconditional model; run {name!r} is "
                             f"class-conditional without label dropout, so it has none")
        folder = g.classifier or run.path / "classifier"
        clf = guidance.load_classifier(folder, device=device)
        if clf.shape != run.shape:
            raise ValueError(f"classifier {str(folder)!r} is for data of shape {clf.shape}, run {name!r} makes "
                             f"{run.shape}")
        if clf.process.config() != run.process.config():  # the same t must mean the same noise level
            raise ValueError(f"classifier was trained for process {clf.process.config()}, run {name!r} uses "
                             f"{run.process.config()}")
        num_classes = clf.num_classes
    if label is not None:
        if not run.class_conditional and clf is None:
            raise ValueError(f"--class given but run {name!r} is not class-conditional")
        if not 0 <= label < num_classes:
            raise ValueError(f"--class must lie in 0..{num_classes - 1}, got {label}")
    extras = [flag for flag, given in (("--guidance-interval", g.interval is not None),
                                       ("--guidance-threshold", g.threshold is not None),
                                       ("--guidance-rescale", g.rescale != 0.0)) if given]
    if extras and g.scale is None:
        raise ValueError(f"{', '.join(extras)} need(s) --guidance SCALE")
    denoiser = run.denoiser
    if g.scale is not None and text is not None:  # guidance on prompts (and labels, when both)

        if not run.config["text"]["dropout"] > 0:
            raise ValueError(f"--guidance needs a run trained with prompt dropout (text.dropout > 0); {name!r} "
                             "has text.dropout = 0")
        denoiser = prompt_guidance(run.denoiser, text, g.scale, negative_prompt, interval=g.interval,
                                   rescale=g.rescale, threshold=g.threshold)
    elif g.scale is not None:
        if not run.class_conditional:
            raise ValueError(f"--guidance given but run {name!r} is not class-conditional (net.class_conditional)")
        if not run.config["net"]["label_dropout"] > 0:
            raise ValueError(f"--guidance needs a run trained with label dropout (net.label_dropout > 0) for its "
                             f"unconditional branch; {name!r} has net.label_dropout = 0")
        denoiser = guidance.classifier_free(run.denoiser, g.scale, interval=g.interval, rescale=g.rescale,
                                            threshold=g.threshold)
    if clf is not None:
        denoiser = guidance.classifier(run.denoiser, run.process, clf.log_prob, g.classifier_scale)
    return denoiser, num_classes, run.class_conditional or clf is not None


def generate(
    run: Run,
    num: int,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    schedule: str | None = None,
    ending: str | None = None,
    label: int | None = None,
    guide: Guidance | None = None,
    batch: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    cascade_stages: Sequence[Run] = (),
    parallel_window: int | None = None,
    parallel_tol: float = 1e-3,
    prompts: Sequence[str] | None = None,
    negative_prompt: str | None = None,
    world: distributed.World | None = None,
) -> Samples | None:
    """``num`` samples of the diffusion run ``run`` (see the module docstring), on the CPU.

    sampler, steps, options: default the run's config (``sampling_options``); schedule, ending: a named grid and
    its ending. label: one class for all samples (default: cycling through the classes). guide: ``Guidance``.
    batch: samples per batch (default ``auto_batch``); batch i draws from its own generator seeded ``seed + i``
    (with ``parallel_window``, Picard / ParaDiGMS sampling, ``samplers.parallel``, the batch starting at sample j is
    seeded ``seed + j``), so that under torchrun the ranks share the batches (``distributed.my_blocks``) and rank 0
    gathers exactly the set one process draws; other ranks get None. cascade_stages: super-resolution stage runs
    applied in turn, each with its own config's sampler. prompts: for a text-conditioned run, cycled over the
    samples (default: the null prompt); negative_prompt: the other branch of prompt guidance. Raises ValueError on
    bad input and ``NonFiniteSamplesError`` if any sample is NaN or inf.
    """
    check_counts(num, steps, batch)
    run.require_task("diffusion", "scorediff sample")
    for st in cascade_stages:
        st.require_task("super_resolution", "scorediff sample --cascade")
    sampler, steps, opts, fitted = sampling_options(run, sampler, steps, options, schedule, ending)
    denoiser, num_classes, labelled = guided(run, guide or Guidance(), label, device, bool(prompts), negative_prompt)
    if parallel_window is not None and parallel_window < 1:
        raise ValueError(f"--parallel WINDOW must be >= 1, got {parallel_window}")
    text, prompts = run.text_encoder, list(prompts or [""])
    batch = batch or auto_batch(run.shape)
    world = world or distributed.world()
    n_blocks = -(-num // batch)
    blocks = {}
    for i in distributed.my_blocks(n_blocks, world):  # batch i of every rank's share: the same set on any ranks
        start = i * batch
        n = min(batch, num - start)
        cond, y, rounds = {}, None, 0
        if labelled:
            y = (torch.full((n,), label) if label is not None else cycle_labels(start, n, num_classes)).to(device)
            cond = {"y": y}
        if text is not None:
            cond.update(prompt_cond(text, [prompts[j % len(prompts)] for j in range(start, start + n)]))
        if parallel_window is not None:  # each batch from its own seed (seed + index of its first sample)
            xb, pinfo = samplers.parallel(denoiser, run.process, (n, *run.shape), sampler=sampler, steps=steps,
                                          device=device, seed=seed + start, window=parallel_window, tol=parallel_tol,
                                          cond=cond, progress=progress, **opts)
            rounds = pinfo["rounds"]
        else:
            generator = torch.Generator(device).manual_seed(seed + i)
            xb = samplers.sample(denoiser, run.process, (n, *run.shape), sampler=sampler, steps=steps, seed=seed,
                                 generator=generator, device=device, progress=progress, cond=cond, **opts)
        blocks[i] = (xb.cpu(), None if y is None else y.cpu(), rounds)
    gathered = distributed.gather_blocks(blocks, n_blocks, world)
    if gathered is None:  # not rank 0: its batches are with rank 0
        return None
    chunks = [part[0] for part in gathered]
    labels = [part[1] for part in gathered if part[1] is not None]
    rounds = sum(part[2] for part in gathered)
    x = torch.cat(chunks)
    kind, latents = run.kind, None
    if run.latent:  # latent diffusion: the samples are the decoded data, the latents the model's
        latents = x
        x = torch.cat([run.decode(x[i:i + batch].to(device)).cpu() for i in range(0, len(x), batch)])
        kind = run.info["latent"]["image_kind"]
    y = torch.cat(labels) if labels else None
    if cascade_stages:
        stages, given = [], tuple(x.shape[1:])
        for st in cascade_stages:
            (C, H, W), f = st.shape, int(st.config["cascade"]["factor"])
            if given != (C, H // f, W // f):
                raise ValueError(f"--cascade {str(st.path)!r} upsamples {(C, H // f, W // f)} to {(C, H, W)}, but "
                                 f"the previous stage gives {given}")
            s = st.config["sample"]
            stages.append(cascade.Stage(st.denoiser, st.process, f, float(st.config["cascade"]["aug_level"]),
                                        sampler=s["sampler"], steps=int(s["steps"]), options=dict(s["options"]),
                                        conditional=st.class_conditional))
            given = st.shape
        x = cascade.run_stages(x, stages, seed=seed, batch=batch, device=device,
                               cond={"y": y} if y is not None else None)[-1]
    bad = int((~torch.isfinite(x.flatten(1))).any(1).sum())
    if bad:
        raise NonFiniteSamplesError(f"{bad} of {len(x)} samples are not finite (NaN or inf), nothing written; the "
                                    f"weights of run {str(run.path)!r} (step {run.step}) may have diverged")
    return Samples(x, kind, sampler, steps, latents, y, fitted, rounds, len(cascade_stages))


__all__ = ["AUTO_BATCH_ELEMENTS", "MAX_AUTO_BATCH", "Guidance", "NonFiniteSamplesError", "Samples", "auto_batch",
           "generate", "guided", "sampling_options"]
