"""Token runs on several processes (gloo, loopback): DDP training of discrete diffusion equals one process on the
same global batch, and ``scorediff sample`` / ``likelihood`` of a token run under torchrun give one process's output.

Truth is a single process over the same global batch, with the per-example-keyed loss of tests/test_scaling.py
(each example's time and mask drawn from its own bytes, so that how the batch is split over ranks does not matter).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import env_one_thread, free_port
from safetensors.torch import load_file

from scorediff.cli import main
from scorediff.runs.build import build
from scorediff.training import config
from tests.test_discrete_training import tiny_text
from tests.test_scaling import WORKER, keyed_train


@pytest.mark.slow  # three torchrun launches: ~1 min under load
@pytest.mark.parametrize("block", [None, 4])
def test_token_run_on_two_ranks_equals_one_process(tmp_path, block):
    """MDLM on text, 2 gloo ranks x 8 sequences = one process x 16 (the global batch), step by step (fp32, up to summation order);
    then ``scorediff likelihood`` and ``sample`` of that run under torchrun print and write what one process does.
    With ``block``: block diffusion as text-chars trains it (the DDP-wrapped network's one-call [x_t, x0] pass,
    flat weighting, clipped times). The harness evaluates each example alone, so that the flat loss of an example
    does not depend on the rest of its batch is checked by its own test (tests/test_discrete_blocks.py)."""
    over = {"optim.batch_size": 16, "optim.steps": 3, "optim.lr": 1e-3, "net.overrides": {"dropout": 0.0}}
    if block:
        over.update({"process.options": {"block": block},
                     "loss.options": {"weighting": "flat", "t_range": [0.3, 0.8]}})
    cfg = config.resolve(tiny_text(tmp_path, **over))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    res = subprocess.run([*torchrun, "--master_port", str(free_port()), str(script), json.dumps(cfg),
                          str(tmp_path / "two")], env=env_one_thread(), capture_output=True, timeout=240)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    keyed_train(cfg, tmp_path / "one")  # optim.batch_size is the global batch: each rank took 8 of the 16
    state = json.loads((tmp_path / "two" / "state.json").read_text())
    assert state["world_size"] == 2 and state["data_position"] == 3 * 16
    torch.manual_seed(cfg["seed"])  # the initial weights, as the trainer makes them
    init = build(cfg).net.state_dict()
    trained = load_file(str(tmp_path / "one" / "model.safetensors"))
    assert max(float((trained[k] - init[k]).abs().max()) for k in init) > 1e-3  # the weights moved: not vacuous
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = (load_file(str(tmp_path / r / name)) for r in ("one", "two"))
        assert a.keys() == b.keys()
        for k in a:  # a wrong or doubled batch moves a weight by ~lr = 1e-3 (Adam's step); summation order by
            # ~1e-6 (Adam magnifies it where the zero-initialised adaLN and head leave gradients near 0)
            torch.testing.assert_close(a[k], b[k], atol=5e-5, rtol=0, msg=f"{name}:{k}")

    run = str(tmp_path / "one")
    for cmd, out in (["likelihood", run, "--num", "8", "--elbo-samples", "2", "--json"], "lik{}.json"), \
                    (["sample", run, "--num", "3", "--steps", "4", "--out"], "sam{}.png"):
        assert main([*cmd, str(tmp_path / out.format(1))]) == 0
        res = subprocess.run([*torchrun, "--master_port", str(free_port()), "-m", "scorediff", "--", *cmd,
                              str(tmp_path / out.format(2))], env=env_one_thread(), capture_output=True, timeout=240)
        assert res.returncode == 0, res.stderr.decode()[-3000:]
    assert json.loads((tmp_path / "lik1.json").read_text()) == json.loads((tmp_path / "lik2.json").read_text())
    assert (tmp_path / "sam1.txt").read_text() == (tmp_path / "sam2.txt").read_text()
