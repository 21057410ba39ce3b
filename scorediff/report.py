"""A run report: one self-contained HTML page to look at a training run.

``write_report(run, out=None, compare=..., nfe=...)`` reads a run folder written by ``scorediff train``
and writes one HTML file with everything embedded (PNG images as base64 ``data:`` URIs, plots drawn
by matplotlib, no scripts, no external resource: the page's Content-Security-Policy forbids any),
so it can be mailed or archived and opened offline. Sections:

- the resolved config and the data description (``config.json``, ``info.json``);
- training curves from ``metrics.jsonl``: loss (log scale), learning rate, gradient norm;
- evaluation metrics over training: every other numeric key logged in ``metrics.jsonl`` (e.g. FID);
- sample grids across training (``samples/step_*.png``);
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

import base64
import html
import io
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .processes import Process

if TYPE_CHECKING:
    from .training.run import Run

# metrics.jsonl keys the training loop itself writes; any other numeric key is an evaluation metric
TRAINING_KEYS = ("step", "loss", "lr", "grad_norm", "steps_per_s", "examples_per_s")
MAX_GRIDS = 8
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# -- reading the run ------------------------------------------------------------------------------------------


def read_metrics(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (empty if the file is absent); a bad line is a ValueError naming it."""
    if not path.exists():
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{str(path)!r} line {n} is not JSON: {line[:60]!r}") from None
        if not isinstance(rec, dict) or "step" not in rec:
            raise ValueError(f"{str(path)!r} line {n}: expected a JSON object with a 'step', got {line[:60]!r}")
        records.append(rec)
    return records


def sample_grids(run_dir: Path, limit: int = MAX_GRIDS) -> list[tuple[str, bytes]]:
    """(name, PNG bytes) of the run's sample grids, at most ``limit`` spread evenly over training (last kept)."""
    from PIL import Image

    paths = sorted((run_dir / "samples").glob("step_*.png"))
    if len(paths) > limit:
        idx = sorted({round(i * (len(paths) - 1) / (limit - 1)) for i in range(limit)})
        paths = [paths[i] for i in idx]
    out = []
    for p in paths:
        data = p.read_bytes()
        try:
            Image.open(io.BytesIO(data)).verify()
        except Exception:
            raise ValueError(f"image {str(p)!r} could not be decoded as PNG") from None
        out.append((p.stem, data))
    return out


def _scalars(rec: dict) -> dict:
    """The scalar entries of a results record (per-example lists and nested tables left out)."""
    return {k: v for k, v in rec.items() if isinstance(v, (int, float, str, bool)) or v is None}


def likelihood_results(run_dir: Path) -> list[tuple[str, dict]]:
    """JSON files at the run folder's top level written by ``scorediff likelihood --json`` (they hold logp_nats)."""
    found = []
    for p in sorted(run_dir.glob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # not ours to judge: the report only shows what it recognises
        if isinstance(rec, dict) and "logp_nats" in rec:
            found.append((p.name, _scalars(rec)))
    return found


def result_files(paths: Sequence[str | Path]) -> list[tuple[str, dict]]:
    """JSON results the user names (``scorediff eval --out``, ``scorediff likelihood --json``, ...): their scalars."""
    found = []
    for p in map(Path, paths):
        if not p.is_file():
            raise FileNotFoundError(f"results file {str(p)!r} not found")
        try:
            rec = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"results file {str(p)!r} is not JSON") from None
        if not isinstance(rec, dict):
            raise ValueError(f"results file {str(p)!r}: expected a JSON object, got {type(rec).__name__}")
        found.append((p.name, _scalars(rec)))
    return found


def environment(device: str = "cpu") -> dict[str, str]:
    """Where the report (and its sampler comparison) ran."""
    import numpy

    from . import __version__

    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    return {
        "scorediff": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "numpy": numpy.__version__, "device": f"{dev} ({name})", "torch threads": str(torch.get_num_threads()),
        "platform": platform.platform(), "made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# -- the sampler comparison ------------------------------------------------------------------------------------


class _Counted:
    """A Denoiser that counts its calls (one call evaluates the model on the whole batch)."""

    def __init__(self, denoiser):
        self.denoiser, self.nfe = denoiser, 0

    def __call__(self, x, t, **cond):
        self.nfe += 1
        return self.denoiser(x, t, **cond)


def compare_samplers(
    denoiser: Callable[..., Tensor],
    process: Process,
    reference: Tensor,
    samplers: Sequence[str],
    nfes: Sequence[int],
    *,
    seed: int = 0,
    schedule: str | None = None,
    cond: dict | None = None,
    projections: int = 256,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Quality against cost: sliced W2 between samples and ``reference`` for each sampler at each NFE budget.

    A budget of N evaluations runs ``max(1, round(N / nfe_per_step))`` steps on ``schedule`` (default: each
    sampler's own default grid);
    the row records the evaluations actually made. Every sampler starts from the same prior draw (``seed``)
    and the distance uses the same projections, so the rows differ by the solver only.
    """
    from .analytic import sliced_wasserstein
    from .samplers import SAMPLERS, sample
    from .utils import unknown

    for name in samplers:
        if name not in SAMPLERS:
            raise unknown("sampler", name, SAMPLERS)
    bad = [n for n in nfes if int(n) < 1]
    if bad:
        raise ValueError(f"NFE budgets must be >= 1, got {bad}")
    shape = (reference.shape[0], *reference.shape[1:])
    x_T = process.prior_sample(shape, torch.Generator().manual_seed(seed)).to(device)
    rows = []
    for name in samplers:
        per_step = SAMPLERS[name].info.nfe_per_step
        for budget in nfes:
            steps = max(1, round(int(budget) / per_step)) if per_step and math.isfinite(per_step) else int(budget)
            counted = _Counted(denoiser)
            with torch.no_grad():
                x = sample(counted, process, x_T.clone(), sampler=name, steps=steps, seed=seed, device=device,
                           schedule=schedule, cond=cond)
            w2 = sliced_wasserstein(x.cpu(), reference.cpu(), projections, torch.Generator().manual_seed(seed))
            rows.append({"sampler": name, "budget": int(budget), "steps": steps, "nfe": counted.nfe,
                         "sliced_w2": float(w2)})
    return rows


def run_comparison(run: Run, samplers: Sequence[str], nfes: Sequence[int], num: int = 500, seed: int = 0,
                   device: str = "cpu", schedule: str | None = None) -> tuple[list[dict[str, Any]], float]:
    """``compare_samplers`` on a loaded run against ``num`` of its training examples.

    Returns the rows and the noise floor: the sliced W2 between two disjoint sets of ``num`` training
    examples (no sampler can be told apart from the data below it), or NaN when the data holds fewer
    than 2 num examples.
    """
    from . import data
    from .analytic import sliced_wasserstein

    if num < 2:
        raise ValueError(f"--num must be >= 2, got {num}")
    run.require_task("diffusion", "scorediff report --compare")
    if run.latent:
        raise ValueError(f"scorediff report --compare: run {str(run.path)!r} is a latent diffusion run; its "
                         "sampler comparison against the data is not available yet (use scorediff eval)")
    spec = run.config["data"]
    ds = data.make(spec["name"], **dict(spec.get("options", {})))
    g = torch.Generator().manual_seed(seed)
    n = len(ds)
    idx = torch.randperm(n, generator=g)[: min(n, 2 * num)]
    xs = ds.x[idx] if hasattr(ds, "x") else torch.stack([ds[int(i)][0] for i in idx])
    if tuple(xs.shape[1:]) != run.shape:
        raise ValueError(f"data {spec['name']!r} has examples of shape {tuple(xs.shape[1:])}, the run expects {run.shape}")
    reference = xs[:num].to(torch.float32)
    cond = None
    if run.class_conditional:
        cond = {"y": torch.arange(reference.shape[0], device=device) % int(run.info["num_classes"])}
    rows = compare_samplers(run.denoiser, run.process, reference, samplers, nfes, seed=seed, schedule=schedule,
                            cond=cond, device=device)
    floor = math.nan
    if xs.shape[0] >= 2 * num:
        floor = float(sliced_wasserstein(xs[num:].float(), reference, 256, torch.Generator().manual_seed(seed)))
    return rows, floor


# -- plots ---------------------------------------------------------------------------------------------------


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def plot_training(records: list[dict]) -> bytes | None:
    """Loss (log scale where positive), learning rate and gradient norm against the step."""
    from .plotting import _figure

    panels = [k for k in ("loss", "lr", "grad_norm") if _series(records, k)[0]]
    if not panels:
        return None
    fig = _figure((4.2 * len(panels), 3.2))
    for i, key in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        steps, vals = _series(records, key)
        ax.plot(steps, vals, lw=1.2)
        if key != "lr" and min(vals) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title({"loss": "training loss", "lr": "learning rate", "grad_norm": "gradient norm"}[key])
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def evaluation_keys(records: list[dict]) -> list[str]:
    """Numeric keys of metrics.jsonl beyond the training loop's own: evaluations logged during training."""
    keys = []
    for r in records:
        for k, v in r.items():
            if k not in TRAINING_KEYS and k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(k)
    return keys


def plot_evaluation(records: list[dict], keys: list[str]) -> bytes | None:
    from .plotting import _figure

    if not keys:
        return None
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = _figure((4.2 * cols, 3.2 * rows))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        steps, vals = _series(records, key)
        ax.plot(steps, vals, marker="o", ms=3, lw=1.2)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def plot_comparison(rows: list[dict], floor: float) -> bytes:
    from .plotting import _figure

    fig = _figure((6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for name in dict.fromkeys(r["sampler"] for r in rows):
        pts = [(r["nfe"], r["sliced_w2"]) for r in rows if r["sampler"] == name]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    if math.isfinite(floor):
        ax.axhline(floor, color="gray", ls="--", lw=1, label="data vs data")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model evaluations (NFE)")
    ax.set_ylabel("sliced W2 to the data")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return _png(fig)


# -- HTML ----------------------------------------------------------------------------------------------------


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
table { border-collapse: collapse; font-size: .9em; } td, th { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f0f0f0; } td { text-align: right; } td:first-child { text-align: left; }
.grids { display: flex; flex-wrap: wrap; gap: 1em; } .grids figure { margin: 0; }
.grids img { max-width: 300px; image-rendering: pixelated; } img { max-width: 100%; } .note { color: #666; font-size: .9em; }
"""


def render(sections: list[tuple[str, str]], title: str) -> str:
    """The page: a title and (heading, HTML body) sections; no script, nothing fetched."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, body in sections:
        parts.append(f"<section><h2>{html.escape(heading)}</h2>{body}</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


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
    from .training import load_run

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
                         f"<pre>{html.escape(texts[-1].read_text(encoding='utf-8')[:4000])}</pre>"))

    if compare:
        grid = schedule or "each sampler's default"
        rows, floor = run_comparison(run, list(compare), list(nfe), num=num, seed=seed, device=device, schedule=schedule)
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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
