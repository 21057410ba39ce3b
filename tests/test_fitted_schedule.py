"""``scorediff fit-schedule`` and the fitted grid kept in a run folder, end to end on a tiny trained run.

The fit itself (GITS against the oracle) is tested in tests/test_optimize.py, the refinement in
tests/test_refine_schedule.py; here: the file holds exactly the fit
of the pilot it describes, ``scorediff sample`` samples on that grid (a spy on ``scorediff.samplers.sample`` and
the samples themselves) only for its sampler, step count and checkpoint, ``--schedule`` overrides it, a stale or
corrupt file is one line and the default grid, the writer lock is held while fitting and refuses a fit while a
trainer runs, and a reader leaves the run folder byte for byte as it was. The default method ("refined") keeps the
held-out check it was fitted with, recomputed here independently from the pilot it describes, and a reader uses
the grid only where it won; ``scorediff eval`` uses it as ``sample`` does, and both outputs say which grid drew
them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import scorediff.samplers as samplers_mod
from scorediff.cli import main
from scorediff.runs.lock import RunLock, RunLockedError, read_lock
from scorediff.training import load_run
from tests.conftest import TOY_FAST, snapshot

FAST = TOY_FAST  # shared with the toy run of tests/conftest.py
FIT = ["--pilot", "16", "--seed", "3", "--fine-steps", "32"]





@pytest.fixture
def fitted_run(run_copy, capsys) -> Path:
    """The toy run with grids fitted for heun and dpm_solver_pp_2m at 3 and 5 steps."""
    assert main(["fit-schedule", str(run_copy), "--sampler", "heun", "dpm_solver_pp_2m", "--steps", "3", "5",
                 *FIT]) == 0
    capsys.readouterr()
    return run_copy


@pytest.fixture
def spy(monkeypatch) -> list:
    """The ``schedule`` every ``scorediff.samplers.sample`` call gets (None: the sampler's default grid)."""
    seen = []
    real = samplers_mod.sample

    def sample(*args, **kwargs):
        seen.append(kwargs.get("schedule"))
        return real(*args, **kwargs)

    monkeypatch.setattr(samplers_mod, "sample", sample)
    return seen


def sample_cli(run: Path, out: Path, *argv: str) -> int:
    return main(["sample", str(run), "--num", "20", "--seed", "1", "--out", str(out), *argv])


def test_fit_writes_the_pilots_grid_and_sample_samples_on_it(run_copy, tmp_path, capsys, spy):
    assert main(["fit-schedule", str(run_copy), "--sampler", "heun", "dpm_solver_pp_2m", "--steps", "3", "5",
                 *FIT, "--method", "gits"]) == 0
    out = capsys.readouterr()
    paths = [Path(line) for line in out.out.split()]
    assert sorted(p.name for p in paths) == ["dpm_solver_pp_2m-3.json", "dpm_solver_pp_2m-5.json", "heun-3.json",
                                            "heun-5.json"]
    assert all(p.parent == run_copy / "schedules" for p in paths) and read_lock(run_copy) is None
    run = load_run(run_copy)
    rec = json.loads((run_copy / "schedules" / "heun-3.json").read_text())
    assert (rec["sampler"], rec["steps"], rec["checkpoint_step"], rec["weights"]) == ("heun", 3, run.step, "ema")
    assert (rec["pilot"]["size"], rec["pilot"]["seed"], rec["fit"]["fine_steps"]) == (16, 3, 32)
    assert rec["pilot"]["cpu_s"] >= 0 and rec["process"] == run.process.config()
    # the file holds the fit of exactly the pilot it describes: 16 prior draws from seed 3, 32 candidate intervals
    pilot = run.process.prior_sample((16, *run.shape), torch.Generator().manual_seed(3))
    fit = samplers_mod.fit_schedule(run.denoiser, run.process, pilot, fine_steps=32)
    torch.testing.assert_close(torch.tensor(rec["times"], dtype=torch.float64), fit.grid(3), rtol=1e-6, atol=1e-9)
    assert rec["pilot"]["model_calls"] == fit.pilot_nfe
    assert json.loads((run_copy / "schedules" / "dpm_solver_pp_2m-3.json").read_text())["times"] == rec["times"]
    # the Python path: exactly this sampler, step count and checkpoint
    ts = run.fitted_schedule("heun", 3)
    assert ts.tolist() == rec["times"]
    assert run.fitted_schedule("heun", 4) is None and run.fitted_schedule("euler", 3) is None

    before = snapshot(run_copy)
    assert sample_cli(run_copy, tmp_path / "s.png", "--sampler", "heun", "--steps", "3") == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "fitted schedule" in line] == [
        f"using the fitted schedule {str(run_copy / 'schedules' / 'heun-3.json')!r} (GITS, fitted on step "
        f"{run.step} from 16 pilot draws; --schedule NAME overrides it)"]
    assert len(spy) == 1 and torch.is_tensor(spy[0]) and spy[0].tolist() == rec["times"]
    got = np.load(tmp_path / "s.npz")["samples"]
    on_fitted = samplers_mod.sample(run.denoiser, run.process, (20, 2), sampler="heun", steps=3, seed=1, schedule=ts)
    on_default = samplers_mod.sample(run.denoiser, run.process, (20, 2), sampler="heun", steps=3, seed=1)
    np.testing.assert_array_equal(got, on_fitted.numpy())
    meta = np.load(tmp_path / "s.npz")
    assert str(meta["schedule"]) == f"fitted {run_copy / 'schedules' / 'heun-3.json'}"
    assert meta["schedule_times"].tolist() == rec["times"]
    assert not np.allclose(got, on_default.numpy(), atol=1e-3)  # the grid made a difference
    assert snapshot(run_copy) == before  # a reader writes nothing into the run folder


@pytest.mark.parametrize("argv, expected, says", [
    (["--sampler", "heun", "--steps", "3", "--schedule", "karras"], "karras", None),
    (["--sampler", "heun", "--steps", "3", "--option", "schedule=quadratic"], "quadratic", None),
    (["--sampler", "heun", "--steps", "4"], None, None),
    (["--sampler", "euler", "--steps", "3"], None, None),
    (["--sampler", "heun", "--steps", "3", "--raw"], None, "not the raw weights"),
])
def test_only_its_sampler_steps_and_weights_use_it_and_schedule_overrides(fitted_run, tmp_path, capsys, spy, argv,
                                                                          expected, says):
    assert sample_cli(fitted_run, tmp_path / "s.png", *argv) == 0
    assert spy == [expected]
    notes = [line for line in capsys.readouterr().err.splitlines() if "fitted schedule" in line]
    assert notes == ([] if says is None else [notes[0]]) and (says is None or says in notes[0]), notes


def test_a_stale_grid_is_not_used_and_says_why(fitted_run, tmp_path, capsys, spy):
    assert main(["train", "--out", str(fitted_run), "--resume", "--set", "optim.steps=5"]) == 0  # one more step
    capsys.readouterr()
    spy.clear()  # the trainer's own sample grid
    run = load_run(fitted_run)
    assert run.step == 5 and run.fitted_schedule("heun", 3) is None
    before = snapshot(fitted_run)
    assert sample_cli(fitted_run, tmp_path / "s.png", "--sampler", "heun", "--steps", "3") == 0
    assert spy == [None]
    notes = [line for line in capsys.readouterr().err.splitlines() if "fitted schedule" in line]
    assert len(notes) == 1 and "heun-3.json" in notes[0] and "stale: fitted on step 4, the run is at step 5" in notes[0]
    assert snapshot(fitted_run) == before


def _rewrite(**changes):
    def damage(path: Path) -> None:
        rec = json.loads(path.read_text())
        rec.update(changes)
        path.write_text(json.dumps(rec))
    return damage


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(b"\x00\xffnot json"),
    lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]),  # truncated
    lambda p: p.write_text("[1, 2, 3]"),
    _rewrite(times=[80.0, 1.0, 2.0, 0.002]),  # not decreasing
    _rewrite(times=[1.0, 0.5, 1e-5]),  # 2 steps for a 3-step file
    _rewrite(times=[1.0, 0.5, float("nan"), 1e-5]),
    _rewrite(times=[2.0, 0.5, 0.1, 1e-5]),  # not from t_max
    _rewrite(steps=4),
    _rewrite(checkpoint_step="4"),
    _rewrite(heldout={"wins": "yes", "default_error": 1.0, "fitted_error": 0.5}),
    _rewrite(heldout={"wins": True, "default_error": None, "fitted_error": 0.5}),
], ids=["garbage", "truncated", "list", "increasing", "short", "nan", "t_max", "steps", "step-type", "wins-type",
        "heldout-error"])
def test_a_corrupt_grid_is_one_line_and_the_default_grid(fitted_run, tmp_path, capsys, spy, damage):
    path = fitted_run / "schedules" / "heun-3.json"
    damage(path)
    assert load_run(fitted_run).fitted_schedule("heun", 3) is None
    before = snapshot(fitted_run)
    assert sample_cli(fitted_run, tmp_path / "s.png", "--sampler", "heun", "--steps", "3") == 0
    assert spy == [None]
    notes = [line for line in capsys.readouterr().err.splitlines() if "fitted schedule" in line]
    assert len(notes) == 1 and str(path) in notes[0] and "corrupt" in notes[0], notes
    assert snapshot(fitted_run) == before


def test_the_writer_lock_refuses_a_fit_while_training_and_is_held_while_fitting(run_copy, capsys, monkeypatch):
    # a live process holds the lock (this one, as a trainer would): refused in one line, nothing written
    holder = RunLock(run_copy).acquire()
    before = snapshot(run_copy)
    assert main(["fit-schedule", str(run_copy), "--sampler", "heun", "--steps", "3", *FIT]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"is being trained by process {os.getpid()}" in err[0]
    assert snapshot(run_copy) == before
    holder.release()
    # while it fits, the lock is its own: a trainer (the same RunLock) is told who holds the folder
    refused = []
    real = samplers_mod.fit_schedule

    def fit_schedule(*args, **kwargs):
        with pytest.raises(RunLockedError) as e:
            RunLock(run_copy).acquire()
        refused.append(str(e.value))
        return real(*args, **kwargs)

    monkeypatch.setattr(samplers_mod, "fit_schedule", fit_schedule)
    assert main(["fit-schedule", str(run_copy), "--sampler", "heun", "--steps", "3", *FIT]) == 0
    assert len(refused) == 1 and f"is being written by scorediff fit-schedule by process {os.getpid()}" in refused[0]
    assert read_lock(run_copy) is None


@pytest.mark.parametrize("argv, message", [
    (["RUN", "--sampler", "dpm++2x", "--steps", "3"], "sampler 'dpm++2x' unknown; one of:"),
    (["RUN", "--sampler", "heun", "--steps", "0"], "--steps must be integers from 1 to --fine-steps = 32"),
    (["RUN", "--sampler", "heun", "--steps", "40"], "--steps must be integers from 1 to --fine-steps = 32"),
    (["RUN", "--sampler", "heun", "--steps", "3", "--pilot", "1"], "--pilot must be an integer >= 2"),
    (["RUN", "--sampler", "heun", "--steps", "3", "--method", "best"], "fit method 'best' unknown"),
    (["MISSING", "--sampler", "heun", "--steps", "3"], "does not exist"),
    (["EMPTY", "--sampler", "heun", "--steps", "3"], "is not a run folder (no config.json)"),
])
def test_bad_input_is_one_line_and_writes_nothing(argv, message, run_copy, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    names = {"RUN": str(run_copy), "MISSING": str(tmp_path / "missing"), "EMPTY": str(tmp_path / "empty")}
    before = snapshot(run_copy)
    assert main(["fit-schedule", *FIT, *[names.get(a, a) for a in argv]]) == 2  # the last --pilot counts
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert snapshot(run_copy) == before and not (tmp_path / "missing").exists()
    assert not any((tmp_path / "empty").iterdir())


def test_a_few_step_run_is_refused(toy_run, tmp_path, capsys):
    cd = tmp_path / "cd"
    assert main(["distill", "consistency", str(toy_run), "--out", str(cd), "--steps", "2", "--solver", "ddim",
                 "--set", "log.progress=false", "--set", "sample.num=8"]) == 0
    capsys.readouterr()
    before = snapshot(cd)
    assert main(["fit-schedule", str(cd), "--sampler", "consistency", "--steps", "2", *FIT]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a few-step model (loss 'consistency_distillation')" in err
    assert snapshot(cd) == before



def test_a_class_conditional_image_run_fits_with_labels_and_samples_on_the_grid(tmp_path, capsys, spy, monkeypatch):
    from scorediff.parameterizations import NetDenoiser

    out = tmp_path / "img"
    assert main(["train", "digits", "--out", str(out), "--set", "net.preset=unet-tiny", "--set", "optim.steps=1",
                 "--set", "optim.batch_size=8", "--set", "log.progress=false", "--set", "sample.num=4",
                 "--set", "sample.steps=2", "--set", "net.class_conditional=true"]) == 0
    labels, forward = [], NetDenoiser.forward

    def spy_forward(self, x, t, **cond):
        labels.append(None if cond.get("y") is None else cond["y"].tolist())
        return forward(self, x, t, **cond)

    monkeypatch.setattr(NetDenoiser, "forward", spy_forward)
    assert main(["fit-schedule", str(out), "--sampler", "ddim", "--steps", "3", "--pilot", "4", "--fine-steps", "8",
                 "--method", "gits"]) == 0
    assert labels and all(y == [0, 1, 2, 3] for y in labels)  # the pilot cycles through the classes
    spy.clear()
    assert main(["sample", str(out), "--sampler", "ddim", "--steps", "3", "--num", "4", "--class", "2",
                 "--out", str(tmp_path / "g.png")]) == 0
    times = json.loads((out / "schedules" / "ddim-3.json").read_text())["times"]
    assert len(spy) == 1 and spy[0].tolist() == times and len(times) == 4
    assert np.load(tmp_path / "g.npz")["samples"].shape == (4, 1, 8, 8)


def _rms(x: torch.Tensor, target: torch.Tensor) -> float:
    return float((x - target).reshape(len(x), -1).double().pow(2).sum(1).mean().sqrt())


def test_the_refined_grid_is_checked_on_held_out_draws_and_used_only_where_it_wins(run_copy, tmp_path, capsys, spy):
    from scorediff import schedules

    assert main(["fit-schedule", str(run_copy), "--sampler", "heun", "--steps", "3", *FIT]) == 0
    capsys.readouterr()
    path = run_copy / "schedules" / "heun-3.json"
    rec = json.loads(path.read_text())
    run = load_run(run_copy)
    assert rec["fit"]["method"] == "refined" and rec["fit"]["fitted_on"] == 8 and rec["heldout"]["starts"] == 8
    # recomputed from the pilot the file describes: 16 draws from seed 3, the last 8 held out, the reference a
    # 32-step DPM-Solver++(3M) on the log-SNR candidates
    pilot = run.process.prior_sample((16, *run.shape), torch.Generator().manual_seed(3))
    held = pilot[8:]
    target = samplers_mod.SAMPLERS["dpm_solver_pp_3m"](run.denoiser, run.process, held,
                                                         schedules.make("logsnr", 32, run.process))
    times = torch.tensor(rec["times"], dtype=torch.float64)
    e_fit = _rms(samplers_mod.sample(run.denoiser, run.process, held, sampler="heun", schedule=times), target)
    e_default = _rms(samplers_mod.sample(run.denoiser, run.process, held, sampler="heun", steps=3), target)
    assert rec["heldout"]["fitted_error"] == pytest.approx(e_fit, rel=1e-4)
    assert rec["heldout"]["default_error"] == pytest.approx(e_default, rel=1e-4)
    assert rec["heldout"]["wins"] == (e_fit < e_default)
    # the refinement never does worse on the starts it was fitted on than the GITS grid it started from
    fitted = pilot[:8]
    fit = samplers_mod.fit_schedule(run.denoiser, run.process, fitted, fine_steps=32)
    on = {k: _rms(samplers_mod.sample(run.denoiser, run.process, fitted, sampler="heun", schedule=ts), fit.ends)
          for k, ts in (("gits", fit.grid(3)), ("refined", times))}
    assert on["refined"] <= on["gits"] + 1e-6
    # used where it won; where it lost (the record says so), the default grid, in one line, and the output says so
    for wins in (True, False):
        meta = _sample_with_the_record(run_copy, path, rec, wins, "heun", tmp_path, capsys, spy)
        if wins:
            assert str(meta["schedule"]) == f"fitted {path}"
        else:
            assert str(meta["schedule"]) == "default" and "schedule_times" not in meta


def _sample_with_the_record(run_dir, path, rec, wins: bool, sampler: str, tmp_path, capsys, spy):
    """``scorediff sample`` after the fitted grid's record says it won (or lost): one line naming the file; the
    refined grid where it won, the default grid (``None``) where it lost. Returns the output's .npz."""
    rec["heldout"]["wins"] = wins
    path.write_text(json.dumps(rec))
    spy.clear()
    assert sample_cli(run_dir, tmp_path / "s.png", "--sampler", sampler, "--steps", "3") == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "fitted schedule" in line]
    assert len(notes) == 1 and str(path) in notes[0], notes
    if wins:
        assert spy[0].tolist() == rec["times"] and "refined" in notes[0]
    else:
        assert spy == [None] and "did not beat the default grid" in notes[0]
    return np.load(tmp_path / "s.npz")


def test_eval_uses_the_fitted_grid_and_schedule_overrides_it(fitted_run, tmp_path, capsys, spy):
    times = json.loads((fitted_run / "schedules" / "heun-3.json").read_text())["times"]
    before = snapshot(fitted_run)
    common = ["--num", "16", "--sampler", "heun", "--steps", "3", "--ref", "8gaussians", "--ref-option", "n=64",
              "--no-cache"]
    assert main(["eval", str(fitted_run), *common, "--out", str(tmp_path / "a.json")]) == 0
    res = json.loads((tmp_path / "a.json").read_text())
    wins = json.loads((fitted_run / "schedules" / "heun-3.json").read_text())["heldout"]["wins"]
    if wins:
        assert spy[0].tolist() == times and res["schedule"].startswith("fitted ") and res["schedule_times"] == times
    else:
        assert spy == [None] and res["schedule"] == "default"
    spy.clear()
    assert main(["eval", str(fitted_run), *common, "--schedule", "karras", "--out", str(tmp_path / "b.json")]) == 0
    assert spy == ["karras"] and json.loads((tmp_path / "b.json").read_text())["schedule"] == "karras"
    capsys.readouterr()
    assert snapshot(fitted_run) == before


def test_a_cld_run_fits_on_its_phase_space_trajectories_and_samples_on_the_grid(tmp_path, capsys, spy):
    # CLD (phase space): the denoiser takes u = (x, v) and the samplers draw v | x, so the reference is cld_heun,
    # every run of the fit draws its start velocities from seed + 1, and the errors are on the position half
    from scorediff import schedules

    run_dir = tmp_path / "cld"
    assert main(["train", "toy2d-cld", "--out", str(run_dir), *FAST]) == 0
    assert main(["fit-schedule", str(run_dir), "--sampler", "cld_heun", "sscs", "--steps", "3", *FIT]) == 0
    capsys.readouterr()
    run = load_run(run_dir)
    rec = json.loads((run_dir / "schedules" / "cld_heun-3.json").read_text())
    assert (rec["fit"]["method"], rec["fit"]["reference"], rec["heldout"]["starts"]) == ("refined", "cld_heun", 8)
    assert json.loads((run_dir / "schedules" / "sscs-3.json").read_text())["fit"]["method"] == "gits"  # stochastic
    # the held-out check recomputed from the pilot the file describes: 16 draws from seed 3, the last 8 held out,
    # velocities from seed 4, the reference a 32-step cld_heun on the log-SNR candidates; positions compared
    held = run.process.prior_sample((16, *run.shape), torch.Generator().manual_seed(3))[8:]
    assert held.shape[1:] == run.shape  # data shape: the velocity half lives inside the samplers
    target = samplers_mod.SAMPLERS["cld_heun"](run.denoiser, run.process, held,
                                                 schedules.make("logsnr", 32, run.process),
                                                 generator=torch.Generator().manual_seed(4))
    times = torch.tensor(rec["times"], dtype=torch.float64)
    e_fit = _rms(samplers_mod.sample(run.denoiser, run.process, held, sampler="cld_heun", schedule=times, seed=4),
                 target)
    e_default = _rms(samplers_mod.sample(run.denoiser, run.process, held, sampler="cld_heun", steps=3, seed=4),
                     target)
    assert rec["heldout"]["fitted_error"] == pytest.approx(e_fit, rel=1e-4)
    assert rec["heldout"]["default_error"] == pytest.approx(e_default, rel=1e-4)
    # other velocities give another error: the agreement above is that of the same phase-space trajectories
    e_other = _rms(samplers_mod.sample(run.denoiser, run.process, held, sampler="cld_heun", schedule=times, seed=5),
                   target)
    assert abs(e_other - e_fit) > 1e-3 * e_fit
    # sampling reads it: the refined grid where it won, else one line and the default grid
    path = run_dir / "schedules" / "cld_heun-3.json"
    for wins in (True, False):
        meta = _sample_with_the_record(run_dir, path, rec, wins, "cld_heun", tmp_path, capsys, spy)
        assert meta["samples"].shape == (20, *run.shape)
    spy.clear()
    assert sample_cli(run_dir, tmp_path / "t.png", "--sampler", "sscs", "--steps", "3") == 0
    assert spy[0].tolist() == json.loads((run_dir / "schedules" / "sscs-3.json").read_text())["times"]
