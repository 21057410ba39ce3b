"""Run folders under unlucky and hostile conditions (issue 22): pinned data, whole artefacts, planted symlinks,
damaged files read around, messages that name the culprit, nothing left behind.

Each test runs a tiny 2-D run in-process (or in a forked child where it must die or hit a file-size limit) and
checks the folder's bytes (``snapshot``) or the outside world's, not just the exit code.
"""

from __future__ import annotations

import json
import os
import resource
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scorediff import atomic
from scorediff.cli import main
from scorediff.runs.lock import read_lock
from scorediff.training import config, train
from tests.conftest import TOY_FAST, snapshot
from tests.test_faults import TINY, forked, wait


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def temp_files(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith(atomic.TMP_SUFFIX)]


# -- 2. data pinned: absolute paths and a fingerprint --------------------------------------------------------------


def _points(path: Path, seed: int, n: int = 200) -> None:
    np.save(path, np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32))


def _npy_cfg(steps: int) -> dict:
    return config.resolve({**TINY, "data": {"name": "npy", "options": {"path": "pts.npy"}}}, {"optim.steps": steps})


def test_a_relative_data_path_is_pinned_and_a_changed_data_file_stops_resume_and_eval(tmp_path, monkeypatch, capsys):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    _points(home / "pts.npy", 0)
    _points(elsewhere / "pts.npy", 1)  # same name, other data: what a relative path would find from here
    monkeypatch.chdir(home)
    train(_npy_cfg(2), tmp_path / "run")
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["data"]["options"]["path"] == str(home / "pts.npy")  # absolute at creation
    info = json.loads((tmp_path / "run" / "info.json").read_text())
    fp = info["data_fingerprint"]["path"]
    assert fp["files"] == 1 and fp["bytes"] == (home / "pts.npy").stat().st_size

    # resumed from another directory: the same file, so the same data (the fingerprint agrees)
    monkeypatch.chdir(elsewhere)
    resumed = train(config.resolve(stored, {"optim.steps": 3}), tmp_path / "run", resume=True)
    assert resumed.step == 3 and resumed.batches.x.shape[0] == 200
    assert json.loads((tmp_path / "run" / "info.json").read_text())["data_fingerprint"] == info["data_fingerprint"]

    # the file changes under the run: resume and eval stop in one line naming the option, the path and the change
    _points(home / "pts.npy", 2, n=150)
    before = snapshot(tmp_path / "run")
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--set", "optim.steps=4"]) == 2
    err = one_line(capsys)
    assert "data.options.path" in err and str(home / "pts.npy") in err and "--accept-data-change" in err
    assert "now holds 1 file(s), 1328 bytes; the run recorded 1 file(s), 1728 bytes" in err
    assert main(["eval", str(tmp_path / "run"), "--num", "8", "--steps", "1", "--no-cache"]) == 2
    assert "scorediff eval" in one_line(capsys) and not (elsewhere / "outputs").exists()
    assert snapshot(tmp_path / "run") == before

    # the same bytes count with other contents is caught too (a hash of the file)
    _points(home / "pts.npy", 0)
    np.save(home / "pts.npy", np.load(home / "pts.npy")[::-1].copy())  # the recorded points, reordered
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--set", "optim.steps=4"]) == 2
    assert "its bytes changed" in one_line(capsys)

    # accepted explicitly: it trains on the new data and records the change
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--set", "optim.steps=4",
                 "--accept-data-change"]) == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert "its bytes changed" in history[-1]["data_changed"] and history[-1]["end_step"] == 4
    new_fp = json.loads((tmp_path / "run" / "info.json").read_text())["data_fingerprint"]["path"]
    assert new_fp["bytes"] == (home / "pts.npy").stat().st_size and new_fp != fp
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--set", "optim.steps=5"]) == 0  # agrees now


def test_a_folder_fingerprint_names_the_count_and_size_change(tmp_path):
    from scorediff.data.fingerprint import difference, fingerprint

    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.png").write_bytes(b"x" * (10 + i))
    before = fingerprint({"path": str(d)})
    assert before["path"]["files"] == 3 and before["path"]["bytes"] == 33
    assert difference(before, fingerprint({"path": str(d)})) is None
    (d / "0.png").rename(d / "9.png")
    assert "names or sizes changed" in difference(before, fingerprint({"path": str(d)}))
    (d / "1.png").unlink()
    assert "now holds 2 file(s), 22 bytes; the run recorded 3 file(s), 33 bytes" in difference(
        before, fingerprint({"path": str(d)}))
    assert difference(None, fingerprint({"path": str(d)})) is None  # a run older than fingerprints


# -- 3. whole artefacts: a kill during every artefact write, then report / eval / resume -----------------------


def _train_and_die_at_rename(cfg: dict, out: Path, name: str, at: int) -> int:
    """Train and SIGKILL this process when the ``at``-th complete temp file of ``name`` is about to be renamed."""
    real_replace, calls = os.replace, [0]

    def replace(src, dst):
        if Path(dst).name == name and str(Path(src).name).endswith(atomic.TMP_SUFFIX):
            calls[0] += 1
            if calls[0] == at:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)

    os.replace = replace
    train(cfg, out)
    return 3


# (artefact, the write at which to die): the grid of step 3 (ckpt.every = sample.every = 3), the loss plot and
# the end-of-session history at the end of the 6 steps
KILLS = [("step_000003.png", 1), ("loss.png", 1), ("history.json", 2)]


def test_a_kill_during_any_artefact_write_leaves_a_readable_run_that_resume_repairs(tmp_path, capsys):
    cfg = config.resolve(TINY, {"optim.steps": 6, "sample.every": 3})
    pids = {name: forked(_train_and_die_at_rename, cfg, tmp_path / name, name, at) for name, at in KILLS}
    for name, pid in pids.items():
        out = tmp_path / name
        assert wait(pid) == -signal.SIGKILL, name
        assert temp_files(out), name  # the killed write's temp file ...
        target = out / name if name != "step_000003.png" else out / "samples" / name
        if target.exists():  # ... never a torn target: the old version, whole
            json.loads(target.read_text()) if name.endswith(".json") else Image.open(target).verify()
        capsys.readouterr()
        assert main(["report", str(out), "--out", str(tmp_path / f"{name}.html")]) == 0, capsys.readouterr().err
        assert main(["sample", str(out), "--num", "8", "--steps", "2", "--out", str(tmp_path / f"{name}-s.png")]) == 0
        assert main(["train", "--out", str(out), "--resume"]) == 0, capsys.readouterr().err
        assert temp_files(out) == [], name  # swept by the writer
        for grid in (out / "samples").glob("*.png"):
            Image.open(grid).verify()
        assert (out / "samples" / "step_000003.png").is_file() and (out / "loss.png").is_file()
        history = json.loads((out / "history.json").read_text())
        assert history[-1]["outcome"] == "finished", name
        if name != "history.json":  # killed mid-session: the session is recorded as interrupted on resume
            assert history[0]["outcome"] == "interrupted" and history[0]["end_step"] == history[1]["start_step"]


def test_a_damaged_grid_info_and_history_are_repaired_by_resume_and_skipped_by_readers(run_copy, tmp_path, capsys):
    samples = run_copy / "samples"
    (samples / "step_000004.png").write_bytes(b"")  # a 0-byte grid of the checkpoint's step (the old writer's)
    (samples / "step_000002.png").write_bytes(b"\x89PNG garbage")  # an earlier step's: its weights are gone
    (run_copy / "info.json").write_text('{"data": ')
    (run_copy / "history.json").write_bytes(b"\x00\x01")
    (run_copy / ".history.json.12345.tmp").write_bytes(b"")  # a killed write's leftover
    capsys.readouterr()
    # the report needs the weights and info.json: one line naming info.json
    assert main(["report", str(run_copy), "--out", str(tmp_path / "r.html")]) == 2
    assert "info.json" in one_line(capsys)
    # resume repairs what the writer owns, one warning each
    assert main(["train", "--out", str(run_copy), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "info.json" in err and "history.json" in err and "step_000004.png" in err and "step_000002.png" in err
    Image.open(samples / "step_000004.png").verify()  # redrawn from the checkpoint of step 4
    assert not (samples / "step_000002.png").exists()
    assert json.loads((run_copy / "info.json").read_text())["data"]["shape"] == [2]
    assert json.loads((run_copy / "history.json").read_text())[-1]["start_step"] == 4
    assert (run_copy / "history.json.damaged").read_bytes() == b"\x00\x01"
    assert temp_files(run_copy) == []
    # a reader meeting a damaged grid skips it with one warning
    (samples / "step_000004.png").write_bytes(b"")
    assert main(["report", str(run_copy), "--out", str(tmp_path / "r.html")]) == 0
    err = one_line(capsys)
    assert err.startswith("warning:") and "step_000004.png" in err


# -- 4. planted symlinks are refused, the outside unchanged ------------------------------------------------------


def _outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    (d / "metrics.jsonl").write_text('{"step": 1}\n')
    return d


# (name planted in the run, what it points to, where the refusal comes from)
LINKS = [
    ("metrics.jsonl", "outside/metrics.jsonl", "the training log"),
    ("loss.png", "outside/precious.txt", "the loss plot"),
    ("samples", "outside", "the final grid"),
    (".ckpt-tmp", "outside", "checkpoint recovery"),
    ("history.json", "outside/precious.txt", "the session history"),
    ("info.json", "outside/precious.txt", "info.json's repair"),
]


@pytest.mark.parametrize("name, target, _", LINKS, ids=[c[0] for c in LINKS])
def test_a_planted_symlink_is_refused_in_one_line_and_its_target_unchanged(run_copy, tmp_path, capsys, name, target, _):
    outside = _outside(tmp_path)
    link = run_copy / name
    if link.is_dir():
        import shutil

        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    link.symlink_to(tmp_path / target)
    before = snapshot(outside)
    capsys.readouterr()
    assert main(["train", "--out", str(run_copy), "--resume", "--set", "optim.steps=6"]) == 2
    err = one_line(capsys)
    assert "symbolic link" in err and str(link) in err, err
    assert snapshot(outside) == before
    assert read_lock(run_copy) is None  # released


def test_fit_schedule_refuses_a_symlinked_schedules_folder(run_copy, tmp_path, capsys):
    outside = _outside(tmp_path)
    (run_copy / "schedules").symlink_to(outside)
    before = snapshot(outside)
    capsys.readouterr()
    assert main(["fit-schedule", str(run_copy), "--sampler", "heun", "--steps", "3", "--pilot", "4",
                 "--fine-steps", "8"]) == 2
    assert "symbolic link" in one_line(capsys) and snapshot(outside) == before


def test_write_atomic_never_writes_through_a_link_and_removes_its_temp_file_on_failure(tmp_path):
    run, outside = tmp_path / "run", _outside(tmp_path)
    run.mkdir()
    (run / "a.json").symlink_to(outside / "precious.txt")
    with pytest.raises(atomic.SymlinkError, match="a.json"):
        atomic.write_atomic(run / "a.json", b"x", root=run)
    (run / "sub").symlink_to(outside)
    with pytest.raises(atomic.SymlinkError, match="sub"):
        atomic.write_atomic(run / "sub" / "new.png", b"x", root=run)
    with pytest.raises(atomic.SymlinkError):
        atomic.open_append(run / "sub" / "metrics.jsonl", root=run)

    def half_then_full(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=r"could not write .*b.bin.*No space left on device"):
        atomic.write_atomic(run / "b.bin", half_then_full, root=run)
    assert sorted(p.name for p in run.iterdir()) == ["a.json", "sub"] and (outside / "precious.txt").read_text() == "keep me"


# -- 5. a damaged state.json does not stop sample -----------------------------------------------------------------


@pytest.mark.parametrize("damage", [b"[1, 2]", b"\x00garbage" * 20, b'{"ema": {"init_weight": "x"}}'])
def test_sample_reads_around_a_damaged_state_json_and_names_it(run_copy, tmp_path, capsys, damage):
    (run_copy / "state.json").write_bytes(damage)
    before = snapshot(run_copy)
    capsys.readouterr()
    assert main(["sample", str(run_copy), "--num", "4", "--steps", "2", "--out", str(tmp_path / "s.png")]) == 0
    err = capsys.readouterr().err
    assert "state.json" in err and "damaged" in err and "Traceback" not in err
    assert (tmp_path / "s.png").is_file() and snapshot(run_copy) == before


# -- 6. and 7. messages that name the culprit, no tracebacks -----------------------------------------------------


def _labels_npy(d: Path) -> list[str]:
    np.save(d / "x.npy", np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32))
    y = np.zeros(50, dtype=np.int64)
    y[3] = 2**31 - 1
    np.save(d / "y.npy", y)
    return ["train", "toy2d", "--out", str(d / "new"), *TOY_FAST, "--set", "data.name=npy", "--set",
            "net.class_conditional=true", "--set", f'data.options={{"path": "{d / "x.npy"}", "labels": "{d / "y.npy"}"}}']


# (id, argv with R = the run copy and D = a scratch folder, names the line must hold)
MESSAGES = [
    ("seed-float", ["train", "toy2d", "--out", "D/new", *TOY_FAST, "--set", "seed=1e23"], ["seed", "1e+23"]),
    ("seed-huge", ["train", "toy2d", "--out", "D/new", *TOY_FAST, "--set", f"seed={10**23}"], ["seed", str(10**23)]),
    ("sample-seed-huge", ["sample", "R", "--seed", str(10**23)], ["--seed", str(10**23)]),
    ("sample-guidance-inf", ["sample", "R", "--guidance", "inf"], ["--guidance", "inf"]),
    ("label-2^31-1", _labels_npy, ["y.npy", "2147483647", "index 3"]),
    ("sample-out-deep-missing", ["sample", "R", "--out", "D/no/such/x.png"], ["D/no/such", "does not exist"]),
    ("sample-out-inside-run", ["sample", "R", "--out", "R/samples/step_000004.png"], ["inside the run folder"]),
]


@pytest.mark.parametrize("argv, names", [c[1:] for c in MESSAGES], ids=[c[0] for c in MESSAGES])
def test_expected_errors_are_one_line_naming_the_culprit(run_copy, tmp_path, capsys, argv, names):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    if callable(argv):
        argv = argv(scratch)
    sub = {"R": str(run_copy), "D": str(scratch)}
    argv = [sub.get(a, a).replace("D/", str(scratch) + "/").replace("R/", str(run_copy) + "/") for a in argv]
    names = [n.replace("D/", str(scratch) + "/") for n in names]
    before, scratch_before = snapshot(run_copy), snapshot(scratch)
    capsys.readouterr()
    assert main(argv) == 2
    err = one_line(capsys)
    assert err.startswith("scorediff ")
    for name in names:
        assert name in err, (name, err)
    assert snapshot(run_copy) == before and snapshot(scratch) == scratch_before


def test_export_without_diffusers_names_the_extra(run_copy, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers raises ImportError
    capsys.readouterr()
    assert main(["export", str(run_copy), "--diffusers", str(tmp_path / "d")]) == 2
    assert "pip install 'scorediff[diffusers]'" in one_line(capsys) and not (tmp_path / "d").exists()


def test_a_binary_metrics_log_is_named_by_resume_and_report(run_copy, tmp_path, capsys):
    binary = bytes(b for b in range(256) if b not in b"\n\r\x0b\x0c\x1c\x1d\x1e\x85")  # one line
    (run_copy / "metrics.jsonl").write_bytes(binary + b"\n" + b"\xff\xfe" * 40)
    capsys.readouterr()
    assert main(["report", str(run_copy), "--out", str(tmp_path / "r.html")]) == 0
    assert "metrics.jsonl" in one_line(capsys)
    assert main(["train", "--out", str(run_copy), "--resume", "--set", "optim.steps=5"]) == 0
    err = capsys.readouterr().err
    assert "metrics.jsonl" in err and "dropped 2 unreadable line(s)" in err
    assert [json.loads(line)["step"] for line in (run_copy / "metrics.jsonl").read_text().splitlines()] == [5]


def _sample_on_a_full_disk(argv: list[str]) -> int:
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 * 1024, resource.RLIM_INFINITY))
    return main(argv)


def test_a_full_disk_while_writing_a_grid_names_it_and_leaves_nothing(run_copy, tmp_path):
    out, errfile = tmp_path / "out", tmp_path / "err"
    out.mkdir()
    code = wait(forked(_sample_on_a_full_disk, ["sample", str(run_copy), "--num", "8", "--steps", "2", "--out",
                                                str(out / "s.png")], stderr=errfile))
    lines = errfile.read_text().strip().splitlines()
    assert code == 2 and "Traceback" not in str(lines), lines
    assert lines[-1].startswith("scorediff sample: error:") and str(out / "s.png") in lines[-1]
    assert "File too large" in lines[-1]
    assert list(out.iterdir()) == []  # no temp file, no .npz without its picture


def test_a_full_disk_during_training_leaves_no_temp_file_and_history_says_why(run_copy, tmp_path):
    from tests.test_faults import _main_on_a_full_disk

    errfile = tmp_path / "err"
    code = wait(forked(_main_on_a_full_disk, ["train", "--out", str(run_copy), "--resume", "--set", "optim.steps=5"],
                       stderr=errfile))
    assert code == 2, errfile.read_text()
    assert temp_files(run_copy) == [] and read_lock(run_copy) is None
    assert json.loads((run_copy / "history.json").read_text())[-1]["outcome"] == "error"


# -- 9. the smaller items ----------------------------------------------------------------------------------------


def test_sample_writes_outside_the_run_by_default_and_inside_an_existing_out_folder(run_copy, tmp_path, monkeypatch,
                                                                                     capsys):
    monkeypatch.chdir(tmp_path)
    before = snapshot(run_copy)
    assert main(["sample", str(run_copy), "--num", "4", "--steps", "2"]) == 0
    default = tmp_path / "outputs" / run_copy.name / "sample_heun_2.png"
    assert capsys.readouterr().out.strip() == str(Path("outputs") / run_copy.name / "sample_heun_2.png")
    assert default.is_file() and default.with_suffix(".npz").is_file()
    folder = tmp_path / "pics"
    folder.mkdir()
    assert main(["sample", str(run_copy), "--num", "4", "--steps", "2", "--out", str(folder)]) == 0
    assert (folder / "sample_heun_2.png").is_file() and not (tmp_path / "pics.png").exists()
    # one missing level is created; two are refused (test_expected_errors_are_one_line_naming_the_culprit)
    assert main(["sample", str(run_copy), "--num", "4", "--steps", "2", "--out", str(tmp_path / "new" / "x.png")]) == 0
    assert (tmp_path / "new" / "x.png").is_file()
    assert snapshot(run_copy) == before  # a reader never writes the run folder


def test_resume_below_the_current_step_says_so_and_records_no_session(run_copy, capsys):
    history = (run_copy / "history.json").read_bytes()
    capsys.readouterr()
    assert main(["train", "--out", str(run_copy), "--resume", "--set", "optim.steps=2"]) == 0
    err = capsys.readouterr().err
    assert "at step 4, past optim.steps = 2" in err and "nothing to train" in err
    assert (run_copy / "history.json").read_bytes() == history


def test_a_long_sampling_job_is_announced_with_an_estimate(run_copy, capsys, monkeypatch):
    import argparse

    from scorediff.cli import sample as sample_cli
    from scorediff.training import load_run

    run = load_run(run_copy)
    args = argparse.Namespace(num=64, device="cpu", classifier_guidance=None)
    sample_cli._warn_long(run.denoiser, run, "heun", 10, 64, args)  # 20 model calls: no measurement, no warning
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sample_cli, "LONG_SAMPLING_S", 0.0)  # as if one call took long enough
    sample_cli._warn_long(run.denoiser, run, "heun", 100000, 64, args)
    err = capsys.readouterr().err
    assert err.startswith("warning: 100000 steps x 2 model call(s) per step x 1 batch(es) = 200000 model calls")
    assert "minutes" in err


def test_the_feature_cache_is_safetensors_and_a_damaged_one_is_recomputed(tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    from scorediff.eval import module_features, reference_features

    x = torch.randn(10, 3)
    feats = module_features(torch.nn.Linear(3, 2))
    first = reference_features(x, feats, tmp_path)
    (path,) = tmp_path.iterdir()
    assert path.suffix == ".safetensors" and torch.equal(load_file(str(path))["features"], first)
    path.write_bytes(b"\x00" * 20)
    again = reference_features(x, feats, tmp_path)
    assert torch.equal(again, first) and str(path) in capsys.readouterr().err
    assert torch.equal(load_file(str(path))["features"], first)
