"""Run-folder checkpoints: safetensors + JSON only (loading never unpickles), saved atomically.

A checkpoint is a set of files (``model.safetensors``, ``ema.safetensors``, ``state.safetensors``,
``state.json``) that must change together. Saving is a tiny journal: every file is written and
fsynced into ``.ckpt-tmp/``, then a ``COMPLETE`` marker is written, then the files are moved into
place with ``os.replace``. A crash before the marker leaves the previous checkpoint untouched (the
temp folder is discarded when the writer next starts); a crash after it is rolled forward then.

Only the writer (the holder of ``lock.RunLock``) recovers. Readers never modify a run folder: they read
the last committed version of a file, which is the one in ``.ckpt-tmp/`` while a committed save is being
moved into place, else the one in the folder (``read_committed``). ``os.replace`` is atomic, so each file
read is one whole version.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..atomic import check_no_symlink, fsync_dir, write_atomic

TMP = ".ckpt-tmp"
MARKER = "COMPLETE"
CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "state.safetensors", "state.json")


def _fsync_dir(path: Path) -> None:
    fsync_dir(path)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str | Path, obj: Any, root: str | Path | None = None) -> None:
    """Write JSON to ``path`` whole (``scorediff.atomic.write_atomic``), never through a symlink below ``root``
    (default: the file's folder, so the file itself is checked)."""
    path = Path(path)
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode(), root=path.parent if root is None else root)


def plain_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; a CPU clone is always safe to write
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def save_files(run_dir: str | Path, tensors: dict[str, dict[str, torch.Tensor]], jsons: dict[str, Any],
               metadata: dict[str, str] | None = None) -> None:
    """Atomically replace a set of files in ``run_dir``: ``tensors`` by safetensors file name, ``jsons`` by name.

    A failed write (read-only folder, full disk) raises ``OSError`` naming the file and the cause and leaves
    the previous checkpoint in place.
    """
    run_dir = Path(run_dir)
    tmp = run_dir / TMP
    current = tmp
    check_no_symlink(tmp, run_dir)  # a planted .ckpt-tmp link would move an outside folder's files into the run
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for name, tdict in tensors.items():
            current = tmp / name
            save_file(plain_tensors(tdict), str(current), metadata=metadata)
            with open(current, "rb") as f:
                os.fsync(f.fileno())
        for name, obj in jsons.items():
            current = tmp / name
            _write_bytes(current, (json.dumps(obj, indent=2) + "\n").encode())
        _fsync_dir(tmp)
        current = tmp / MARKER
        _write_bytes(current, b"")  # from here on the new checkpoint is the valid one
        _fsync_dir(tmp)
    except Exception as e:  # OSError, or safetensors' own error type for the same causes
        shutil.rmtree(tmp, ignore_errors=True)
        cause = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise OSError(f"could not write the checkpoint file {str(current)!r}: {cause}; "
                      "the previous checkpoint is kept") from None
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
    """Finish or discard an interrupted save (see the module docstring); only the lock holder calls this."""
    tmp = Path(run_dir) / TMP
    check_no_symlink(tmp, run_dir)
    if not tmp.exists():
        return
    if (tmp / MARKER).exists():
        _commit(Path(run_dir))
    else:
        shutil.rmtree(tmp)


def missing_files(run_dir: str | Path) -> list[str]:
    """The checkpoint files absent from ``run_dir`` (call ``recover`` first, as the writer)."""
    return [f for f in CHECKPOINT_FILES if not (Path(run_dir) / f).exists()]


def read_committed(run_dir: str | Path, name: str) -> bytes:
    """The last committed version of a run file, without modifying the folder (for readers).

    While a committed save is being moved into place, a file still in ``.ckpt-tmp/`` is the committed one;
    if it moves between our look and our read, the folder's copy is then the same version.
    """
    run_dir = Path(run_dir)
    tmp = run_dir / TMP
    if not tmp.is_symlink() and (tmp / MARKER).exists():  # a planted link is no save of ours
        try:
            return (tmp / name).read_bytes()
        except FileNotFoundError:
            pass
    try:
        return (run_dir / name).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(run_dir / name)!r} is missing") from None


def parse_tensors(data: bytes, name: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of safetensors bytes; bad bytes raise one line naming ``name``."""
    from safetensors.torch import load

    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8: 8 + n])
        return load(data), dict(header.get("__metadata__") or {})
    except Exception as e:  # struct, JSON, or safetensors' own error on truncated / garbage bytes
        raise ValueError(f"{str(name)!r} is not a readable safetensors file ({e})") from None


def drop_log_lines_after(path: str | Path, step: int, warn: Callable[[str], None] | None = None) -> int:
    """Atomically drop the lines of a JSONL metrics log past ``step`` (or unreadable: cut by a kill, damaged).

    A resumed run repeats the steps after its checkpoint; without this their old records would stay in
    the log and the loss curve would zig-zag. ``warn`` is told (one line naming the file) when lines were
    unreadable. Returns the number of lines dropped.
    """
    path = Path(path)
    check_no_symlink(path, path.parent)
    if not path.exists():
        return 0
    kept, dropped, unreadable = [], 0, 0
    for raw in path.read_bytes().splitlines():
        try:
            line = raw.decode()
            ok = int(json.loads(line)["step"]) <= step
        except (ValueError, KeyError, TypeError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            ok = False
            unreadable += 1
        if ok:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_atomic(path, "".join(line + "\n" for line in kept).encode(), root=path.parent)
    if unreadable and warn is not None:
        warn(f"{str(path)!r}: dropped {unreadable} unreadable line(s) (not JSON records with a 'step'); "
             f"{len(kept)} kept")
    return dropped


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
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(path)!r} is missing") from None
    return parse_tensors(data, path)[0]


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a safetensors state dict into ``module`` (strict: every key and shape must match)."""
    load_state(module, read_tensors(path), path)


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load the tensors read from ``path`` into ``module``; a mismatch raises one line naming the file."""
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
