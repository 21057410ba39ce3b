"""What the writer of a run folder checks and repairs before it resumes, and how a run pins its data.

- ``pin_paths``: a config's file paths (data options, ``autoencoder.path``) made absolute, so that a resume or an
  evaluation from another directory reads the same files (``scorediff.data.fingerprint``).
- ``check_data``: the data a resume or an evaluation finds against the fingerprint recorded in ``info.json``; a
  difference is one ``DataChangedError`` line naming the option, the path and what changed.
- ``refuse_links``: a symbolic link planted where the writer writes is refused before anything is written.
- ``repair``: the artefacts the writer owns, made whole again: temp files of killed writes removed, a damaged
  ``info.json`` rewritten from the data, a damaged ``history.json`` set aside, damaged sample grids redrawn (the
  checkpoint's step) or removed (earlier steps, whose weights are gone). Checkpoint files are never touched here
  (``checkpoint.recover`` and the resume's checks own them).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import check_no_symlink, sweep_temp
from ..data.fingerprint import absolute_paths, difference, fingerprint
from . import checkpoint as ckpt

ACCEPT_FLAG = "--accept-data-change"


class DataChangedError(ValueError):
    """The data of a run differ from the data it was created with."""


def pin_paths(cfg: dict) -> dict:
    """A copy of the resolved config ``cfg`` with its file paths absolute (data options, autoencoder.path)."""
    cfg = copy.deepcopy(cfg)
    cfg["data"]["options"] = absolute_paths(cfg["data"].get("options") or {})
    ae = cfg.get("autoencoder") or {}
    if isinstance(ae.get("path"), str):
        ae["path"] = str(Path(ae["path"]).expanduser().resolve())
    return cfg


def recorded_info(run_dir: Path) -> dict | None:
    """``info.json`` as a dict, or None when it is missing or damaged."""
    try:
        info = ckpt.read_json(run_dir / "info.json")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("data"), dict) else None


def check_data(run_dir: Path, data_options: dict, accept: bool, what: str) -> tuple[dict, str | None]:
    """(the data's fingerprint now, the difference to the recorded one or None).

    Raises ``DataChangedError`` on a difference unless ``accept``; ``what`` names the command in the message.
    """
    now = fingerprint(data_options)
    info = recorded_info(run_dir)
    changed = difference(info.get("data_fingerprint") if info else None, now)
    if changed and not accept:
        raise DataChangedError(f"{what}: the data of run {str(run_dir)!r} changed since the run was created: "
                               f"{changed}; pass {ACCEPT_FLAG} to use them anyway")
    return now, changed


# what the writer of a run folder writes: a planted symbolic link at any of them is refused before anything is written
OWNED = ("config.json", "info.json", "history.json", "metrics.jsonl", "loss.png", "samples", "schedules",
         "tensorboard", ckpt.TMP, *ckpt.CHECKPOINT_FILES)


def refuse_links(run_dir: Path) -> None:
    """``SymlinkError`` (one line) if a file or folder the writer owns is a symbolic link (``OWNED``)."""
    for name in OWNED:
        check_no_symlink(run_dir / name, run_dir)


def _grid_ok(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # PIL raises several types for truncated or garbage files
        return False


def repair(run_dir: Path, info_record: dict, step: int, warn: Callable[[str], None]) -> bool:
    """Make the writer-owned artefacts of ``run_dir`` whole (see the module docstring); each repair is one
    ``warn`` line. Returns True when the sample grid of ``step`` was damaged and must be redrawn."""
    for folder in (run_dir, run_dir / "samples", run_dir / "schedules"):
        sweep_temp(folder)
    if recorded_info(run_dir) is None:
        ckpt.write_json_atomic(run_dir / "info.json", info_record, root=run_dir)
        warn(f"{str(run_dir / 'info.json')!r} was missing or damaged; rewritten from the data")
    history = run_dir / "history.json"
    if history.exists() and not history.is_symlink():
        try:
            ok = isinstance(json.loads(history.read_bytes()), list)
        except ValueError:
            ok = False
        if not ok:
            aside = history.with_name("history.json.damaged")
            history.replace(aside)
            warn(f"{str(history)!r} was damaged; set aside as {aside.name}, a new history starts")
    redraw = False
    samples = run_dir / "samples"
    if samples.is_dir() and not samples.is_symlink():
        for grid in sorted(samples.glob("step_*.png")):
            if grid.is_symlink() or _grid_ok(grid):
                continue
            m = re.fullmatch(r"step_(\d+)\.png", grid.name)
            if m and int(m.group(1)) == step:
                redraw = True
                warn(f"sample grid {str(grid)!r} was damaged; redrawn from the checkpoint of step {step}")
            else:
                warn(f"sample grid {str(grid)!r} was damaged and its step's weights are gone; removed")
            grid.unlink()
    loss = run_dir / "loss.png"
    if loss.is_file() and not loss.is_symlink() and not _grid_ok(loss):
        loss.unlink()
        warn(f"{str(loss)!r} was damaged; removed (drawn again when the run finishes)")
    return redraw


def info_record(info: dict, parameters: int, world_size: int, data_fingerprint: dict[str, Any]) -> dict:
    """The content of ``info.json``."""
    return {"data": info, "parameters": parameters, "world_size": world_size, "data_fingerprint": data_fingerprint}
