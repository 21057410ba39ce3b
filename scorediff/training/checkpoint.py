"""Run-folder checkpoints: safetensors + JSON only (loading never unpickles), saved atomically.

A checkpoint is a set of files (``model.safetensors``, ``ema.safetensors``, ``state.safetensors``,
``state.json``) that must change together. Saving is a tiny journal: every file is written and
fsynced into ``.ckpt-tmp/``, then a ``COMPLETE`` marker is written, then the files are moved into
place with ``os.replace``. A crash before the marker leaves the previous checkpoint untouched (the
temp folder is discarded on the next load); a crash after it is rolled forward on the next load.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

TMP = ".ckpt-tmp"
MARKER = "COMPLETE"
CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "state.safetensors", "state.json")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temp file and ``os.replace`` (for single files like config.json)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    _write_bytes(tmp, (json.dumps(obj, indent=2) + "\n").encode())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def plain_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; a CPU clone is always safe to write
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def save_files(run_dir: str | Path, tensors: dict[str, dict[str, torch.Tensor]], jsons: dict[str, Any],
               metadata: dict[str, str] | None = None) -> None:
    """Atomically replace a set of files in ``run_dir``: ``tensors`` by safetensors file name, ``jsons`` by name."""
    run_dir = Path(run_dir)
    tmp = run_dir / TMP
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, tdict in tensors.items():
        save_file(plain_tensors(tdict), str(tmp / name), metadata=metadata)
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    for name, obj in jsons.items():
        _write_bytes(tmp / name, (json.dumps(obj, indent=2) + "\n").encode())
    _fsync_dir(tmp)
    _write_bytes(tmp / MARKER, b"")  # from here on the new checkpoint is the valid one
    _fsync_dir(tmp)
    _commit(run_dir)


def _commit(run_dir: Path) -> None:
    tmp = run_dir / TMP
    for entry in sorted(tmp.iterdir()):
        if entry.name != MARKER:
            os.replace(entry, run_dir / entry.name)
    _fsync_dir(run_dir)
    (tmp / MARKER).unlink()
    tmp.rmdir()


def recover(run_dir: str | Path) -> None:
    """Finish or discard an interrupted save (see the module docstring)."""
    tmp = Path(run_dir) / TMP
    if not tmp.exists():
        return
    if (tmp / MARKER).exists():
        _commit(Path(run_dir))
    else:
        shutil.rmtree(tmp)


def has_checkpoint(run_dir: str | Path) -> bool:
    recover(run_dir)
    return all((Path(run_dir) / f).exists() for f in CHECKPOINT_FILES)


# -- module and optimizer state as tensors + JSON -----------------------------------------------------


def read_json(path: str | Path) -> Any:
    """Read a run's JSON file; a missing, truncated or garbage file raises one line naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(path)!r} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e})") from None


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (never a pickle); a missing, truncated or garbage file raises one line naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} is missing")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError (or OSError) on bad bytes
        raise ValueError(f"{str(path)!r} is not a readable safetensors file ({e})") from None


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a safetensors state dict into ``module`` (strict: every key and shape must match)."""
    state = read_tensors(path)
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape mismatch: name the first tensor, not torch's 40-line listing
        first = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e))
        raise ValueError(f"weights {str(path)!r} do not fit the network ({first.rstrip('.')})") from None
    if missing or unexpected:
        raise ValueError(
            f"weights {str(path)!r} do not fit the network: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and the JSON-able rest."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, entry in sd["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in info["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = []
    for g in info["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def generator_state(g: torch.Generator) -> torch.Tensor:
    """A generator's state as a uint8 tensor (CPU), which safetensors stores as is."""
    return g.get_state().clone()
