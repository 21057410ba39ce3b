"""The writer lock under attack: processes racing over thousands of rounds while others die holding it.

Truth is counted, not assumed: each holder creates a marker file with ``O_EXCL`` while it holds the lock, so a
second simultaneous holder cannot create it and counts an overlap. Meanwhile a crasher keeps forking children
that take the lock and exit without releasing it (as a kill -9 would), leaving a lock file that names a dead
process: the state in which the old design (read the pid, unlink the file, retry) let two writers in.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import time
from pathlib import Path

import pytest

from scorediff.runs.lock import LOCK, RunLock, RunLockedError, live_writer, read_lock
from tests.test_faults import forked, wait

WORKERS, HOLDS = 4, 150  # each worker takes the lock 150 times, a thousand or more attempts in all


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def _die_holding(lock: RunLock, dead: int) -> None:
    """What a kill -9 of the holder leaves: the lock file naming a process that no longer exists, and the
    holder's file descriptors closed (the flock with them)."""
    with open(lock.path, "r+") as f:
        f.write(json.dumps({"pid": dead, "host": socket.gethostname(), "started": 0}).ljust(200))
    fd = getattr(lock, "_fd", None)
    if fd is not None:
        os.close(fd)
        lock._fd = None


def _racer(run_dir: Path, marker: Path, report: Path, go: Path, dead: int, seed: int) -> int:
    rng = random.Random(seed)
    held = overlaps = refused = 0
    while not go.exists():  # start together
        time.sleep(0.001)
    deadline = time.time() + 60
    while held + overlaps < HOLDS and time.time() < deadline:
        lock = RunLock(run_dir)
        try:
            lock.acquire()
        except RunLockedError:
            refused += 1
            time.sleep(0)  # let the holder run
            continue
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            overlaps += 1  # someone else holds the lock at the same time
        else:
            os.close(fd)
            held += 1
            time.sleep(0.0002)  # hold it a moment, as a writer would
            os.unlink(marker)
        if rng.random() < 0.3:
            _die_holding(lock, dead)
        else:
            lock.release()
    report.write_text(json.dumps({"held": held, "overlaps": overlaps, "refused": refused}))
    return 0


def test_racing_writers_never_hold_the_lock_together_even_while_holders_die(tmp_path):
    run_dir, marker, go = tmp_path / "run", tmp_path / "inside", tmp_path / "go"
    run_dir.mkdir()
    dead = _dead_pid()
    reports = [tmp_path / f"report{i}" for i in range(WORKERS)]
    pids = [forked(_racer, run_dir, marker, r, go, dead, i) for i, r in enumerate(reports)]
    go.touch()
    assert [wait(p, timeout=120) for p in pids] == [0] * WORKERS
    results = [json.loads(r.read_text()) for r in reports]
    assert sum(r["overlaps"] for r in results) == 0, results
    # they raced (some were refused), and the dead holders never kept the lock from the living
    assert sum(r["refused"] for r in results) > 0 and all(r["held"] == HOLDS for r in results), results
    assert (run_dir / LOCK).exists()  # never unlinked


def test_a_holder_killed_with_sigkill_frees_the_lock_and_its_record_names_it(tmp_path):
    def hold(run_dir: Path) -> int:
        RunLock(run_dir).acquire()
        time.sleep(60)
        return 0

    run_dir = tmp_path / "run"
    pid = forked(hold, run_dir)
    deadline = time.time() + 30
    while read_lock(run_dir) is None:
        assert time.time() < deadline
        time.sleep(0.01)
    with pytest.raises(RunLockedError, match=f"being trained by process {pid} on host"):
        RunLock(run_dir).acquire()
    assert live_writer(run_dir).pid == pid
    os.kill(pid, signal.SIGKILL)
    assert wait(pid) == -signal.SIGKILL
    lock = RunLock(run_dir).acquire()  # the kernel released the dead holder's lock
    assert read_lock(run_dir).pid == os.getpid()
    lock.release()
    assert read_lock(run_dir) is None and (run_dir / LOCK).exists()


@pytest.mark.parametrize("pid, says", [(0, "does not name (it holds pid 0)"), (1, "pid 1, the init process"),
                                       (-5, "does not name")])
def test_a_held_lock_naming_no_real_process_is_described_as_such(tmp_path, pid, says):
    if os.getpid() == 1:
        pytest.skip("this process is pid 1")
    run_dir = tmp_path / "run"
    holder = RunLock(run_dir).acquire()
    os.pwrite(holder._fd, json.dumps({"pid": pid, "host": socket.gethostname(), "started": 0}).encode().ljust(200), 0)
    with pytest.raises(RunLockedError) as e:
        RunLock(run_dir).acquire()
    holder.release()
    msg = str(e.value)
    assert says in msg and "stop it first" in msg and str(run_dir / LOCK) in msg and "\n" not in msg


@pytest.mark.parametrize("pid", [0, 1, 999_999_999])
def test_an_unheld_lock_file_naming_any_pid_of_this_host_is_taken_over(tmp_path, pid):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": 0}))
    lock = RunLock(run_dir).acquire()
    assert read_lock(run_dir).pid == os.getpid()
    lock.release()


def test_a_symlinked_lock_file_is_refused_and_its_target_unchanged(tmp_path):
    run_dir, outside = tmp_path / "run", tmp_path / "outside.txt"
    run_dir.mkdir()
    outside.write_text("precious")
    (run_dir / LOCK).symlink_to(outside)
    with pytest.raises(OSError, match="symbolic link"):
        RunLock(run_dir).acquire()
    assert outside.read_text() == "precious"


def test_a_full_disk_while_writing_the_record_leaves_no_lock_held_and_no_temp_file(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"

    def pwrite(fd, data, offset):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(OSError, match="No space left on device") as e:
        RunLock(run_dir).acquire()
    assert str(run_dir / LOCK) in str(e.value)
    monkeypatch.undo()
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK] and read_lock(run_dir) is None
    RunLock(run_dir).acquire().release()  # nothing held
