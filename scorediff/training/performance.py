"""Accelerator efficiency options of a training run (config section ``perf``), each off by default and to be
switched on where ``benchmarks/gpu.py`` shows it wins on the user's hardware:

- ``channels_last``: 4-D weights (and so the convolution activations) in NHWC memory order, the layout tensor
  cores and cuDNN's fastest kernels use;
- ``compile``: ``torch.compile`` of the network being trained, with this mode (null: off; ``"default"``,
  ``"reduce-overhead"`` (CUDA graphs), ``"max-autotune"``, ``"max-autotune-no-cudagraphs"``);
- ``fused_adamw``: AdamW's fused kernel (one launch for all parameters);
- ``tf32``: TensorFloat-32 matmuls and convolutions on Ampere or newer GPUs (10-bit mantissa products,
  fp32 accumulation); a process-wide switch, with no effect on a CPU.

None of them changes what is computed beyond floating-point rounding, and every one keeps a resumed run exact
(fused AdamW is deterministic; the layout and the compiled kernels do not depend on the step).
"""

from __future__ import annotations

import torch
from torch import nn


def prepare(net: nn.Module, perf: dict, device: torch.device) -> nn.Module:
    """Memory layout and math mode, before the network is copied (EMA), wrapped or sharded."""
    if perf["tf32"] and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if perf["channels_last"]:
        net.to(memory_format=torch.channels_last)  # moves only the 4-D (convolution) weights
    return net


def optimizer_options(perf: dict) -> dict:
    """Extra keyword arguments of ``torch.optim.AdamW``."""
    return {"fused": True} if perf["fused_adamw"] else {}


def compiled(train_net: nn.Module, perf: dict) -> nn.Module:
    """The module the training step calls: ``train_net`` itself or its ``torch.compile``; the weights, the
    optimizer and the checkpoints keep referring to the uncompiled network."""
    return torch.compile(train_net, mode=perf["compile"]) if perf["compile"] else train_net
