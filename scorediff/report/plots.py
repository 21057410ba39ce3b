"""The report's plots (matplotlib, returned as PNG bytes): training curves, evaluation metrics over training, and
the sampler comparison."""

from __future__ import annotations

import io
import math

from ..plotting.figures import _figure
from .artefacts import TRAINING_KEYS


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def plot_training(records: list[dict]) -> bytes | None:
    """Loss (log scale where positive), learning rate and gradient norm against the step."""
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
