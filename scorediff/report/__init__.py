"""A run report: one self-contained HTML page to look at a training run.

``write_report(run, out=None, compare=..., nfe=...)`` reads a run folder written by ``scorediff train``
and writes one HTML file with everything embedded (PNG images as base64 ``data:`` URIs, plots drawn
by matplotlib, no scripts, no external resource: the page's Content-Security-Policy forbids any),
so it can be mailed or archived and opened offline. Sections:

- the resolved config and the data description (``config.json``, ``info.json``);
- training curves from ``metrics.jsonl``: loss (log scale), learning rate, gradient norm;
- evaluation metrics over training: every other numeric key logged in ``metrics.jsonl`` (e.g. FID);
- sample grids across training (``samples/step_*.png``; line plots for series, frame strips for video);
- a sampler comparison, computed only when asked (``compare`` samplers at ``nfe`` budgets): quality
  against the number of model evaluations, measured by the sliced Wasserstein-2 distance
  (Rabin et al. 2011; Bonneel et al. 2015) between ``num`` model samples and ``num`` training
  examples, in the data's own coordinates (points, or pixels for images), all from the same seed;
- likelihood results, if measured (a ``scorediff likelihood --json`` file saved into the run folder);
- results files the user names (``results=``: e.g. the JSON of ``scorediff eval`` or ``scorediff likelihood``);
- the environment the report was made in (Python, torch, device, threads).

The report is a reader: it never writes into the run folder. The default output is the sibling
file ``<run>-report.html``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

from ..atomic import write_atomic
from ..eval import bench
from ..eval.bench import (
    compare_samplers,  # deprecated here (README users): scorediff.eval.bench.compare_samplers
)
from ..runs import load_run
from .artefacts import (
    MAX_GRIDS,
    TRAINING_KEYS,
    environment,
    likelihood_results,
    read_metrics,
    result_files,
    sample_grids,
)
from .page import CSP, STYLE, _img, _table, render
from .plots import evaluation_keys, plot_comparison, plot_evaluation, plot_training


def build_report(
    run_dir: str | Path,
    *,
    compare: Sequence[str] = (),
    nfe: Sequence[int] = (10, 20),
    num: int = 500,
    seed: int = 0,
    schedule: str | None = None,
    results: Sequence[str | Path] = (),
    device: str = "cpu",
    ema: bool = True,
) -> str:
    """The HTML page of the run folder ``run_dir`` (see the module docstring); reads only."""
    run_dir = Path(run_dir)
    run = load_run(run_dir, ema=ema, device=device)
    sections: list[tuple[str, str]] = []

    summary = {"run folder": run_dir.name, "step": run.step, "process": getattr(run.process, "name", run.config["process"]["name"]),
               "parameterization": run.param.name, "data": run.config["data"]["name"],
               "example shape": "x".join(map(str, run.shape)),
               "parameters": f"{sum(p.numel() for p in run.net.parameters()):,}"}
    sections.append(("Run", _table([{"": k, "value": v} for k, v in summary.items()], ["", "value"])))

    records = read_metrics(run_dir / "metrics.jsonl")
    plot = plot_training(records)
    last = records[-1] if records else {}
    body = _img(plot, "training curves") if plot else '<p class="note">no metrics.jsonl records</p>'
    if last:
        body += _table([{k: v for k, v in last.items() if k in TRAINING_KEYS}], [k for k in TRAINING_KEYS if k in last])
    sections.append(("Training", body))

    keys = evaluation_keys(records)
    if keys:
        evals = [r for r in records if any(k in r for k in keys)]
        sections.append(("Evaluation during training",
                         _img(plot_evaluation(records, keys), "evaluation metrics")
                         + _table(evals, ["step", *keys])))

    grids = sample_grids(run_dir)
    if grids:
        figs = "".join(f"<figure>{_img(data, name)}<figcaption>{html.escape(name)}</figcaption></figure>"
                       for name, data in grids)
        sections.append(("Samples across training", f'<div class="grids">{figs}</div>'))

    texts = sorted((run_dir / "samples").glob("step_*.txt"))  # token runs: the decoded samples, latest
    if texts:
        sections.append(("Text samples", f'<p class="note">{html.escape(texts[-1].name)}</p>'
                         f"<pre>{html.escape(texts[-1].read_text(encoding='utf-8', errors='replace')[:4000])}</pre>"))

    if compare:
        grid = schedule or "each sampler's default"
        rows, floor = bench.run_comparison(run, list(compare), list(nfe), num=num, seed=seed, device=device, schedule=schedule)
        floor_note = f"; two sets of {num} training examples are {floor:.4g} apart (the noise floor)" if math.isfinite(floor) else ""
        note = (f'<p class="note">Sliced W2 (256 projections) between {num} samples and {num} training examples'
                f"{floor_note}. Same prior draw for every sampler (seed {seed}); time grid: "
                f"{grid}; EMA weights: {ema}.</p>")
        sections.append(("Sampler comparison", _img(plot_comparison(rows, floor), "sampler comparison") + note
                         + _table(rows, ["sampler", "budget", "steps", "nfe", "sliced_w2"])))

    for name, rec in result_files(results):
        sections.append((f"Results: {name}", _table([{"": k, "value": v} for k, v in rec.items()], ["", "value"])))

    lik = likelihood_results(run_dir)
    if lik:
        cols = list(dict.fromkeys(k for _, r in lik for k in r))
        sections.append(("Likelihood", _table([{"file": f, **r} for f, r in lik], ["file", *cols])))

    cfg = html.escape(json.dumps(run.config, indent=2))
    info = html.escape(json.dumps(run.info, indent=2))
    sections.append(("Config", f"<pre>{cfg}</pre><h3>Data</h3><pre>{info}</pre>"))
    env = environment(device)
    sections.append(("Environment", _table([{"": k, "value": v} for k, v in env.items()], ["", "value"])))
    return render(sections, f"scorediff run report: {run_dir.name}")


def default_output(run_dir: str | Path) -> Path:
    """``<run>-report.html`` beside the run folder (never inside it)."""
    run_dir = Path(run_dir).resolve()
    return run_dir.with_name(run_dir.name + "-report.html")


def write_report(run_dir: str | Path, out: str | Path | None = None, **options) -> Path:
    """Build the report of ``run_dir`` and write it to ``out`` (default ``default_output``); returns the path.

    ``out`` inside the run folder is refused: the report never modifies a run.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run folder (no config.json)")
    out = Path(out) if out is not None else default_output(run_dir)
    if out.resolve().is_relative_to(run_dir.resolve()):
        raise ValueError(f"--out {str(out)!r} lies inside the run folder; the report never writes into a run")
    page = build_report(run_dir, **options)
    return write_atomic(out, page.encode("utf-8"))


__all__ = [
    "CSP", "MAX_GRIDS", "STYLE", "TRAINING_KEYS", "build_report", "compare_samplers", "default_output", "environment",
    "evaluation_keys", "likelihood_results", "plot_comparison", "plot_evaluation", "plot_training", "read_metrics",
    "render", "result_files", "sample_grids", "write_report",
]
