"""One writer per run folder: a lock file ``.lock`` holding the writer's pid and host name.

The trainer takes the lock before it touches a run folder and drops it when it ends; so does
``scorediff fit-schedule``, the one other writer (it adds a fitted time grid under ``schedules/``). The lock
records what its holder does (``purpose``), so that a refused writer is told. The file is created
complete or not at all (written to a private temp file, then hard-linked into place, which fails if a lock
exists), so a reader never sees a half-written lock. A lock whose process no longer exists on this host
(a trainer killed with SIGKILL, a machine that rebooted) is stale and is taken over; a lock held by a
live process, or by another host (whose processes cannot be checked from here), refuses a second writer.
Readers (``load_run``, ``scorediff sample`` / ``likelihood`` / ``bench``) never take the lock and never
write to a run folder; ``live_writer`` tells whether one is training it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

LOCK = ".lock"


@dataclass(frozen=True)
class LockInfo:
    pid: int
    host: str
    started: float  # time.time() when the lock was taken
    purpose: str = "trained"  # what the holder does, in "run folder ... is being <purpose> by process ..."

    @property
    def alive(self) -> bool:
        """False only when the holder is known to be gone: same host and no such process."""
        if self.host != socket.gethostname():
            return True  # cannot check another machine's processes: assume the writer lives
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True


def read_lock(run_dir: str | Path) -> LockInfo | None:
    """The lock's holder, or None when there is no lock; an unreadable lock reads as a dead holder."""
    path = Path(run_dir) / LOCK
    try:
        data = json.loads(path.read_text())
        return LockInfo(int(data["pid"]), str(data["host"]), float(data["started"]),
                        str(data.get("purpose", "trained")))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, OSError):
        # The lock is always written whole (see the module docstring), so garbage is not a writer's.
        return LockInfo(-1, socket.gethostname(), 0.0)


def live_writer(run_dir: str | Path) -> LockInfo | None:
    """The live process that holds the run folder's writer lock, or None."""
    info = read_lock(run_dir)
    return info if info is not None and (info.pid >= 0 and info.alive) else None


class RunLockedError(ValueError):
    """Another live process trains this run folder."""


class RunLock:
    """The writer lock of one run folder: ``acquire()`` (creating the folder) and ``release()``.

    ``purpose`` says what the writer does, for the message that refuses another writer ("trained", or e.g.
    "written by scorediff fit-schedule").
    """

    def __init__(self, run_dir: str | Path, purpose: str = "trained"):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.info = LockInfo(os.getpid(), socket.gethostname(), time.time(), purpose)
        self.held = False

    def acquire(self) -> RunLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.run_dir / f"{LOCK}.{self.info.pid}.tmp"
            tmp.write_text(json.dumps({"pid": self.info.pid, "host": self.info.host, "started": self.info.started,
                                       "purpose": self.info.purpose}))
        except OSError as e:
            raise OSError(f"cannot write to run folder {str(self.run_dir)!r}: {e.strerror or e}") from None
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)  # atomic: fails if a lock exists
                    self.held = True
                    return self
                except FileExistsError:
                    holder = read_lock(self.run_dir)
                    if holder is not None and holder.pid >= 0 and holder.alive:
                        raise RunLockedError(
                            f"run folder {str(self.run_dir)!r} is being {holder.purpose} by process {holder.pid} on host "
                            f"{holder.host!r} (lock file {str(self.path)!r}); wait for it to end or stop it first"
                        ) from None
                    try:  # stale: its writer is gone
                        self.path.unlink()
                    except FileNotFoundError:
                        pass
            raise RunLockedError(f"could not take the writer lock {str(self.path)!r}: other processes keep taking it")
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = read_lock(self.run_dir)
        if holder is not None and (holder.pid, holder.host) == (self.info.pid, self.info.host):
            self.path.unlink(missing_ok=True)
