"""The train / sample / presets commands, through the same ``main`` the ``scorediff`` script calls."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from scorediff import discrete
from scorediff.cli import main

FAST = ["--set", "optim.steps=4", "--set", "log.progress=false", "--set", "sample.num=64", "--set", "sample.steps=4",
        "--set", "data.options.n=500"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "toy"
    assert main(["train", "toy2d", "--out", str(out), *FAST]) == 0
    return out


def test_train_prints_the_sample_grid_path(toy_run, capsys):
    files = {p.name for p in toy_run.iterdir()}
    assert {"config.json", "model.safetensors", "ema.safetensors", "state.safetensors", "state.json",
            "metrics.jsonl"} <= files
    assert (toy_run / "samples" / "step_000004.png").exists()
    cfg = json.loads((toy_run / "config.json").read_text())
    assert cfg["optim"]["steps"] == 4 and cfg["data"]["name"] == "8gaussians"  # the whole resolved config
    records = [json.loads(line) for line in (toy_run / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "lr", "grad_norm", "steps_per_s"} <= records[-1].keys()


def test_train_stdout_is_the_grid_path(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "toy2d", "--out", str(out), *FAST, "--set", "optim.steps=1"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "samples" / "step_000001.png")


def test_sample_writes_png_and_npz(toy_run, tmp_path, capsys):
    target = tmp_path / "s.png"
    assert main(["sample", str(toy_run), "--sampler", "ddim", "--steps", "3", "--num", "50", "--seed", "1",
                 "--out", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert Image.open(target).size[0] > 100
    samples = np.load(tmp_path / "s.npz")["samples"]
    assert samples.shape == (50, 2) and np.isfinite(samples).all()
    # same seed, same samples
    assert main(["sample", str(toy_run), "--sampler", "ddim", "--steps", "3", "--num", "50", "--seed", "1",
                 "--out", str(tmp_path / "t.png")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "t.npz")["samples"], samples)


def test_sample_image_run_writes_a_grid(tmp_path, capsys):
    out = tmp_path / "img"
    assert main(["train", "digits", "--out", str(out), "--set", "net.preset=unet-tiny", "--set", "optim.steps=1",
                 "--set", "optim.batch_size=8", "--set", "log.progress=false", "--set", "sample.num=4",
                 "--set", "sample.steps=2", "--set", "net.class_conditional=true"]) == 0
    assert main(["sample", str(out), "--steps", "2", "--num", "6", "--class", "3", "--out", str(tmp_path / "g.png")]) == 0
    data = np.load(tmp_path / "g.npz")
    assert data["samples"].shape == (6, 1, 8, 8) and (data["labels"] == 3).all()
    assert Image.open(tmp_path / "g.png").mode == "L"


def test_ncsn_config_trains_and_samples_with_annealed_langevin(tmp_path, capsys):
    out = tmp_path / "ncsn"
    assert main(["train", "ncsn-2d", "--out", str(out), "--set", "optim.steps=3", "--set", "log.progress=false",
                 "--set", "sample.num=16", "--set", "sample.options.n_steps_each=2", "--set", "data.options.n=500"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["process"]["options"]["levels"] == 11 and cfg["sample"]["sampler"] == "annealed_langevin"
    assert main(["sample", str(out), "--num", "20", "--option", "n_steps_each=3", "--out", str(tmp_path / "s.png")]) == 0
    assert np.load(tmp_path / "s.npz")["samples"].shape == (20, 2)


def test_presets_lists_parameter_counts(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("ddpm-cifar10"))
    assert "35.7M" in row
    assert any(line.startswith("unet-digits") for line in lines)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "RUN", "--sampler", "dpm++2x"], "sampler 'dpm++2x' unknown; one of:"),
        (["train", "toy2d", "--set", "optim.lrr=1"], "unknown config key 'optim.lrr'; allowed: lr,"),
        (["train", "toy2d", "--set", "sample.sampler=nope"], "sampler 'nope' unknown"),
        (["train", "toy2d", "--set", "optim.batch_size=-3"], "optim.batch_size must be a positive integer"),
        (["train", "no-such-config"], "neither a file nor a packaged config"),
        (["sample", "RUN", "--num", "0"], "--num must be >= 1"),
        (["sample", "RUN", "--option", "eta"], "--option expects KEY=VALUE, got 'eta'"),
        (["sample", "RUN", "--option", "bogus=1"], "unknown option(s) bogus"),
        (["sample", "RUN", "--schedule", "cubic"], "unknown; one of"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, toy_run, tmp_path, capsys):
    argv = [str(toy_run) if a == "RUN" else a for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_every_command_has_help(capsys):
    from scorediff.cli import COMMANDS

    for cmd in COMMANDS:  # derived from the registry: a new command is checked automatically
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: scorediff " + cmd in capsys.readouterr().out


def test_samplers_lists_every_sampler_and_names_the_default(capsys):
    from scorediff.samplers import DEFAULT_SAMPLER, SAMPLERS

    assert main(["samplers"]) == 0
    out = capsys.readouterr().out
    continuous, discrete_part = out.split("\ntoken runs")
    names = [line.split()[0] for line in continuous.splitlines()[1:] if line.strip() and not line.startswith("default")]
    assert names == list(SAMPLERS)
    assert f"default sampler: {DEFAULT_SAMPLER}," in out
    rows = [line.split() for line in discrete_part.splitlines()[2:] if line.startswith("  ")]
    assert [r[0] for r in rows] == list(discrete.SAMPLERS)
    assert ["confidence", "absorbing", "1", "score=margin,", "noise=0.0"] in rows
    assert "absorbing: ancestral, 64 steps" in discrete_part
