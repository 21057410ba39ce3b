"""EMA warm-up, learning-rate schedules and the time budget (training/ema.py, training/lr_schedule.py).

The EMA is checked against the explicit weighted sum of the iterates it averages; schedules against
their closed forms at chosen points; the budget with an injected clock (one second per reading), so the
tests never wait and never depend on the machine's speed.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from scorediff.cli import main
from scorediff.training import Trainer, config
from scorediff.training.ema import EMA, decay_from, ema_decay_at
from scorediff.training.lr_schedule import lr_at, lr_factor, progress, short_run_warning
from tests.test_training import assert_same_files, tiny_images, tiny_points

# -- EMA warm-up ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step, expected", [
    (0, 0.0),  # the first average is the model itself
    (1, 0.5 ** (1 / 5.0)),  # h_1 = min(100, 5 * 1) = 5
    (10, 0.5 ** (1 / 50.0)),  # h_10 = 50
    (20, 0.5 ** (1 / 100.0)),  # the cap h / r = 20 steps reached: the configured half-life from now on
    (1000, 0.5 ** (1 / 100.0)),
])
def test_ema_decay_at_chosen_steps_matches_the_rampup_formula(step, expected):
    decay = decay_from(None, 100.0)
    assert ema_decay_at(step, decay, rampup_ratio=5.0) == pytest.approx(expected, rel=1e-12)
    assert ema_decay_at(step, decay, rampup_ratio=None) == decay  # off: the fixed decay


def test_ema_equals_the_weighted_sum_of_iterates_with_its_init_weight_and_age():
    """theta_ema after K updates = sum_i w_i theta_i with w_0 = prod beta_j and w_i = (1 - beta_{i-1}) prod_{j>=i}
    beta_j; init_weight = w_0, mean_step = sum_i w_i i. Computed here from the betas, independently of EMA."""
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    iterates = [torch.cat([p.detach().flatten().double() for p in net.parameters()])]
    ema = EMA(net, decay_from(None, 8.0), rampup_ratio=0.5)
    betas = []
    for k in range(30):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        iterates.append(torch.cat([p.detach().flatten().double() for p in net.parameters()]))
        betas.append(ema_decay_at(k, ema.decay, 0.5))
        ema.update(net)
    weights = [math.prod(betas)] + [(1 - betas[i - 1]) * math.prod(betas[i:]) for i in range(1, 31)]
    assert sum(weights) == pytest.approx(1.0, abs=1e-12)
    expected = sum(w * th for w, th in zip(weights, iterates))
    got = torch.cat([p.flatten().double() for p in ema.model.parameters()])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert ema.init_weight == pytest.approx(weights[0], abs=1e-15) and ema.init_weight == 0.0  # beta_0 = 0
    assert ema.mean_step == pytest.approx(sum(w * i for i, w in enumerate(weights)), rel=1e-12)
    assert ema.age == pytest.approx(30 - ema.mean_step)


def _distances(tmp_path, name, rampup):
    cfg = tiny_points(**{"optim.steps": 10, "ema.half_life_steps": 1000, "ema.rampup_ratio": rampup})
    t = Trainer(cfg, tmp_path / name)
    init = {k: v.clone() for k, v in t.net.state_dict().items()}
    t.train()
    t.close()
    flat = lambda d: torch.cat([d[k].flatten() for k in sorted(d)])  # noqa: E731
    ema, raw, start = flat(t.ema.model.state_dict()), flat(t.net.state_dict()), flat(init)
    return float((ema - raw).norm()), float((ema - start).norm()), t.ema.init_weight


def test_after_k_steps_the_ema_is_closer_to_the_raw_weights_than_to_the_initial_ones(tmp_path):
    to_raw, to_init, w0 = _distances(tmp_path, "warm", 0.05)
    assert to_raw < to_init and w0 == 0.0
    # without the warm-up a 1000-step half-life keeps the average at the initial weights (the test can fail)
    to_raw, to_init, w0 = _distances(tmp_path, "off", None)
    assert to_raw > to_init and w0 == pytest.approx(0.5 ** (10 / 1000))


def test_resume_in_the_middle_of_the_ema_warmup_is_bit_exact(tmp_path):
    cfg = tiny_images(tmp_path, **{"ema.half_life_steps": 100, "ema.rampup_ratio": 0.5})  # warm-up: 200 steps
    a = Trainer(cfg, tmp_path / "a")
    a.train()
    a.close()
    b = Trainer(cfg, tmp_path / "b")
    b.train(stop_after=3)
    b.close()
    b = Trainer(cfg, tmp_path / "b", resume=True)
    assert b.ema.steps == 3 and 0 < ema_decay_at(3, b.ema.decay, 0.5) < b.ema.decay  # mid warm-up
    b.train()
    b.close()
    assert_same_files(tmp_path / "a", tmp_path / "b")
    sa, sb = (json.loads((tmp_path / d / "state.json").read_text())["ema"] for d in "ab")
    assert sa == sb and sa["steps"] == 6


# -- learning-rate schedules ---------------------------------------------------------------------------------


def _cfg(**optim) -> dict:
    return config.resolve({"optim": {"lr": 1.0, "steps": 100, **optim}})


def test_schedules_match_their_formulas():
    # constant with DDPM's linear warm-up in steps
    c = _cfg(warmup_steps=10)
    assert [lr_at(c, k) for k in (0, 4, 9, 50)] == pytest.approx([0.1, 0.5, 1.0, 1.0])
    # cosine: 1/2 (1 + cos(pi p)), p = (k + 1) / steps
    c = _cfg(schedule="cosine")
    for k in (0, 24, 49, 74, 99):
        assert lr_at(c, k) == pytest.approx(0.5 * (1 + math.cos(math.pi * (k + 1) / 100)))
    assert lr_at(c, 49) == pytest.approx(0.5) and lr_at(c, 99) == pytest.approx(0.0, abs=1e-15)
    # inv_sqrt with a 10 % warm-up: ramps to 1 at p = 0.1, then 1 / sqrt(p / 0.1)
    c = _cfg(schedule="inv_sqrt", warmup_fraction=0.1)
    assert lr_at(c, 4) == pytest.approx(0.5) and lr_at(c, 9) == pytest.approx(1.0)
    assert lr_at(c, 39) == pytest.approx(0.5) and lr_at(c, 99) == pytest.approx(1 / math.sqrt(10))
    # relative to a time budget: progress is the larger of the step and the time fractions
    c = config.resolve({"optim": {"lr": 1.0, "steps": 10**6, "schedule": "cosine", "max_minutes": 1}})
    assert progress(c, 0, elapsed=30.0) == pytest.approx(0.5) and lr_at(c, 0, elapsed=30.0) == pytest.approx(0.5)
    assert lr_factor(c, 5, elapsed=60.0) == pytest.approx(0.0, abs=1e-15)


def test_schedule_keys_are_validated():
    with pytest.raises(ValueError, match="optim.schedule 'linear' unknown; one of: constant, cosine, inv_sqrt"):
        config.resolve({}, ["optim.schedule=linear"])
    with pytest.raises(ValueError, match=r"optim.warmup_fraction must be a number in \[0, 1\)"):
        config.resolve({}, ["optim.warmup_fraction=1.5"])
    with pytest.raises(ValueError, match="optim.max_minutes must be a positive number, got 0"):
        config.resolve({}, ["optim.max_minutes=0"])
    with pytest.raises(ValueError, match="ema.rampup_ratio must be a positive number"):
        config.resolve({}, ["ema.rampup_ratio=-1"])


def test_short_run_warning_fires_for_a_run_shorter_than_its_warmup_and_not_for_a_normal_one():
    long_gpu = config.load("mnist28")  # 1000 warm-up steps, EMA half-life 2000
    assert "shorter than its learning-rate warm-up (1000 steps)" in short_run_warning(long_gpu, 251)
    assert short_run_warning(long_gpu, 100000) is None
    assert short_run_warning(config.load("digits"), 1500) is None
    # without EMA warm-up the half-life counts in full
    assert short_run_warning(config.resolve({}, ["ema.rampup_ratio=null", "ema.half_life_steps=500"]), 1200)


def test_train_command_warns_about_a_short_run(tmp_path, capsys):
    fast = ["--set", "log.progress=false", "--set", "sample.num=4", "--set", "sample.steps=2",
            "--set", "data.options.n=200", "--out"]
    assert main(["train", "toy2d", "--set", "optim.steps=2", "--set", "optim.warmup_steps=50", *fast,
                 str(tmp_path / "short")]) == 0
    assert "warning: the planned run (2 steps) is shorter than its learning-rate warm-up" in capsys.readouterr().err
    assert main(["train", "toy2d", "--set", "optim.steps=2", "--set", "optim.warmup_steps=0", *fast,
                 str(tmp_path / "ok")]) == 0
    assert "warning" not in capsys.readouterr().err


# -- scorediff sample: which weights, and the EMA-age warning ------------------------------------------------


def test_sample_says_which_weights_and_warns_about_an_ema_of_initial_weights(tmp_path, capsys):
    base = ["--set", "optim.steps=3", "--set", "log.progress=false", "--set", "sample.num=4",
            "--set", "sample.steps=2", "--set", "data.options.n=200", "--set", "ema.half_life_steps=1000"]
    assert main(["train", "toy2d", *base, "--set", "ema.rampup_ratio=null", "--out", str(tmp_path / "old")]) == 0
    assert main(["train", "toy2d", *base, "--out", str(tmp_path / "warm")]) == 0
    capsys.readouterr()
    args = ["--steps", "2", "--num", "8", "--out"]
    assert main(["sample", str(tmp_path / "old"), *args, str(tmp_path / "a.png")]) == 0
    err = capsys.readouterr().err
    assert "sampled with the EMA weights of step 3" in err
    assert "warning: the EMA average of step 3 is still 100% the network's initial random weights" in err
    assert main(["sample", str(tmp_path / "warm"), *args, str(tmp_path / "b.png")]) == 0
    err = capsys.readouterr().err
    assert "sampled with the EMA weights of step 3" in err and "0% initial weights" in err and "warning" not in err
    assert main(["sample", str(tmp_path / "old"), "--raw", *args, str(tmp_path / "c.png")]) == 0
    err = capsys.readouterr().err
    assert "sampled with the raw weights of step 3" in err and "warning" not in err


# -- the time budget -----------------------------------------------------------------------------------------


class Clock:
    """A fake monotonic clock: every reading is one second after the previous one."""

    def __init__(self):
        self.now = -1.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _budget_run(cfg: dict, out, resume: bool = False, stop_after: int | None = None) -> Trainer:
    t = Trainer(cfg, out, resume=resume)
    t.clock = Clock()
    t.train(stop_after=stop_after)
    t.close()
    return t


def test_budget_stops_with_checkpoint_and_grid_and_resumes_exactly(tmp_path):
    # 8 "seconds" of training at one second per step; the step count alone would allow 1000 steps
    cfg = tiny_images(tmp_path, **{"optim.steps": 1000, "optim.max_minutes": 8 / 60, "optim.schedule": "cosine",
                                   "optim.warmup_fraction": 0.25, "optim.grad_accum": 1})
    a = _budget_run(cfg, tmp_path / "a")
    assert a.stopped_by == "budget" and a.step == 8 and a.elapsed == 8.0
    assert json.loads((tmp_path / "a" / "state.json").read_text())["elapsed_s"] == 8.0
    assert (tmp_path / "a" / "samples" / "step_000008.png").exists()
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    # the schedule ran on the budget: warm-up over 2 s, then cosine to 0 at 8 s (step k starts at k seconds)
    expected = [1e-3 * min(1, (k / 8) / 0.25) * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]
    assert lrs[1:] == pytest.approx(expected[1:], rel=1e-12)
    # stopped at step 3 and resumed: bit for bit the straight run, and it stops at the same budget
    b = _budget_run(cfg, tmp_path / "b", stop_after=3)
    assert b.step == 3 and b.stopped_by is None
    b = _budget_run(cfg, tmp_path / "b", resume=True)
    assert b.step == 8 and b.stopped_by == "budget"
    assert_same_files(tmp_path / "a", tmp_path / "b")
    # a run stopped by its budget continues its schedule under a larger one (from its saved 8 seconds)
    longer = config.resolve(cfg, {"optim.max_minutes": 12 / 60})
    c = _budget_run(longer, tmp_path / "a", resume=True)
    assert c.step == 12 and c.elapsed == 12.0
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()][8:]
    assert lrs == pytest.approx([lr_at(longer, k, float(k)) for k in range(8, 12)], rel=1e-12)
    assert min(lrs) > 0  # under the 8-second budget the lr had reached 0; now it anneals over 12


# -- the mnist-cpu preset ------------------------------------------------------------------------------------


def test_mnist_cpu_preset_is_a_15_minute_budgeted_28x28_run(tmp_path):
    from PIL import Image

    from scorediff.training.loop import build

    cfg = config.load("mnist-cpu")
    o = cfg["optim"]
    assert (o["max_minutes"], o["schedule"], cfg["ema"]["rampup_ratio"]) == (15, "cosine", 0.05)
    assert o["warmup_fraction"] is not None and o["steps"] >= 10**5  # the budget, not the step count, ends it
    # a few hundred steps (what 15 minutes give on 2 busy cores) is no short run for it
    assert short_run_warning(cfg, 300) is None
    # it builds on a folder of 28x28 grey images (the MNIST files are not here) and its net fits them
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((torch.rand(28, 28) * 255).byte().numpy(), mode="L").save(folder / f"{i}.png")
    cfg = config.load("mnist-cpu", {"data.name": "folder", "data.options": {"path": str(folder), "mode": "gray",
                                                                            "size": 28}})
    c = build(cfg)
    assert tuple(c.info["shape"]) == (1, 28, 28)
    with torch.no_grad():
        assert c.net(torch.zeros(2, 1, 28, 28), torch.zeros(2)).shape == (2, 1, 28, 28)
