"""Pinning a run's data: absolute paths and a fingerprint of the files a data set reads.

A run folder records where its data came from (``config.json``, paths made absolute when the run is created,
``absolute_paths``) and what was there (``info.json`` ``data_fingerprint``, ``fingerprint``): per path-valued
option, the number of files, their total bytes and a SHA-256 over the relative names and sizes (a folder), or over
the bytes (a single file: an array, an IDX file). A resume or an evaluation compares the data it finds with the
record (``difference``) and stops, in one line naming the option, the path and what changed, unless told to accept
it. Built-in data (toy sets, scikit-learn's digits) are generated from their options and have no fingerprint.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

# dataset options that name files or folders (folder, npy, mnist)
PATH_OPTIONS = ("path", "images", "labels")


def absolute_paths(options: dict) -> dict:
    """``options`` with every path-valued option (``PATH_OPTIONS``) made absolute (``~`` expanded)."""
    out = dict(options)
    for key in PATH_OPTIONS:
        if isinstance(out.get(key), str):
            out[key] = str(Path(out[key]).expanduser().resolve())
    return out


def _describe(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    if path.is_dir():
        count = size = 0
        for p in sorted(path.rglob("*")):
            if p.is_file():
                n = p.stat().st_size
                count, size = count + 1, size + n
                h.update(f"{p.relative_to(path).as_posix()}\0{n}\n".encode())
        return {"files": count, "bytes": size, "sha256": h.hexdigest()}
    if path.is_file():
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return {"files": 1, "bytes": path.stat().st_size, "sha256": h.hexdigest()}
    return {"files": 0, "bytes": 0, "sha256": None}


def fingerprint(options: dict) -> dict[str, dict[str, Any]]:
    """``{option: {"path", "files", "bytes", "sha256"}}`` for each path-valued option of a data set ({} if none)."""
    out = {}
    for key in PATH_OPTIONS:
        value = options.get(key)
        if isinstance(value, str):
            path = Path(value).expanduser()
            out[key] = {"path": str(path.resolve()), **_describe(path)}
    return out


def _size(n: int) -> str:
    return f"{n / 1e6:.3g} MB" if n >= 1e5 else f"{n} bytes"


def difference(recorded: dict | None, now: dict) -> str | None:
    """One phrase naming what changed between a recorded fingerprint and the current one, or None if nothing."""
    if not isinstance(recorded, dict):
        return None  # a run created before fingerprints: nothing to compare
    for key in sorted(set(recorded) | set(now)):
        old, new = recorded.get(key), now.get(key)
        if old == new:
            continue
        if not isinstance(old, dict) or not isinstance(new, dict):
            return f"data.options.{key} was {old and old.get('path')!r}, is now {new and new.get('path')!r}"
        where = f"data.options.{key} {new.get('path')!r}"
        if new.get("path") != old.get("path"):
            return f"data.options.{key} was {old.get('path')!r}, is now {new.get('path')!r}"
        if new["files"] == 0:
            return f"{where} no longer exists"
        if (old.get("files"), old.get("bytes")) != (new["files"], new["bytes"]):
            return (f"{where} now holds {new['files']} file(s), {_size(new['bytes'])}; the run recorded "
                    f"{old.get('files')} file(s), {_size(int(old.get('bytes') or 0))}")
        what = "its files' names or sizes" if new["files"] > 1 or os.path.isdir(new["path"]) else "its bytes"
        return f"{where} holds the same number of files and bytes as recorded, but {what} changed"
    return None


__all__ = ["PATH_OPTIONS", "absolute_paths", "difference", "fingerprint"]
