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

from scorediff.runs.build import build
from scorediff.training import config, train

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
from scorediff.runs.build import build

cfg = config.resolve(json.loads(sys.argv[1]))
torch.manual_seed(cfg["seed"])  # as the trainer does before it builds the network
c = build(cfg)
c.loss = ExampleKeyed(c.loss)
t = train(cfg, sys.argv[2], components=c)
# the trainer let DDP (which holds the process group) go before it destroyed the group
assert not isinstance(t.train_net, torch.nn.parallel.DistributedDataParallel) and t.denoiser.net is t.net
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
    of 4, equal one process training on the same global batch of 16 (up to summation order).

    Under load this once hung about one run in twenty after training: a rank freed its gloo group (held by
    DDP) only when its Trainer was dropped, after the other node had gone; ``Trainer.close`` now lets DDP go
    and destroys the group while both ranks are alive."""
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
        outs = [p.communicate(timeout=150) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        errs = [p.communicate()[1].decode()[-2000:] for p in procs]
        pytest.fail("the two nodes did not finish in 150 s; their last output:\n" + "\n---\n".join(errs))
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
from scorediff.runs.build import build

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
    cfg = digits(**{"optim.steps": 3, "optim.batch_size": 8, "optim.grad_accum": 2, "ckpt.every": 2,
                    "dist.strategy": "fsdp", "dist.activation_checkpointing": True})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), json.dumps(cfg), str(tmp_path)]
    res = subprocess.run(cmd, env=env_one_thread(), capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    keyed_train(digits(**{"optim.steps": 3}), tmp_path / "one")
    assert_close_weights(tmp_path / "one", straight)
    for name in ("model.safetensors", "ema.safetensors", "state.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    state = json.loads((straight / "state.json").read_text())
    assert state["strategy"] == "fsdp" and state["sharded"] == "sharded/step_000003"
    assert [p.name for p in (straight / "sharded").iterdir()] == ["step_000003"]  # older shards removed
    dcp_to_torch_save(straight / state["sharded"], tmp_path / "full.pt")
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    model = load_file(str(straight / "model.safetensors"))
    assert full["model"].keys() == model.keys() and all(torch.equal(full["model"][k], model[k]) for k in model)
    assert (straight / "samples" / "step_000003.png").exists()
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
    with pytest.raises(ValueError, match="eval.every > 0 needs a data set with random access; data 'shards'"):
        config.resolve({"data": {"name": "shards"}, "eval": {"every": 10}})
    with pytest.raises(ValueError, match="data.workers must be a non-negative integer, got -1"):
        config.resolve({"data": {"workers": -1}})


# -- streaming shards -------------------------------------------------------------------------------------------


def id_points(n: int = 50):
    """Points whose value is their index (x_i = i, y_i = i mod 3): a streamed sample tells which one it is."""
    from scorediff.data import ArrayDataset, DataInfo

    return ArrayDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n) % 3, DataInfo((1,), 3))


def test_pack_and_read_back_exactly(tmp_path):
    """digits -> tar shards (exact .npy) and an 8-bit image folder -> shards (PNG) read back to the same
    examples and labels (as multisets: pack shuffles across shards)."""
    import numpy as np
    from PIL import Image

    from scorediff.cli import main
    from scorediff.data import make
    from scorediff.data.shards import TarShards

    def rows(x, y):
        return sorted(zip(x.reshape(len(x), -1).tolist(), y.tolist()))

    assert main(["data", "pack", "digits", "--out", str(tmp_path / "d"), "--shard-size", "500", "--no-progress"]) == 0
    shards, ref = TarShards(str(tmp_path / "d")), make("digits")
    assert shards.counts == [500, 500, 500, 297] and shards.info == ref.info
    got = [shards.read(i) for i in range(4)]
    assert rows(torch.cat([g[0] for g in got]), torch.cat([g[1] for g in got])) == rows(ref.x, ref.y)
    # an image folder with two classes: PNG members, labels from the sub-folders
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(tmp_path / "img" / c / f"{i}.png")
    assert main(["data", "pack", str(tmp_path / "img"), "--out", str(tmp_path / "i"), "--shard-size", "4",
                 "--no-progress"]) == 0
    folder, shards = make("folder", path=str(tmp_path / "img")), TarShards(str(tmp_path / "i"))
    assert shards.info.num_classes == 2 and shards.info.shape == (3, 4, 4)
    got = [shards.read(i) for i in range(2)]
    fx = torch.stack([folder[i][0] for i in range(6)])
    assert rows(torch.cat([g[0] for g in got]), torch.cat([g[1] for g in got])) == rows(fx, torch.tensor(folder.labels))
    # a WebDataset folder without an index (someone else's shards) is counted when opened
    (tmp_path / "i" / "index.json").unlink()
    assert TarShards(str(tmp_path / "i")).counts == [4, 2]


def test_pack_and_shards_errors_are_one_line(tmp_path, capsys):
    from scorediff.cli import main
    from scorediff.data.shards import TarShards, pack

    assert main(["data", "pack", "nope", "--out", str(tmp_path / "x"), "--shard-size", "3"]) == 2
    assert "'nope' is neither a folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="shard size must be a positive integer, got 0"):
        pack(id_points(), tmp_path / "y", 0)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.tar").write_bytes(b"not a tar file at all" * 30)
    with pytest.raises(ValueError, match=r"shard .*a.tar could not be read as a tar file"):
        TarShards(str(tmp_path / "bad"))


def test_stream_order_each_shard_one_reader_workers_and_exact_resume(tmp_path):
    """2 ranks x 2 workers = 4 readers over 8 shards: in every epoch each shard goes to exactly one reader and
    each sample is seen once; the order is a function of the seed; 2 DataLoader worker processes give the same
    batches as the readers taken in turn in-process; a stream restarted at position p continues exactly."""
    from scorediff.data.shards import ReaderPlan, TarShards, pack, reader_stream
    from scorediff.distributed import World
    from scorediff.training.streaming import ShardBatches, _RankReaders

    pack(id_points(50), tmp_path / "s", 7)
    data = TarShards(str(tmp_path / "s"))
    assert len(data.shards) == 8
    for epoch in (0, 1):
        seen, owned = [], []
        for j in range(4):
            plan = ReaderPlan(tuple(data.counts), 0, j, 4)
            owned += plan.shards(epoch)
            skip = sum(sum(data.counts[s] for s in plan.shards(e)) for e in range(epoch))
            length = sum(data.counts[s] for s in plan.shards(epoch))
            stream = reader_stream(data, plan, 1, skip)
            seen += [int(next(stream)[0]) for _ in range(length)]
        assert sorted(owned) == list(range(8)) and sorted(seen) == list(range(50)), epoch
    assert ReaderPlan(tuple(data.counts), 0, 0, 4).shards(0) != ReaderPlan(tuple(data.counts), 1, 0, 4).shards(0)

    def take(batches, n):
        return [batches.next() for _ in range(n)]

    # rank 1 of 2, local batches of 3 (global 6), two worker processes
    world = World(rank=1, world_size=2)
    full = take(ShardBatches(data, 6, 0, world, torch.device("cpu"), workers=2), 9)
    src = _RankReaders(data, 0, 1, 2, 3, 0)
    src.world_readers = 4
    ref = iter(src)  # in-process: the two readers in turn
    for (x, y), (rx, ry) in zip(full, (next(ref) for _ in range(9))):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    assert all(torch.equal(y, x[:, 0].long() % 3) for x, y in full)  # labels travel with their samples
    resumed = ShardBatches(data, 6, 0, world, torch.device("cpu"), workers=2)
    resumed.position = 5 * 6
    for (x, _), (rx, _) in zip(full[5:], take(resumed, 4)):
        assert torch.equal(x, rx)
    with pytest.raises(ValueError, match="8 shard.* cannot feed 12 readers"):
        ShardBatches(data, 6, 0, World(rank=0, world_size=2), torch.device("cpu"), workers=6)


def test_training_on_shards_resumes_mid_epoch_exactly(tmp_path):
    """digits streamed from 4 shards by 2 worker processes: stopped at step 2 (mid-epoch) and resumed equals the
    straight run bit for bit (weights, EMA, optimizer, RNG), and the checkpoint records the data position."""
    from scorediff.cli import main

    assert main(["data", "pack", "digits", "--out", str(tmp_path / "s"), "--shard-size", "450", "--no-progress"]) == 0
    cfg = digits(**{"data.name": "shards", "data.options": {"path": str(tmp_path / "s")}, "data.workers": 2,
                    "optim.steps": 4, "ckpt.every": 0})
    train(cfg, tmp_path / "straight")
    train(cfg, tmp_path / "resumed", stop_after=2)
    assert json.loads((tmp_path / "resumed" / "state.json").read_text())["data_position"] == 2 * 16
    train(cfg, tmp_path / "resumed", resume=True)
    for name in ("model.safetensors", "ema.safetensors", "state.safetensors"):
        a, b = load_file(str(tmp_path / "straight" / name)), load_file(str(tmp_path / "resumed" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_hf_parquet_and_arrow_folders_stream_the_same_examples(tmp_path):
    """A local Hugging Face folder (two parquet files and one arrow file of 8-bit images with a ClassLabel) is
    read shard by shard to exactly the images and labels written."""
    datasets = pytest.importorskip("datasets")  # optional extra `hf`, not installed in CI
    import numpy as np
    from PIL import Image

    from scorediff.data import make

    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (10, 4, 4), dtype=np.uint8)
    labels = [i % 3 for i in range(10)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    full = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in arrays], "label": labels},
                                      features=features)
    (tmp_path / "hf").mkdir()
    full.select(range(4)).to_parquet(str(tmp_path / "hf" / "part-0.parquet"))
    full.select(range(4, 7)).to_parquet(str(tmp_path / "hf" / "part-1.parquet"))
    full.select(range(7, 10)).flatten_indices().save_to_disk(str(tmp_path / "arrow"))
    arrow = next((tmp_path / "arrow").glob("*.arrow"))
    arrow.rename(tmp_path / "hf" / "part-2.arrow")
    ds = make("hf", path=str(tmp_path / "hf"))
    assert ds.counts == [4, 3, 3] and ds.info.num_classes == 3 and ds.info.class_names == ("a", "b", "c")
    assert ds.info.shape == (1, 4, 4) and ds.info.kind == "images"
    x = torch.cat([ds.read(i)[0] for i in range(3)])
    y = torch.cat([ds.read(i)[1] for i in range(3)])
    assert torch.equal(x, torch.from_numpy(arrays).float()[:, None] / 127.5 - 1) and y.tolist() == labels
    with pytest.raises(ValueError, match="has no column 'img'"):
        make("hf", path=str(tmp_path / "hf"), image_column="img")


# -- distributed sampling and evaluation ------------------------------------------------------------------------

SAMPLE_WORKER = '''
import sys
import torch.distributed as dist
from scorediff.cli import main

dist.init_process_group("gloo")  # one group for both commands
run, out = sys.argv[1], sys.argv[2]
common = ["--sampler", "euler_maruyama", "--steps", "3", "--seed", "3"]
assert main(["sample", run, *common, "--num", "45", "--batch", "8", "--out", out + "/two.png"]) == 0
assert main(["eval", run, *common, "--num", "40", "--batch", "8", "--no-cache", "--out", out + "/two.json"]) == 0
dist.destroy_process_group()
'''


@pytest.mark.slow
def test_sample_and_eval_under_torchrun_equal_one_process(toy_run, tmp_path):
    """scorediff sample / eval on 2 gloo ranks (stochastic sampler, 6 and 5 batches split 3 + 3, 3 + 2): the
    gathered .npz holds exactly the samples of a single process with the same seed, none repeated, and the
    metrics are the same."""
    import numpy as np

    from scorediff.cli import main

    common = ["--sampler", "euler_maruyama", "--steps", "3", "--seed", "3"]
    assert main(["sample", str(toy_run), *common, "--num", "45", "--batch", "8", "--out", str(tmp_path / "one.png")]) == 0
    assert main(["eval", str(toy_run), *common, "--num", "40", "--batch", "8", "--no-cache",
                 "--out", str(tmp_path / "one.json")]) == 0
    script = tmp_path / "worker.py"
    script.write_text(SAMPLE_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), str(toy_run), str(tmp_path)]
    res = subprocess.run(cmd, env=env_one_thread(), capture_output=True, timeout=240)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    one, two = (np.load(tmp_path / f"{n}.npz")["samples"] for n in ("one", "two"))
    assert one.shape == (45, 2)
    np.testing.assert_array_equal(two, one)
    assert len(np.unique(one, axis=0)) == 45  # seed-derived noise per batch: no sample drawn twice
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    for key in ("fid", "kid", "precision", "recall", "sliced_w2"):
        assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key
    assert b["num"] == 40


# -- efficiency options -----------------------------------------------------------------------------------------


def test_channels_last_and_fused_adamw_train_the_same_model(tmp_path):
    """perf.channels_last (NHWC weights) and perf.fused_adamw change kernels, not maths: after 3 steps of the
    tiny U-Net the weights equal the default run's up to fp32 rounding."""
    train(digits(**{"optim.steps": 3}), tmp_path / "base")
    for key in ("perf.channels_last", "perf.fused_adamw"):
        out = tmp_path / key
        tr = train(digits(**{"optim.steps": 3, key: True}), out)
        if key == "perf.channels_last":
            conv = next(p for p in tr.net.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[-1] > 1)
            assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        else:
            assert tr.optimizer.defaults["fused"] is True
        assert_close_weights(tmp_path / "base", out)
    with pytest.raises(ValueError, match="perf.compile 'fast' unknown; null \\(off\\) or one of: default"):
        config.resolve({"perf": {"compile": "fast"}})
    with pytest.raises(ValueError, match="perf.tf32 must be true or false"):
        config.resolve({"perf": {"tf32": 1}})


def test_gpu_benchmark_runs_in_its_cpu_smoke_mode():
    """benchmarks/gpu.py --smoke: the tiny U-Net and its diffusers twin of equal size, both precisions, with and
    without channels_last, the sampler-overhead table; the full run needs CUDA (docs/results/scaling.md)."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
    res = subprocess.run([sys.executable, str(script), "--smoke", "--threads", "1"], env=env_one_thread(),
                         capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    out = res.stdout.decode()
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| scorediff unet-tiny")]
    theirs = [line.split("|") for line in out.splitlines() if line.startswith("| diffusers UNet2DModel")]
    assert len(rows) == 8 and len(theirs) == 4  # fp32 / bf16 x channels_last x (fused AdamW for ours)
    assert {r[2] for r in rows} == {t[2] for t in theirs}  # equal parameter counts
    assert out.count("| ratio ours / diffusers |") == 4 and "| dpm_solver_pp_2m | DPMSolverMultistepScheduler | 4 |" in out
