"""Files written whole, and never through a symlink planted in a run folder.

Every artefact a run folder holds (sample grids, plots, ``info.json``, ``history.json``, fitted grids, feature
caches, the checkpoint's files) is written by ``write_atomic``: the bytes go to a fresh temp file beside the
target (created with ``O_EXCL | O_NOFOLLOW``, so it can be neither an existing file nor a link), are flushed and
fsynced, and the temp file is renamed over the target with ``os.replace``. A kill at any instant leaves the old
file or the new one, never a truncated one; a failed write (a full disk) removes the temp file and raises one
``OSError`` line naming the target and the cause.

With ``root`` (the run folder) the writer also refuses, in one line (``SymlinkError``), to write through a
symbolic link anywhere below ``root``: the target, or a folder on the way to it (``samples -> /elsewhere``).
``root`` itself may be a link (a user's ``runs -> /big/disk``). Appends (``metrics.jsonl``) open with
``O_NOFOLLOW`` after the same check. Outside a run folder (``--out`` files the user names) links are followed
as usual; the rename still never writes into a link's target.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".tmp"


class SymlinkError(OSError):
    """A writer met a symbolic link inside the run folder it writes."""


def fsync_dir(path: str | Path) -> None:
    """Make a rename in ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_no_symlink(path: str | Path, root: str | Path | None) -> None:
    """Raise ``SymlinkError`` if ``path`` or a folder between ``root`` and it is a symbolic link (no-op without root)."""
    if root is None:
        return
    path, root = Path(path), Path(root)
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise ValueError(f"{str(path)!r} lies outside the run folder {str(root)!r}") from None
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            try:
                target = f" (to {os.readlink(current)!r})"
            except OSError:
                target = ""
            raise SymlinkError(f"{str(current)!r} is a symbolic link{target} inside the run folder {str(root)!r}; "
                               "a writer never writes through one (remove the link)")


def ensure_dir(path: str | Path, root: str | Path | None = None) -> Path:
    """``mkdir -p path``, refusing symbolic links below ``root``; an error is one line naming the folder."""
    path = Path(path)
    check_no_symlink(path, root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create the folder {str(path)!r}: {e.strerror or e}") from None
    return path


def temp_name(path: Path) -> Path:
    """The temp file of a write of ``path``: hidden, beside it, unique per process (swept by ``sweep_temp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def write_atomic(path: str | Path, data: bytes | str | Callable[[IO[bytes]], None], *,
                 root: str | Path | None = None, fsync: bool = True, make_parent: bool = True) -> Path:
    """Write ``data`` (bytes, text, or a function writing to a binary file object) to ``path`` whole.

    See the module docstring: temp file + fsync + ``os.replace``; ``root`` = the run folder whose links are
    refused. Returns ``path``.
    """
    path = Path(path)
    check_no_symlink(path, root)
    if make_parent:
        ensure_dir(path.parent, root)
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:  # left by a killed write of this pid's predecessor: ours to replace
        os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise OSError(f"could not write {str(path)!r}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        check_no_symlink(path, root)  # a link planted while we wrote is refused, not replaced
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, SymlinkError):  # a full disk, a read-only folder
            raise OSError(f"could not write {str(path)!r}: {e.strerror or e}") from None
        raise
    if fsync:
        fsync_dir(path.parent)
    return path


def open_append(path: str | Path, root: str | Path | None = None) -> IO[str]:
    """A text file opened for appending, never through a symbolic link below ``root`` (``O_NOFOLLOW``)."""
    path = Path(path)
    check_no_symlink(path, root)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if path.is_symlink():
            raise SymlinkError(f"{str(path)!r} is a symbolic link inside the run folder; a writer never writes "
                               "through one (remove the link)") from None
        raise OSError(f"could not write {str(path)!r}: {e.strerror or e}") from None
    return os.fdopen(fd, "a")


def sweep_temp(folder: str | Path) -> list[Path]:
    """Remove the temp files killed writes left in ``folder`` (the writer of the folder only); returns them."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return removed
    for p in folder.iterdir():
        if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and (p.is_file() or p.is_symlink()):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
