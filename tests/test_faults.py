"""Fault injection on run folders: what happens when things go wrong.

- kill -9 at injected points in the checkpoint save path and inside an optimizer step (forked child processes,
  so no interpreter start-up), then
  resume: the final weights equal an uninterrupted run's bit for bit, and the metrics log has no repeated step;
- a reader (``load_run``) looping while a trainer checkpoints every step: neither disturbs the other, and a
  second trainer on the same folder is refused by the writer lock;
- resume with each checkpoint file missing or corrupted: one error naming the file, nothing changed;
- a table of bad inputs through the CLI: exit code, one line on stderr naming the file / key / value, no
  traceback, and the run folder unchanged (hashed before and after);
- a full disk during a checkpoint (``RLIMIT_FSIZE``): one line, the previous checkpoint kept.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import scorediff.runs.checkpoint as ckpt
from scorediff.cli import main
from scorediff.runs.lock import LOCK, RunLockedError, read_lock
from scorediff.training import NonFiniteLossError, Trainer, config, load_run, train
from tests.conftest import TOY_FAST, snapshot

pytestmark = pytest.mark.slow  # every test here kills or starts training processes

# A tiny 2-D run: every subprocess here spends its time starting Python, not training.
TINY = {
    "threads": 1,
    "data": {"name": "8gaussians", "options": {"n": 300}},
    "process": {"name": "vp"},
    "net": {"preset": "mlp-2d", "overrides": {"width": 32, "depth": 2, "emb_dim": 16}},
    "optim": {"lr": 1e-3, "batch_size": 32, "steps": 8},
    "sample": {"sampler": "euler", "steps": 2, "num": 8, "every": 0},
    "log": {"every": 1, "progress": False, "tensorboard": False},
    "ckpt": {"every": 3},
}
FAST = TOY_FAST  # shared with the toy run of tests/conftest.py



def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def logged_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def no_plots(monkeypatch):
    """Skip drawing the end-of-run PNGs (matplotlib is most of a tiny run's time; the weights are what count)
    and fsync (it guards against power loss, which no test here simulates; a kill -9 keeps the page cache)."""
    from scorediff import plotting

    monkeypatch.setattr(plotting, "save_samples", lambda *a, **k: None)
    monkeypatch.setattr(plotting, "save_loss_plot", lambda *a, **k: None)
    monkeypatch.setattr(os, "fsync", lambda fd: None)




# -- kill -9 at injected points -------------------------------------------------------------------------------

def forked(fn, *args, stderr: Path | None = None) -> int:
    """Run ``fn(*args)`` in a forked child process (no interpreter start-up: these tests stay fast) and return
    its pid. The child never returns into pytest: it exits with fn's return value, or 99 on an exception."""
    pid = os.fork()
    if pid:
        return pid
    code = 99
    try:
        if stderr is not None:
            sys.stderr = open(stderr, "w")
        code = int(fn(*args) or 0)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def wait(pid: int, timeout: float = 120) -> int:
    """The child's exit code, or -signal if a signal killed it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"child {pid} did not finish in {timeout} s")


def train_and_die(cfg: dict, out: Path, point: str, at: int) -> int:
    """Train ``cfg`` into ``out`` and SIGKILL this process at the ``at``-th pass through ``point``."""
    calls = [0]

    def maybe_die():
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)

    if point == "temp-file":  # after a safetensors file is written into .ckpt-tmp/, before the COMPLETE marker
        real_save = ckpt.save_file

        def save_file(*a, **k):
            real_save(*a, **k)
            maybe_die()
        ckpt.save_file = save_file
    elif point == "marker":  # after the marker, before any file is moved into place
        real_commit = ckpt._commit

        def commit(run_dir):
            maybe_die()
            real_commit(run_dir)
        ckpt._commit = commit
    elif point == "moving":  # between two of the moves into place
        real_replace = os.replace

        def replace(src, dst):
            real_replace(src, dst)
            if ckpt.TMP in str(src):
                maybe_die()
        os.replace = replace
    elif point == "step":  # inside an optimizer step: gradients computed, weights not yet updated
        real_step = torch.optim.AdamW.step

        def step(self, *a, **k):
            maybe_die()
            return real_step(self, *a, **k)
        torch.optim.AdamW.step = step
    train(cfg, out)
    return 3  # the injection point was never reached


# (point, the call at which to die): checkpoints are saved at steps 3 and 6 (ckpt.every=3; 6 steps), three
# safetensors files and four moves each; "step" dies in step 5, after the log line of step 4 past checkpoint 3
KILL_POINTS = [("temp-file", 5), ("marker", 2), ("moving", 6), ("step", 5)]


def test_kill9_anywhere_resumes_bit_exactly_and_logs_each_step_once(tmp_path, no_plots):
    cfg = config.resolve(TINY, {"optim.steps": 6})
    straight = train(cfg, tmp_path / "straight")  # first: the children inherit every module it imported
    pids = {point: forked(train_and_die, cfg, tmp_path / point, point, at) for point, at in KILL_POINTS}
    ref_model, ref_ema = weights(tmp_path / "straight" / "model.safetensors"), weights(tmp_path / "straight" / "ema.safetensors")
    for point, pid in pids.items():
        assert wait(pid) == -signal.SIGKILL, point
        out = tmp_path / point
        assert read_lock(out).pid == pid  # the record still names the killed writer; the kernel freed its lock
        resumed = train(cfg, out, resume=True)
        assert resumed.step == straight.step == 6
        for name, ref in (("model.safetensors", ref_model), ("ema.safetensors", ref_ema)):
            got = weights(out / name)
            assert all(torch.equal(got[k], ref[k]) for k in ref), (point, name)
        assert logged_steps(out) == list(range(1, 7)), point  # lines past the checkpoint were dropped
        assert read_lock(out) is None and not (out / ckpt.TMP).exists()
        history = json.loads((out / "history.json").read_text())
        assert [h["start_step"] for h in history][0] == 0 and history[-1]["outcome"] == "finished"


# -- a reader while a trainer writes; one writer only -------------------------------------------------------------


def test_reader_during_training_never_interferes_and_a_second_trainer_is_refused(tmp_path, capsys, no_plots):
    cfg = config.resolve(TINY, {"optim.steps": 100000, "ckpt.every": 1, "log.every": 0})
    out, errfile = tmp_path / "r", tmp_path / "trainer.err"
    pid = forked(main, _train_cli(cfg, tmp_path, out), stderr=errfile)
    try:
        deadline = time.time() + 90
        while not (out / "ema.safetensors").exists():
            assert os.waitpid(pid, os.WNOHANG)[0] == 0 and time.time() < deadline, errfile.read_text()
            time.sleep(0.02)
        steps, t_end = [], time.time() + 2.0
        while time.time() < t_end:
            run = load_run(out)  # reads the committed checkpoint, never recovers or deletes anything
            assert torch.isfinite(run.denoiser(torch.zeros(4, 2), torch.full((4,), 0.5))).all()
            steps.append(run.step)
        assert len(steps) >= 5 and steps == sorted(steps) and steps[-1] > steps[0]  # it saw the writer progress
        holder = read_lock(out)
        assert holder is not None and holder.pid == pid
        capsys.readouterr()
        assert main(["train", "--out", str(out), "--resume"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"being trained by process {pid}" in err and len(err.splitlines()) == 1
    finally:
        os.kill(pid, signal.SIGTERM)  # a clean stop: the trainer saves and exits 0
        code = wait(pid)
    assert code == 0, errfile.read_text()[-2000:]
    assert "checkpoint saved" in errfile.read_text() and read_lock(out) is None


def _train_cli(cfg: dict, tmp_path: Path, out: Path) -> list[str]:
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    return ["train", str(tmp_path / "cfg.json"), "--out", str(out)]


def test_second_trainer_refused_in_process_and_stale_lock_taken_over(tmp_path, no_plots):
    out = tmp_path / "r"
    cfg = config.resolve(TINY, {"optim.steps": 2})
    first = Trainer(cfg, out)
    with pytest.raises(RunLockedError, match=f"being trained by process {os.getpid()}"):
        Trainer(cfg, out, resume=True)
    first.train()
    first.close()
    assert read_lock(out) is None
    # a lock left by a process that no longer exists (killed -9) is stale: the next writer takes it over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": 0}))
    resumed = train(config.resolve(TINY, {"optim.steps": 3}), out, resume=True)
    assert resumed.step == 3 and read_lock(out) is None
    # a lock held on another machine cannot be checked from here: refused, naming the host
    (out / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": 0}))
    with pytest.raises(RunLockedError, match="elsewhere.example"):
        train(config.resolve(TINY, {"optim.steps": 4}), out, resume=True)


def test_readers_never_modify_and_read_the_committed_checkpoint(run_copy):
    committed = load_run(run_copy).step
    tmp = run_copy / ckpt.TMP
    # an interrupted save (no COMPLETE marker): readers ignore it and leave it for the writer to discard
    tmp.mkdir()
    (tmp / "ema.safetensors").write_bytes(b"half a file")
    before = snapshot(run_copy)
    assert load_run(run_copy).step == committed
    assert snapshot(run_copy) == before
    # a committed save half moved into place: the files still in .ckpt-tmp/ are the committed ones
    newer = weights(run_copy / "ema.safetensors")
    newer = {k: v + 1 for k, v in newer.items()}
    save_file(newer, str(tmp / "ema.safetensors"), metadata={"step": str(committed + 1)})
    (tmp / ckpt.MARKER).write_bytes(b"")
    before = snapshot(run_copy)
    run = load_run(run_copy)
    assert run.step == committed + 1
    assert all(torch.equal(run.net.state_dict()[k], v) for k, v in newer.items())
    assert snapshot(run_copy) == before


# -- resume: never fresh, never overwriting ------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage"])
@pytest.mark.parametrize("name", [*ckpt.CHECKPOINT_FILES, "config.json"])
def test_resume_with_a_file_missing_or_corrupt_names_it_and_changes_nothing(run_copy, name, damage):
    path = run_copy / name
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    else:
        path.write_bytes(os.urandom(256))
    before = snapshot(run_copy)
    cfg = config.resolve(json.loads((run_copy / "config.json").read_text())) if name != "config.json" else {}
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        train({**cfg, **({"optim": {**cfg["optim"], "steps": 6}} if cfg else {})}, run_copy, resume=True)
    assert name in str(info.value) and "\n" not in str(info.value)
    assert snapshot(run_copy) == before


def test_resume_overrides_are_per_session_not_baked_into_config(run_copy, capsys, no_plots):
    config_bytes = (run_copy / "config.json").read_bytes()
    lr = json.loads(config_bytes)["optim"]["lr"]
    assert main(["train", "--out", str(run_copy), "--resume", "--set", "optim.steps=6", "--set", "optim.lr=0.5"]) == 0
    assert (run_copy / "config.json").read_bytes() == config_bytes
    history = json.loads((run_copy / "history.json").read_text())
    assert history[-1]["changes"] == {"optim.lr": [lr, 0.5], "optim.steps": [4, 6]}
    assert history[-1]["start_step"] == 4 and history[-1]["end_step"] == 6
    # a plain --resume runs the stored config again, not the last session's values, and says so
    capsys.readouterr()
    tr = Trainer(json.loads(config_bytes), run_copy, resume=True)
    tr.close()
    assert tr.settings.optim.lr == lr and tr.step == 6
    assert "optim.lr" in capsys.readouterr().err


def test_checkpoint_with_nonfinite_weights_is_never_saved(tmp_path):
    out = tmp_path / "r"
    tr = Trainer(config.resolve(TINY), out)
    for _ in range(2):
        tr.train_step()
    tr.save_checkpoint()
    kept = {k: v for k, v in snapshot(out).items() if k != LOCK}
    tr.train_step()
    with torch.no_grad():
        next(tr.net.parameters())[0] = float("inf")  # a step that blew the weights up with a finite loss
    with pytest.raises(NonFiniteLossError, match=r"non-finite weights .* step 3.*checkpoint \(step 2\) is kept"):
        tr.save_checkpoint()
    tr.close()
    assert {k: v for k, v in snapshot(out).items() if k != LOCK} == kept


# -- every bad input: one line, the name, no traceback, nothing changed -------------------------------------------


def _nan_npy(d: Path) -> list[str]:
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    x[7, 1] = np.nan
    np.save(d / "nan.npy", x)
    return ["train", "toy2d", "--out", str(d / "new"), *FAST, "--set", "data.name=npy",
            "--set", f'data.options={{"path": "{d / "nan.npy"}"}}']


def _pickle_npy(d: Path) -> list[str]:
    (d / "random.npy").write_bytes(os.urandom(400))
    return ["train", "toy2d", "--out", str(d / "new"), *FAST, "--set", "data.name=npy",
            "--set", f'data.options={{"path": "{d / "random.npy"}"}}']


def _object_npy(d: Path) -> list[str]:
    np.save(d / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return ["train", "toy2d", "--out", str(d / "new"), *FAST, "--set", "data.name=npy",
            "--set", f'data.options={{"path": "{d / "objects.npy"}"}}']


def _bad_config(d: Path) -> list[str]:
    (d / "bad.json").write_text('{"optim": {"lr": ')
    return ["train", str(d / "bad.json"), "--out", str(d / "new")]


def _damage(name: str, how: str):
    def setup(run: Path) -> None:
        p = run / name
        p.write_bytes(p.read_bytes()[:50] if how == "truncate" else b"\x00garbage" * 20)
    return setup


def _nan_weights(run: Path) -> None:
    ema = weights(run / "ema.safetensors")
    save_file({k: torch.full_like(v, float("nan")) for k, v in ema.items()}, str(run / "ema.safetensors"),
              metadata={"step": "4"})


# (id, argv with R = the run copy and D = a scratch folder, damage to the run first, exit code, names in the line)
BAD_INPUTS = [
    ("resume-no-folder", ["train", "--out", "D/typo", "--resume"], None, 2, ["typo", "does not exist"]),
    ("resume-without-out", ["train", "--resume"], None, 2, ["--out"]),
    ("resume-no-state", ["train", "--out", "R", "--resume"], "state.json", 2, ["state.json", "missing"]),
    ("resume-no-model", ["train", "--out", "R", "--resume"], "model.safetensors", 2, ["model.safetensors"]),
    ("resume-truncated-model", ["train", "--out", "R", "--resume"], _damage("model.safetensors", "truncate"), 2,
     ["model.safetensors"]),
    ("resume-garbage-state", ["train", "--out", "R", "--resume"], _damage("state.json", "garbage"), 2, ["state.json"]),
    ("resume-garbage-config", ["train", "--out", "R", "--resume"], _damage("config.json", "garbage"), 2,
     ["config.json"]),
    ("sample-garbage-ema", ["sample", "R", "--num", "4"], _damage("ema.safetensors", "garbage"), 2,
     ["ema.safetensors"]),
    ("sample-truncated-ema", ["sample", "R", "--num", "4"], _damage("ema.safetensors", "truncate"), 2,
     ["ema.safetensors"]),
    ("sample-garbage-info", ["sample", "R", "--num", "4"], _damage("info.json", "garbage"), 2, ["info.json"]),
    ("config-file-garbage", _bad_config, None, 2, ["bad.json"]),
    ("data-nan", _nan_npy, None, 2, ["nan.npy", "(7, 1)"]),
    ("data-random-bytes", _pickle_npy, None, 2, ["random.npy", "not a .npy/.npz array", "signature"]),
    ("data-pickled-objects", _object_npy, None, 2, ["objects.npy", "pickled Python objects, which are never loaded"]),
    ("net-width-string", ["train", "toy2d", "--out", "D/new", *FAST, "--set", "net.overrides.width=abc"], None, 2,
     ["net.overrides.width", "integer"]),
    ("sampler-option-string", ["sample", "R", "--num", "4", "--option", "s_churn=abc"], None, 2,
     ["s_churn", "number"]),
    ("device-banana", ["train", "toy2d", "--out", "D/new", *FAST, "--set", "device=banana"], None, 2,
     ["banana", "cpu"]),
    ("lr-huge", ["train", "toy2d", "--out", "D/new", *FAST, "--set", "optim.lr=1e39"], None, 2, ["optim.lr", "1"]),
    ("resume-change-width", ["train", "--out", "R", "--resume", "--set", "net.overrides.width=64"], None, 2,
     ["net.overrides.width", "fixed"]),
    ("resume-change-seed", ["train", "--out", "R", "--resume", "--set", "seed=3"], None, 2, ["seed", "fixed"]),
    ("sample-batch-0", ["sample", "R", "--batch", "0"], None, 2, ["--batch"]),
    ("sample-nonfinite", ["sample", "R", "--num", "4", "--steps", "2"], _nan_weights, 1, ["not finite", "nothing written"]),
    ("fresh-over-run", ["train", "toy2d", "--out", "R", *FAST], None, 2, ["already holds a checkpoint", "--resume"]),
]
if not torch.cuda.is_available():
    BAD_INPUTS.append(("device-cuda", ["train", "toy2d", "--out", "D/new", *FAST, "--set", "device=cuda"], None, 2,
                       ["cuda", "no CUDA"]))


@pytest.mark.parametrize("argv, damage, code, names", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gives_one_line_and_changes_nothing(run_copy, tmp_path, capsys, argv, damage, code, names):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    if isinstance(damage, str):
        (run_copy / damage).unlink()
    elif damage is not None:
        damage(run_copy)
    if callable(argv):
        argv = argv(scratch)
    argv = [str(run_copy) if a == "R" else a.replace("D/", str(scratch) + "/") for a in argv]
    before, scratch_before = snapshot(run_copy), snapshot(scratch)
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and err.startswith("scorediff ")
    for name in names:
        assert name in err, (name, err)
    assert snapshot(run_copy) == before
    assert snapshot(scratch) == scratch_before and not (scratch / "new").exists() and not (scratch / "typo").exists()


def _main_on_a_full_disk(argv: list[str]) -> int:
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))  # 64 KiB left per file
    return main(argv)


def test_read_only_run_folder_is_one_line_and_changes_nothing(run_copy, monkeypatch, capsys):
    """Writing into the folder fails as on a read-only mount (simulated: the tests may run as root, whom
    chmod does not stop): one line naming the folder and the cause; nothing changed."""
    real_open = os.open
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def read_only_open(path, flags, *a, **k):
        if flags & writing and run_copy in Path(path).parents:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", read_only_open)
    before = snapshot(run_copy)
    capsys.readouterr()
    assert main(["train", "--out", str(run_copy), "--resume", "--set", "optim.steps=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(run_copy) in err and "Permission denied" in err, err
    assert snapshot(run_copy) == before


def test_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous(run_copy, tmp_path):
    files = {f: (run_copy / f).read_bytes() for f in ckpt.CHECKPOINT_FILES}
    assert len(files["model.safetensors"]) > 64 * 1024  # the limit bites on the checkpoint
    errfile = tmp_path / "err"
    code = wait(forked(_main_on_a_full_disk, ["train", "--out", str(run_copy), "--resume", "--set", "optim.steps=5"],
                       stderr=errfile))
    err = errfile.read_text().strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert ckpt.TMP in err and "File too large" in err and "previous checkpoint is kept" in err
    assert {f: (run_copy / f).read_bytes() for f in ckpt.CHECKPOINT_FILES} == files
    assert not (run_copy / ckpt.TMP).exists() and read_lock(run_copy) is None
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY  # only the child was limited
