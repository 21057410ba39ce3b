"""The scale-out path on CPU processes (gloo, loopback only): several torchrun "nodes", gradient
accumulation, FSDP2, streaming shards, distributed sampling.

Truth for the training tests is a single process over the same global batch. Each per-rank noise stream of
the loop (``derive_seed(seed, "loss", rank)``) would make a 2-rank run differ from a 1-rank run by design,
so these tests train with ``ExampleKeyed``: the configured loss, with each example's time and noise drawn
from a generator seeded by the example's own bytes. The gradient of a step is then the mean of per-example
gradients that do not depend on how the batch was split; only the summation order differs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import env_one_thread, free_port
from safetensors.torch import load_file

from scorediff.training import config, train
from scorediff.training.components import build

# fp32 weights after a few AdamW steps: summation order moves them by a few ulps (measured: max |diff| 1.5e-8
# at lr 1e-3); a wrong batch, a lost micro-batch or a doubled gradient moves them by ~lr = 1e-3.
ATOL, RTOL = 1e-6, 1e-5

EXAMPLE_KEYED = '''
import hashlib
import pytest
import torch


class ExampleKeyed:
    """``loss`` with each example's (t, noise) from a generator seeded by the example's bytes (see the tests)."""

    def __init__(self, loss):
        self.loss = loss

    def __call__(self, model, x0, generator=None, **cond):
        out = []
        for i in range(x0.shape[0]):
            seed = int.from_bytes(hashlib.sha256(x0[i].detach().cpu().numpy().tobytes()).digest()[:7], "little")
            g = torch.Generator(x0.device).manual_seed(seed)
            out.append(self.loss(model, x0[i: i + 1], generator=g, **{k: v[i: i + 1] for k, v in cond.items()}))
        return torch.cat(out)
'''
_ns: dict = {}
exec(EXAMPLE_KEYED, _ns)
ExampleKeyed = _ns["ExampleKeyed"]

WORKER = EXAMPLE_KEYED + '''
import json, os, sys
from scorediff.training import config, train
from scorediff.training.components import build

cfg = config.resolve(json.loads(sys.argv[1]))
torch.manual_seed(cfg["seed"])  # as the trainer does before it builds the network
c = build(cfg)
c.loss = ExampleKeyed(c.loss)
train(cfg, sys.argv[2], components=c)
'''


def points(**over) -> dict:
    cfg = {
        "data": {"name": "8gaussians", "options": {"n": 200}},
        "process": {"name": "vp"},
        "net": {"preset": "mlp-2d", "overrides": {"width": 32, "depth": 2, "emb_dim": 16}},
        "optim": {"lr": 1e-3, "batch_size": 16, "steps": 3},
        "sample": {"sampler": "euler", "steps": 2, "num": 8, "every": 0},
        "log": {"every": 1, "progress": False, "tensorboard": False},
        "ckpt": {"every": 0}, "threads": 1,
    }
    return config.resolve(cfg, over)


def keyed_train(cfg: dict, out):
    torch.manual_seed(cfg["seed"])  # as the trainer does before it builds the network
    c = build(cfg)
    c.loss = ExampleKeyed(c.loss)
    return train(cfg, out, components=c)


def assert_close_weights(a, b) -> None:
    for name in ("model.safetensors", "ema.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert ta.keys() == tb.keys()
        for k in ta:
            torch.testing.assert_close(ta[k], tb[k], atol=ATOL, rtol=RTOL, msg=f"{name}:{k}")


def weights_moved(run) -> float:
    """How far training moved the weights from their initial values (so that equality is not vacuous)."""
    torch.manual_seed(0)  # the trainer's initial weights come from the seed
    init = build(points()).net.state_dict()
    return max(float((v - init[k]).abs().max()) for k, v in load_file(str(run / "model.safetensors")).items())


# -- gradient accumulation ------------------------------------------------------------------------------------


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    """4 micro-batches of 4 = one batch of 16, step by step (fp32, up to summation order); a run that drops a
    micro-batch (accumulation 4 over a batch of 3 x 4 would be another data set) is told apart."""
    keyed_train(points(), tmp_path / "big")
    keyed_train(points(**{"optim.batch_size": 4, "optim.grad_accum": 4}), tmp_path / "acc")
    assert weights_moved(tmp_path / "big") > 1e-3
    assert_close_weights(tmp_path / "big", tmp_path / "acc")
    # the same check tells a different batch apart: 2 micro-batches of 4 (half the data) is not the big batch
    keyed_train(points(**{"optim.batch_size": 4, "optim.grad_accum": 2}), tmp_path / "half")
    a, b = (load_file(str(tmp_path / r / "model.safetensors")) for r in ("big", "half"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) > 100 * ATOL


# -- several nodes ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_torchrun_nodes_equal_one_process(tmp_path):
    """Two torchrun "nodes" (c10d rendezvous on 127.0.0.1, one gloo process each), each rank 2 micro-batches
    of 4, equal one process training on the same global batch of 16 (up to summation order)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cfg = points(**{"optim.batch_size": 8, "optim.grad_accum": 2})
    port = free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
         "--node_rank", str(r), "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
         "--rdzv_id", "scaling-test", "--local_addr", "127.0.0.1", "--max_restarts", "0",
         str(script), json.dumps(cfg), str(tmp_path / "nodes")],
        env=env_one_thread(), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in range(2)]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()[-3000:]
    keyed_train(points(), tmp_path / "one")
    state = json.loads((tmp_path / "nodes" / "state.json").read_text())
    assert state["world_size"] == 2 and state["data_position"] == 3 * 16
    assert weights_moved(tmp_path / "one") > 1e-3
    assert_close_weights(tmp_path / "one", tmp_path / "nodes")


# -- FSDP2 ------------------------------------------------------------------------------------------------------

FSDP_WORKER = EXAMPLE_KEYED + '''
import json, os, sys
import torch.distributed as dist
from scorediff.training import config, train
from scorediff.training.components import build

dist.init_process_group("gloo")  # held across the three trainings below


def keyed(cfg, out, **kw):
    torch.manual_seed(cfg["seed"])
    c = build(cfg)
    c.loss = ExampleKeyed(c.loss)
    return train(cfg, out, components=c, **kw)


cfg = config.resolve(json.loads(sys.argv[1]))
base = sys.argv[2]
keyed(cfg, os.path.join(base, "straight"))
keyed(cfg, os.path.join(base, "resumed"), stop_after=2)
keyed(cfg, os.path.join(base, "resumed"), resume=True)
dist.destroy_process_group()
'''


def digits(**over) -> dict:
    return points(**{"data.name": "digits", "data.options": {}, "process.name": "edm", "parameterization.name": "edm",
                     "net.preset": "unet-tiny", "net.overrides": {}, "optim.steps": 4, **over})


@pytest.mark.slow
def test_fsdp_two_ranks_equal_one_process_and_resume_exactly(tmp_path):
    """FSDP2 over 2 gloo ranks (each U-Net block sharded, activations checkpointed per block, 2 micro-batches of 4
    per rank) equals one process on the same global batch of 16; a run stopped at step 2 and resumed from its
    sharded checkpoint equals the straight run bit for bit; the consolidated model.safetensors holds the shards."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from scorediff.training import load_run

    script = tmp_path / "worker.py"
    script.write_text(FSDP_WORKER)
    cfg = digits(**{"optim.batch_size": 8, "optim.grad_accum": 2, "ckpt.every": 2, "dist.strategy": "fsdp",
                    "dist.activation_checkpointing": True})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), json.dumps(cfg), str(tmp_path)]
    res = subprocess.run(cmd, env=env_one_thread(), capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    keyed_train(digits(), tmp_path / "one")
    assert_close_weights(tmp_path / "one", straight)
    for name in ("model.safetensors", "ema.safetensors", "state.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    state = json.loads((straight / "state.json").read_text())
    assert state["strategy"] == "fsdp" and state["sharded"] == "sharded/step_000004"
    assert [p.name for p in (straight / "sharded").iterdir()] == ["step_000004"]  # older shards removed
    dcp_to_torch_save(straight / state["sharded"], tmp_path / "full.pt")
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    model = load_file(str(straight / "model.safetensors"))
    assert full["model"].keys() == model.keys() and all(torch.equal(full["model"][k], model[k]) for k in model)
    assert (straight / "samples" / "step_000004.png").exists()
    load_run(straight)  # an ordinary run folder to every reader


def test_activation_checkpointing_gives_the_same_gradients():
    """Recomputing each block in backward changes memory, not maths: identical gradients (U-Net and DiT)."""
    from scorediff.nets import make
    from scorediff.training.parallel import checkpoint_blocks

    for preset in ("unet-tiny", "dit-tiny"):
        grads = []
        for ac in (False, True):
            torch.manual_seed(0)
            net = make(preset)
            if ac:
                assert checkpoint_blocks(net) >= 2
            x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
            net(x, torch.tensor([1.0, 200.0, 900.0])).square().mean().backward()
            grads.append({n: p.grad for n, p in net.named_parameters()})
        assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0]), preset


def test_dist_config_is_checked():


    with pytest.raises(ValueError, match="dist.strategy 'zero3' unknown; one of: ddp, fsdp"):
        config.resolve({"dist": {"strategy": "zero3"}})
    with pytest.raises(ValueError, match="eval.every > 0 needs dist.strategy"):
        config.resolve({"dist": {"strategy": "fsdp"}, "eval": {"every": 10}})
