"""A network conditioned on observed entries, CSDI-style (Tashiro et al. 2021, "CSDI: Conditional Score-based
Diffusion Models for Probabilistic Time Series Imputation", Sec. 4).

net(x, noise_input, y=None, observed=..., observed_mask=...) for x (B, C, *S) (sequences (C, L), images,
video (C, T, H, W)): the conditional observation x_co = observed * m (zero where unobserved) and the mask m
(1 = observed, per channel and position; CSDI's m^co) are concatenated to x along the channels, and the inner
network (any config of a U-Net or DiT, built for 3C input channels and C output channels) maps the 3C channels
to C. Without ``observed`` the mask is all zero: the unconditional model (trained by dropping the condition,
which also allows classifier-free guidance on it). One network serves forecasting (m = the first k steps or
frames), imputation (any m) and frame interpolation (m = some frames): the task is only the mask.

``fill`` chooses what x_co holds where nothing is observed: ``"zeros"`` (CSDI) or ``"previous"``, the last
observed step (frame) before it along the time axis (last observation carried forward; before the first observed
step, that one carried back), per channel and position. With ``"previous"`` every forecast frame sees the last
context frame in place, as image-to-video models concatenate the conditioning frame to every frame's input
(Blattmann et al. 2023, "Stable Video Diffusion"): the network only has to move what it sees, not carry it
across frames.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FILLS = ("zeros", "previous")


def fill_previous(observed: Tensor, mask: Tensor) -> Tensor:
    """``observed`` (B, C, T, ...) with each unobserved entry (mask False) replaced by the observed entry at the
    nearest earlier step (time axis 2), or, before the first observed step, at the nearest later one; entries
    with no observed step at all are 0."""
    T = observed.shape[2]
    steps = torch.arange(T, device=observed.device).reshape(1, 1, T, *([1] * (observed.ndim - 3)))
    m = mask.expand(observed.shape)
    before = torch.where(m, steps, torch.full_like(steps, -1)).cummax(dim=2).values  # last observed <= t
    after = torch.where(m, steps, torch.full_like(steps, T)).flip(2).cummin(dim=2).values.flip(2)  # first >= t
    src = torch.where(before >= 0, before, after)
    found = src < T
    out = observed.gather(2, src.clamp(0, T - 1))
    return torch.where(found, out, torch.zeros_like(out))


class MaskedConditional(nn.Module):
    """CSDI-style conditioning by channel concatenation (module docstring)."""

    def __init__(
        self,
        base: dict | None = None,  # the inner network's config, e.g. {"type": "unet", "dims": 1, "channels": 32}
        in_channels: int = 1,  # data channels C
        size: list[int] | None = None,  # the data's trailing axes S (L; H, W; T, H, W); set from the data's shape
        fill: str = "zeros",  # x_co where unobserved: "zeros" (CSDI) or "previous" (module docstring)
    ):
        super().__init__()
        if fill not in FILLS:
            raise ValueError(f"masked-conditional fill {fill!r} unknown; one of: {', '.join(FILLS)}")
        self.fill = fill
        from . import make  # the package's builder (this module is imported by it)

        base = dict(base or {"type": "unet", "dims": 1, "channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
                             "attention_levels": [1], "dropout": 0.0, "norm_groups": 8})
        if base.get("type") == "masked":
            raise ValueError("a masked-conditional network's base cannot itself be masked-conditional")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        shape = None if size is None else (3 * in_channels, *size)
        overrides = {"in_channels": 3 * in_channels} if shape is None else {}
        self.inner = make(base, shape=shape, out_channels=in_channels, **overrides)

    def forward(self, x: Tensor, noise_input: Tensor, y: Tensor | None = None, observed: Tensor | None = None,
                observed_mask: Tensor | None = None) -> Tensor:
        if (observed is None) != (observed_mask is None):
            raise ValueError("a masked-conditional network needs both cond observed=... and observed_mask=... "
                             "(or neither: unconditional)")
        if observed is None:
            observed = torch.zeros_like(x)
            m = torch.zeros_like(x)
        else:
            m = observed_mask.to(x.dtype).expand(x.shape)
            observed = observed.to(x.dtype).expand(x.shape)
        kwargs = {} if y is None else {"y": y}
        x_co = fill_previous(observed, m.bool()) if self.fill == "previous" else observed * m
        return self.inner(torch.cat([x, x_co, m], dim=1), noise_input, **kwargs)
