"""Reading what a run folder holds for its report: the metrics log, sample grids, likelihood and result files, and
the environment the report is made in. Reads only."""

from __future__ import annotations

import io
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy
import torch

from .. import __version__

# metrics.jsonl keys the training loop itself writes; any other numeric key is an evaluation metric
TRAINING_KEYS = ("step", "loss", "lr", "grad_norm", "steps_per_s", "examples_per_s")
MAX_GRIDS = 8


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def read_metrics(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (empty if the file is absent).

    The log is not essential to the page: lines that are not JSON records with a 'step' (a damaged or binary
    file) are skipped, with one warning naming the file, the first such line and their number.
    """
    if not path.exists():
        return []
    records, bad = [], []
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:  # not JSON, or not UTF-8
            rec = None
        if not isinstance(rec, dict) or "step" not in rec:
            bad.append(n)
            continue
        records.append(rec)
    if bad:
        _warn(f"{str(path)!r}: skipped {len(bad)} line(s) that are not JSON records with a 'step' (first: line "
              f"{bad[0]})")
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
        try:
            data = p.read_bytes()
            Image.open(io.BytesIO(data)).verify()
        except Exception:  # a damaged grid is not essential to the page: skip it, say so
            _warn(f"sample grid {str(p)!r} could not be decoded as PNG; left out of the report")
            continue
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
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    return {
        "scorediff": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "numpy": numpy.__version__, "device": f"{dev} ({name})", "torch threads": str(torch.get_num_threads()),
        "platform": platform.platform(), "made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
