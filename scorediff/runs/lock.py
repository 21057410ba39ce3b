"""One writer per run folder: an ``fcntl.flock`` on the lock file ``.lock``, which names its holder.

The trainer takes the lock before it touches a run folder and drops it when it ends; so does
``scorediff fit-schedule``, the one other writer (it adds a fitted time grid under ``schedules/``).

The kernel decides who holds the lock: a writer opens ``.lock`` (creating it if needed, never through a
symlink) and takes an exclusive ``flock`` on it without waiting. The file is never unlinked, so there is no
window in which two processes lock two different files, and a holder that dies in any way (SIGKILL, a
crash, a reboot) drops its lock with its last file descriptor: nothing stale is ever taken over by
guessing from a pid. (The race this replaces: a lock file naming a dead pid was unlinked by whoever
read it, which could be the lock another process had just taken.)

The holder writes its pid, host name, start time and ``purpose`` (what it does: "trained", or e.g.
"written by scorediff fit-schedule") into the file, only for messages: a refused writer is told who holds
the folder. It empties the file when it releases the lock, so an empty file (or none) means nobody writes.
A file naming a process on another host while no lock is held is refused all the same: ``flock`` need not
reach across a network file system, so that process may still be writing (if it is gone, delete ``.lock``
by hand). Readers (``load_run``, ``scorediff sample`` / ``likelihood`` / ``bench``) never take the lock and
never write to a run folder; ``live_writer`` tells whether one is training it.
"""

from __future__ import annotations

import errno
import fcntl
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
        """False only when the holder is known to be gone: same host and no such process (or no valid pid)."""
        if self.host != socket.gethostname():
            return self.pid > 0  # cannot check another machine's processes: assume a named writer lives
        if self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True

    def describe(self) -> str:
        """The holder as a message names it: a process on a host, or why the file names no process."""
        here = self.host == socket.gethostname()
        if self.pid <= 0:
            return f"a process the lock file does not name (it holds pid {self.pid})"
        if here and self.pid == 1 and os.getpid() != 1:
            return f"a process the lock file does not name (it holds pid 1, the init process, on host {self.host!r})"
        if not self.alive:
            return (f"process {self.pid} on host {self.host!r}, which no longer exists (a child process it started "
                    "still holds the lock)")
        return f"process {self.pid} on host {self.host!r}"


def _parse(text: str) -> LockInfo | None:
    """The holder named by a lock file's text; None for an empty (released) file; pid -1 for garbage."""
    if not text.strip():
        return None
    try:
        data = json.loads(text)
        return LockInfo(int(data["pid"]), str(data["host"]), float(data["started"]), str(data.get("purpose", "trained")))
    except (ValueError, KeyError, TypeError, OverflowError):
        return LockInfo(-1, socket.gethostname(), 0.0)


def read_lock(run_dir: str | Path) -> LockInfo | None:
    """The holder the lock file names, or None when there is no lock file or it is empty (released).

    The name only: whether the lock is held is the kernel's business (``RunLock.acquire``). A file that is
    not a holder's record reads as pid -1.
    """
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:  # a symlink or an unreadable file: not a writer's record
        return LockInfo(-1, socket.gethostname(), 0.0)
    try:
        text = os.read(fd, 1 << 16).decode("utf-8", "replace")
    finally:
        os.close(fd)
    return _parse(text)


def live_writer(run_dir: str | Path) -> LockInfo | None:
    """The live process named as the run folder's writer, or None (advisory: for readers' messages)."""
    info = read_lock(run_dir)
    return info if info is not None and info.alive else None


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
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _refused(self, holder: LockInfo | None) -> RunLockedError:
        who = holder.describe() if holder is not None else "another process (its lock file is being written)"
        purpose = holder.purpose if holder is not None else "trained"
        return RunLockedError(f"run folder {str(self.run_dir)!r} is being {purpose} by {who} (lock file "
                              f"{str(self.path)!r}); wait for it to end or stop it first")

    def acquire(self) -> RunLock:
        """Take the lock now or raise ``RunLockedError`` naming the holder (never waits)."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(f"cannot write to run folder {str(self.run_dir)!r}: {e.strerror or e}") from None
        for _ in range(10):  # more than one pass only if someone deletes .lock between our open and our flock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise OSError(f"lock file {str(self.path)!r} is a symbolic link; a run folder's writer never "
                                  "writes through one (remove it)") from None
                raise OSError(f"cannot write to run folder {str(self.run_dir)!r}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise OSError(f"cannot lock {str(self.path)!r}: {e.strerror or e}") from None
                raise self._refused(self._read_holder()) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # we locked a file that was deleted (by hand) meanwhile: lock the one there now
                os.close(fd)
                continue
            try:
                self._claim(fd)
            except BaseException:
                os.close(fd)  # the kernel drops the flock with the descriptor
                raise
            self._fd = fd
            return self
        raise RunLockedError(f"could not take the writer lock {str(self.path)!r}: it keeps being deleted")

    def _read_holder(self) -> LockInfo | None:
        """The refusing holder's record; a holder that has just locked may not have written it yet."""
        for _ in range(20):
            holder = read_lock(self.run_dir)
            if holder is not None and holder.pid >= 0:
                return holder
            time.sleep(0.005)
        return holder

    def _claim(self, fd: int) -> None:
        """Under the flock: refuse a record of another host's writer, then write ours."""
        text = os.pread(fd, 1 << 16, 0).decode("utf-8", "replace")
        previous = _parse(text)
        if previous is not None and previous.host != socket.gethostname() and previous.pid > 0:
            raise self._refused(previous)
        record = json.dumps({"pid": self.info.pid, "host": self.info.host, "started": self.info.started,
                             "purpose": self.info.purpose}).encode()
        try:
            os.ftruncate(fd, 0)
            if os.pwrite(fd, record, 0) != len(record):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:
            try:
                os.ftruncate(fd, 0)  # no half record left behind
            except OSError:
                pass
            raise OSError(f"cannot write the lock file {str(self.path)!r}: {e.strerror or e}") from None

    def release(self) -> None:
        """Empty the record, then drop the lock (closing the descriptor drops the flock)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass  # a stale record names a process that holds no lock: the next writer takes over regardless
        finally:
            os.close(fd)
