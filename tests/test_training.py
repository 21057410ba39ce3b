"""The training loop and run folders: exact resume, DDP, atomic saves, signals, non-finite losses, configs,
and that a toy run actually learns (sliced W2 to the exact mixture against the untrained model's)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import scorediff.runs.checkpoint as ckpt
from scorediff import analytic
from scorediff.training import NonFiniteLossError, Trainer, config, load_run, train
from scorediff.training.loop import build
from tests.conftest import env_one_thread, free_port

ROOT = Path(__file__).resolve().parents[1]


def tiny_images(path: Path, **over) -> dict:
    """150 digits from an .npy, a tiny U-Net with dropout (global RNG), random flips (augmentation RNG),
    gradient accumulation; 6 steps of 80 examples cross three epoch boundaries, the stop at 3 is mid-epoch."""
    from scorediff import data

    np.save(path / "digits150.npy", data.make("digits").x[:150].numpy())
    cfg = {
        "data": {"name": "npy", "options": {"path": str(path / "digits150.npy")}, "hflip": True},
        "process": {"name": "vp-discrete", "options": {"steps": 100}},
        "parameterization": {"name": "eps"},
        "loss": {"name": "dsm"},
        "net": {"preset": "unet-tiny", "overrides": {"dropout": 0.2}},
        "optim": {"lr": 1e-3, "batch_size": 40, "grad_accum": 2, "warmup_steps": 2, "steps": 6},
        "ema": {"half_life_steps": 2},
        "sample": {"sampler": "ddim", "steps": 2, "num": 4, "every": 0},
        "log": {"every": 1, "progress": False},
        "ckpt": {"every": 0},
    }
    return config.resolve(cfg, over)


def tiny_points(**over) -> dict:
    cfg = {
        "data": {"name": "8gaussians", "options": {"n": 500}},
        "process": {"name": "vp"},
        "net": {"preset": "mlp-2d", "overrides": {"width": 32, "depth": 2, "emb_dim": 16}},
        "optim": {"lr": 1e-3, "batch_size": 64, "steps": 6},
        "sample": {"sampler": "euler", "steps": 2, "num": 16, "every": 0},
        "log": {"every": 1, "progress": False},
        "ckpt": {"every": 2},
    }
    return config.resolve(cfg, over)


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_files(a: Path, b: Path, names=("model.safetensors", "ema.safetensors", "state.safetensors")) -> None:
    for name in names:
        ta, tb = tensors(a / name), tensors(b / name)
        assert ta.keys() == tb.keys(), name
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{name}:{k} differs"


# -- configs -------------------------------------------------------------------------------------------------


def test_unknown_config_key_names_key_and_allowed():
    with pytest.raises(ValueError, match=r"unknown config key 'optim.lrr'; allowed: lr, weight_decay"):
        config.resolve({"optim": {"lrr": 1e-3}})
    with pytest.raises(ValueError, match=r"unknown config key 'sampel'"):
        config.resolve({}, ["sampel.steps=3"])
    with pytest.raises(ValueError, match=r"optim.batch_size must be a positive integer, got 0"):
        config.resolve({}, ["optim.batch_size=0"])
    with pytest.raises(ValueError, match="precision 'fp8' unknown"):
        config.resolve({"precision": "fp8"})
    with pytest.raises(ValueError, match="threads must be a positive integer or null, got 0"):
        config.resolve({}, ["threads=0"])


def test_overrides_parse_json_and_files(tmp_path):
    cfg = config.resolve({}, ["optim.lr=3e-4", "optim.betas=[0.5, 0.9]", "data.name=moons", "loss.options.weighting=edm"])
    assert cfg["optim"]["lr"] == 3e-4 and cfg["optim"]["betas"] == [0.5, 0.9]
    assert cfg["data"]["name"] == "moons" and cfg["loss"]["options"] == {"weighting": "edm"}
    toml = tmp_path / "c.toml"
    toml.write_text('seed = 3\n[optim]\nlr = 0.01\n[process]\nname = "flow"\n')
    cfg = config.load(toml)
    assert (cfg["seed"], cfg["optim"]["lr"], cfg["process"]["name"]) == (3, 0.01, "flow")
    assert cfg["optim"]["batch_size"] == config.DEFAULTS["optim"]["batch_size"]  # defaults fill the rest
    assert {"toy2d", "digits", "mnist28", "cifar10-ddpm"} <= set(config.packaged_configs())
    for name in config.packaged_configs():  # every packaged config resolves
        config.load(name)


def test_ddpm_config_has_the_papers_settings():
    c = config.load("cifar10-ddpm")
    assert c["process"] == {"name": "vp-discrete", "options": {"schedule": "linear", "steps": 1000}}
    assert (c["parameterization"]["name"], c["loss"]["options"]["weighting"], c["net"]["preset"]) == ("eps", "simple", "ddpm-cifar10")
    o = c["optim"]
    assert (o["lr"], o["batch_size"], o["warmup_steps"], o["grad_clip"], o["steps"]) == (2e-4, 128, 5000, 1.0, 800000)
    assert c["ema"]["decay"] == 0.9999 and c["data"]["hflip"] and c["net"]["overrides"]["dropout"] == 0.1


def test_building_validates_component_names():
    for key, bad in [("process.name", "vpp"), ("parameterization.name", "epsilon"), ("loss.name", "dsn"),
                     ("sample.sampler", "dpm++2x"), ("net.preset", "unet-huge"), ("data.name", "cifar")]:
        with pytest.raises(ValueError, match="unknown"):
            build(tiny_points(**{key: bad}))


# -- exact resume --------------------------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess or a training run: minutes under load
def test_resume_is_bit_exact(tmp_path):
    """N steps straight == N/2 steps, stop, resume, N/2 steps: weights, EMA, optimizer and RNG, bit for bit.

    The run crosses epoch boundaries mid-batch, uses dropout, random flips and gradient accumulation."""
    cfg = tiny_images(tmp_path)
    straight = train(cfg, tmp_path / "a")
    half = train(cfg, tmp_path / "b", stop_after=3)
    assert half.step == 3 and json.loads((tmp_path / "b" / "state.json").read_text())["step"] == 3
    resumed = train(cfg, tmp_path / "b", resume=True)
    assert straight.step == resumed.step == 6
    assert_same_files(tmp_path / "a", tmp_path / "b")
    sa, sb = (json.loads((tmp_path / d / "state.json").read_text()) for d in "ab")
    assert sa["data_position"] == sb["data_position"] == 6 * 80  # epoch boundaries (150) crossed mid-batch
    # and training did change the weights (so the equality above is not vacuous)
    init = Trainer(cfg, tmp_path / "c").net.state_dict()
    final = tensors(tmp_path / "a" / "model.safetensors")
    assert not all(torch.equal(init[k], final[k]) for k in final)


@pytest.mark.slow  # a subprocess or a training run: minutes under load
def test_label_dropout_trains_the_null_label_and_resumes_exactly(tmp_path):
    """Classifier-free guidance training: with net.label_dropout = p about a fraction p of the labels the
    network sees are the null label -1 and the rest are the data's own labels; the draws come from the
    saved loss generator, so a stopped run still resumes bit for bit."""
    cfg = tiny_points(**{"net.class_conditional": True, "net.label_dropout": 0.5, "optim.steps": 4})
    tr = Trainer(cfg, tmp_path / "seen")
    tr._signals.received = None
    seen, forward = [], tr.net.forward

    def spy(x, noise_input, y=None):
        seen.append(y.clone())
        return forward(x, noise_input, y)

    tr.net.forward = spy
    for _ in range(3):
        tr.train_step()
    y = torch.cat(seen)
    null = (y == -1).float().mean().item()
    assert 0.4 < null < 0.6, null  # 3 x 64 labels: binomial s.e. 0.036
    assert set(y[y >= 0].tolist()) <= set(range(8)) and len(set(y[y >= 0].tolist())) > 1
    straight = train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b", stop_after=2)
    resumed = train(cfg, tmp_path / "b", resume=True)
    assert straight.step == resumed.step == 4
    assert_same_files(tmp_path / "a", tmp_path / "b")
    with pytest.raises(ValueError, match="needs net.class_conditional"):
        config.resolve({}, ["net.label_dropout=0.1"])
    with pytest.raises(ValueError, match=r"label_dropout must be a probability in \[0, 1\), got 1"):
        config.resolve({}, ["net.class_conditional=true", "net.label_dropout=1"])


def test_existing_run_needs_resume(tmp_path):
    train(tiny_points(**{"optim.steps": 2}), tmp_path / "r")
    with pytest.raises(ValueError, match="already holds a checkpoint; pass --resume"):
        train(tiny_points(), tmp_path / "r")


# -- atomic saves, non-finite losses, load_run ---------------------------------------------------------------


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "r"
    tr = Trainer(tiny_points(), out)
    tr._signals.received = None
    for _ in range(2):
        tr.train_step()
    tr.save_checkpoint()
    before = tensors(out / "model.safetensors")
    tr.train_step()
    real, calls = ckpt.save_file, []

    def crashing(*args, **kw):  # write the first temp file, then die as a kill would
        calls.append(1)
        real(*args, **kw)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(ckpt, "save_file", crashing)
    with pytest.raises(KeyboardInterrupt):
        tr.save_checkpoint()
    assert (out / ckpt.TMP).exists()  # the half-written temp checkpoint is there ...
    run = load_run(out, ema=False)  # ... a reader reads the previous checkpoint and leaves the folder alone ...
    assert run.step == 2 and (out / ckpt.TMP).exists()
    ckpt.recover(out)  # ... and the writer's recovery discards it
    assert not (out / ckpt.TMP).exists()
    after = tensors(out / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not all(torch.equal(before[k], v.detach()) for k, v in tr.net.state_dict().items())

    # a crash after the journal's COMPLETE marker is rolled forward instead
    monkeypatch.setattr(ckpt, "save_file", real)
    monkeypatch.setattr(ckpt, "_commit", lambda run_dir: (_ for _ in ()).throw(KeyboardInterrupt("killed")))
    with pytest.raises(KeyboardInterrupt):
        tr.save_checkpoint()
    monkeypatch.undo()
    assert load_run(out, ema=False).step == 3  # a reader already sees the committed step-3 checkpoint
    assert (out / ckpt.TMP / ckpt.MARKER).exists()
    ckpt.recover(out)
    assert load_run(out, ema=False).step == 3 and not (out / ckpt.TMP).exists()
    tr.close()


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "r"
    tr = Trainer(tiny_points(**{"ckpt.every": 2, "optim.steps": 10}), out)
    real = tr.loss_fn

    def poisoned(model, x0, generator=None, **cond):
        loss = real(model, x0, generator=generator, **cond)
        return loss * float("nan") if tr.step == 4 else loss  # the 5th step

    tr.loss_fn = poisoned
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan at step 5.*last good checkpoint \(step 4\)"):
        tr.train()
    assert json.loads((out / "state.json").read_text())["step"] == 4
    saved = tensors(out / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in tr.net.state_dict().items())  # nothing NaN got in
    assert all(torch.isfinite(v).all() for v in saved.values())


def test_load_run_gives_a_working_denoiser(tmp_path):
    tr = train(tiny_points(), tmp_path / "r")
    run = load_run(tmp_path / "r")
    assert run.step == 6 and run.kind == "points" and run.shape == (2,) and run.process.name == "vp"
    x, t = torch.randn(5, 2), torch.full((5,), 0.5)
    ref = type(run.denoiser)(tr.ema.model, tr.process, tr.param)
    torch.testing.assert_close(run.denoiser(x, t), ref(x, t), rtol=0, atol=0)


# -- signals (subprocess) -----------------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess or a training run: minutes under load
def test_sigterm_saves_and_the_run_resumes(tmp_path):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "scorediff", "train", "toy2d", "--out", str(out), "--set", "optim.steps=100000",
           "--set", "log.every=1", "--set", "log.progress=false", "--set", "ckpt.every=0", "--set", "sample.every=0",
           "--set", "data.options.n=500"]
    proc = subprocess.Popen(cmd, env=env_one_thread(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").exists() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    assert b"checkpoint saved" in stderr
    step = json.loads((out / "state.json").read_text())["step"]
    assert 3 <= step < 100000
    # resume in-process (one interpreter start less): it continues from the saved step
    from scorediff.cli import main

    rc = main(["train", "--out", str(out), "--resume", "--set", f"optim.steps={step + 3}", "--set", "sample.num=8"])
    assert rc == 0
    assert json.loads((out / "state.json").read_text())["step"] == step + 3
    assert (out / "samples" / f"step_{step + 3:06d}.png").exists()


# -- DDP (2 gloo processes under torchrun) --------------------------------------------------------------------

DDP_SCRIPT = """
import os, sys, json
import torch
from safetensors.torch import save_file
from scorediff.training import train, config
rank = int(os.environ["RANK"])
cfg = json.loads(sys.argv[1])
base = sys.argv[2]
tr = train(cfg, os.path.join(base, f"run_rank{rank}"))
save_file({k: v.contiguous() for k, v in tr.net.state_dict().items()}, os.path.join(base, f"weights{rank}.safetensors"))
save_file({k: v.contiguous() for k, v in tr.ema.model.state_dict().items()}, os.path.join(base, f"ema{rank}.safetensors"))
"""


@pytest.mark.slow  # a subprocess or a training run: minutes under load
def test_ddp_two_processes_identical_replicas_rank0_writes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(DDP_SCRIPT)
    cfg = tiny_points(**{"optim.steps": 4, "optim.grad_accum": 2, "ckpt.every": 2})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), json.dumps(cfg), str(tmp_path)]
    res = subprocess.run(cmd, env=env_one_thread(), capture_output=True, timeout=180)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    for name in ("weights", "ema"):
        w0, w1 = tensors(tmp_path / f"{name}0.safetensors"), tensors(tmp_path / f"{name}1.safetensors")
        assert all(torch.equal(w0[k], w1[k]) for k in w0), f"{name} replicas differ"
    assert not (tmp_path / "run_rank1").exists()  # only rank 0 writes
    run0 = tmp_path / "run_rank0"
    assert json.loads((run0 / "state.json").read_text())["world_size"] == 2
    assert len((run0 / "metrics.jsonl").read_text().splitlines()) == 4
    # the saved weights are the replicas', and both ranks' RNG streams are in the checkpoint
    saved = tensors(run0 / "model.safetensors")
    w0 = tensors(tmp_path / "weights0.safetensors")
    assert all(torch.equal(saved[k], w0[k]) for k in w0)
    state = tensors(run0 / "state.safetensors")
    assert {"rng.loss.rank0", "rng.loss.rank1"} <= state.keys()
    assert not torch.equal(state["rng.loss.rank0"], state["rng.loss.rank1"])


# -- it learns ---------------------------------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess or a training run: minutes under load
def test_toy_run_learns_the_mixture(tmp_path):
    """Train on samples of the analytic ring mixture (EDM setup); the model's samples must come far closer
    (sliced W2) to fresh samples of the exact mixture than the untrained model's and than the best Gaussian
    fit (the mixture's own mean and covariance, SW2 ~ 0.23) do, and near the exact denoiser's (~ 0.07)."""
    from scorediff import sample

    mix = analytic.ring2d()
    g = torch.Generator().manual_seed(0)
    np.save(tmp_path / "ring.npy", mix.sample(4000, g).numpy().astype(np.float32))
    cfg = config.resolve({
        "data": {"name": "npy", "options": {"path": str(tmp_path / "ring.npy")}},
        "process": {"name": "edm"}, "parameterization": {"name": "edm"},
        "loss": {"name": "dsm", "options": {"weighting": "edm"}},
        "net": {"preset": "mlp-2d", "overrides": {"width": 64, "depth": 3}},
        "optim": {"lr": 3e-3, "batch_size": 256, "warmup_steps": 20, "steps": 400},
        "ema": {"half_life_steps": 30},
        "sample": {"sampler": "heun", "steps": 24, "num": 1000, "every": 0},
        "log": {"every": 100, "progress": False}, "ckpt": {"every": 0},
    })
    untrained = Trainer(cfg, tmp_path / "u")
    trained = train(cfg, tmp_path / "r")
    target = mix.sample(2000, torch.Generator().manual_seed(1)).float()

    def sw(denoiser, process) -> float:
        x = sample(denoiser, process, (2000, 2), sampler="heun", steps=24, seed=2)
        return float(analytic.sliced_wasserstein(x, target, generator=torch.Generator().manual_seed(3)))

    run = load_run(tmp_path / "r")
    sw_trained = sw(run.denoiser, run.process)
    sw_untrained = sw(type(run.denoiser)(untrained.ema.model, run.process, run.param).eval(), run.process)
    sw_exact = sw(mix.denoiser(run.process), run.process)
    gauss = mix.mean() + torch.randn(2000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64) @ \
        torch.linalg.cholesky(mix.covariance()).T
    sw_gauss = float(analytic.sliced_wasserstein(gauss, target, generator=torch.Generator().manual_seed(3)))
    print(f"sliced W2: trained {sw_trained:.3f}, untrained {sw_untrained:.3f}, Gaussian fit {sw_gauss:.3f}, "
          f"exact denoiser {sw_exact:.3f}")
    assert sw_trained < 0.4 * sw_untrained, (sw_trained, sw_untrained)
    assert sw_trained < 0.6 * sw_gauss, (sw_trained, sw_gauss)
    assert sw_trained < sw_exact + 0.06, (sw_trained, sw_exact)
    assert trained.last_sample_path is not None and trained.last_sample_path.exists()
