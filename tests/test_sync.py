"""No host synchronisation in the hot loops (DESIGN.md: inputs are checked once, at the entry points).

Turning a device tensor into a Python value (``.item()``, ``float(t)``, ``bool((t < 0).any())``) or running an op
whose output shape depends on the data (``nonzero``, boolean indexing, ``unique``) makes the host wait for the
accelerator. The tests run a whole sampling loop for every registered sampler, on every process it declares, and
the device work of a training step, on PyTorch's ``meta`` device (tensors with shapes and no data: a device that is
not the host, so every such read is caught, with no accelerator needed) under a ``TorchDispatchMode`` that fails
on those ops. The time grid and per-step coefficients are host (CPU) tensors by design and may be read.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from scorediff import losses, parameterizations, processes
from scorediff.parameterizations import NetDenoiser
from scorediff.samplers import SAMPLERS, sample
from scorediff.training.ema import EMA

aten = torch.ops.aten
SYNCING = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default,  # tensor -> Python
           aten.nonzero.default, aten.masked_select.default, aten._unique2.default,  # data-dependent shapes
           aten.unique_consecutive.default, aten.unique_dim.default, aten.repeat_interleave.Tensor}
PROCESSES = ["vp-discrete", "vp", "sub-vp", "ve", "edm", "flow"]
FAST = {"annealed_langevin": {"n_steps_each": 2}}  # its inner Langevin loop twice, not 100 times: the same code


class HostSyncError(AssertionError):
    pass


class NoHostSync(TorchDispatchMode):
    """Fails on any op that would read a non-host tensor back to the host (see the module docstring)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        on_device = any(a.device.type != "cpu" for a in tensors)
        boolean_index = func is aten.index.Tensor and any(i is not None and i.dtype == torch.bool for i in args[1])
        if on_device and (func in SYNCING or boolean_index):
            raise HostSyncError(f"host synchronisation: {func}")
        return func(*args, **kwargs)


class TinyNet(nn.Module):
    """net(x, noise_input) for (B, 2) points: one linear layer over x and the noise input."""

    def __init__(self, dim: int = 2):
        super().__init__()
        self.lin = nn.Linear(dim + 1, dim)

    def forward(self, x, c_noise, **cond):
        return self.lin(torch.cat([x, c_noise[:, None]], dim=1))


def test_the_guard_catches_what_would_synchronise():
    x = torch.ones(3, device="meta")
    for syncing in (lambda: float(x.sum()), lambda: bool((x > 0).any()), lambda: x[x > 0], lambda: x.nonzero()):
        with pytest.raises(HostSyncError), NoHostSync():
            syncing()
    with NoHostSync():  # a host tensor (the time grid) may be read; device arithmetic is fine
        assert float(torch.tensor(2.0)) == 2.0
        (x * 2 + torch.tensor(1.0, dtype=torch.float64)).sum()


CASES = [(name, p) for name, fn in SAMPLERS.items() for p in PROCESSES
         if fn.info.processes is None or p in fn.info.processes]


@pytest.mark.parametrize("sampler,process", CASES, ids=[f"{s}-{p}" for s, p in CASES])
def test_a_sampling_loop_never_synchronises(sampler, process):
    info = SAMPLERS[sampler].info
    if math.isnan(info.nfe_per_step):
        pytest.skip(f"{sampler} is adaptive: its step-size control reads the error estimate on the host by design")
    proc = processes.make(process)
    param = parameterizations.make("edm" if info.denoiser == "any" else "consistency")  # EDM: the 6-check case
    den = NetDenoiser(TinyNet(), proc, param).to("meta")
    x = torch.zeros(4, 2, device="meta")
    with NoHostSync():
        out = sample(den, proc, x, sampler=sampler, steps=5, generator=torch.Generator().manual_seed(0),
                     **FAST.get(sampler, {}))
    assert out.shape == (4, 2) and out.device.type == "meta"


@pytest.mark.parametrize("param", sorted(parameterizations.PARAMETERIZATIONS))
def test_every_parameterization_denoises_without_synchronising(param):
    phase = param == "cld"  # CLD's parameterization reads the phase state (x, v) of its own process
    proc = processes.make("cld" if phase else "vp")
    net = TinyNet(4 if phase else 2)
    den = NetDenoiser(net, proc, parameterizations.make(param)).to("meta")
    with NoHostSync():
        out = sample(den, proc, (4, 2), sampler="cld_heun" if phase else "heun", steps=3, device="meta",
                     generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 2)


@pytest.mark.parametrize("process,param,loss", [("vp-discrete", "eps", "dsm"), ("vp", "v", "dsm"), ("edm", "edm", "dsm"),
                                                ("flow", "velocity", "dsm"), ("ve", "x0", "dsm"),
                                                ("vp-discrete", "eps", "vlb")])
def test_the_device_work_of_a_training_step_never_synchronises(process, param, loss):
    """Loss (time sampling, noising, target, the network), backward, gradient clipping, AdamW and the EMA update:
    the training step's device work. (The trainer then reads one small tensor per step on purpose: the loss, the
    non-finite flag and a stop request, all-reduced together, ``Trainer.train_step``.)"""
    proc = processes.make(process)
    net = TinyNet().to("meta")
    den = NetDenoiser(net, proc, parameterizations.make(param))
    loss_fn = losses.make(loss, proc, den.param)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ema = EMA(net, decay=0.99)
    x0 = torch.zeros(8, 2, device="meta")
    with NoHostSync():
        loss = loss_fn(den, x0, generator=torch.Generator().manual_seed(0)).float().mean()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(net)
    assert loss.device.type == "meta" and grad_norm.device.type == "meta"
