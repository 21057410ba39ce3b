"""Write ``tests/data/unet_presets.pt``: what every network preset built on ``nets/unet.py`` computes.

Recorded once, with the U-Net as it was before it became one code path over 1-D, 2-D and video data, so that
``tests/test_sequence_nets.py`` can check that the change left every 2-D preset computing the same function
with the same parameter names (existing run folders keep loading). For each preset: the state-dict keys and
shapes; per-tensor sums of the seeded initial weights (the init order is unchanged); and the output on a
seeded input after the weights are overwritten by seeded draws of unit scale (the default init ends every
residual branch near zero, which would hide a changed forward pass).

    python tests/data/make_unet_presets.py
"""

from __future__ import annotations

from pathlib import Path

import torch

from scorediff import nets

# preset -> (input shape, extra call arguments)
CASES = {
    "ddpm-cifar10": (3, 8, 8),
    "unet-28": (1, 8, 8),
    "unet-digits": (1, 8, 8),
    "unet-tiny": (1, 8, 8),
    "sr-x2": (1, 8, 8),
    "autoencoder-f2": (1, 8, 8),
    "autoencoder-f4": (3, 8, 8),
    "classifier-digits": (1, 8, 8),
}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return nets.make(name).eval()


def perturb(net: torch.nn.Module) -> None:
    """Overwrite every parameter by seeded draws: weights N(0, 1 / fan_in), vectors N(0, 0.1^2)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in sorted(net.named_parameters()):
            std = p[0].numel() ** -0.5 if p.ndim >= 2 else 0.1
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def call(name: str, net: torch.nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, *shape, generator=g)
    t = torch.tensor([3.0, 700.0])
    if name.startswith("autoencoder"):
        return net(x)[0]
    if name.startswith("classifier"):
        return net(x, t)
    if name == "sr-x2":
        low = torch.randn(2, shape[0], shape[1] // 2, shape[2] // 2, generator=g)
        return net(x, t, low_res=low, aug_level=torch.tensor([0.0, 0.1]))
    return net(x, t)


def record() -> dict:
    out = {}
    for name, shape in CASES.items():
        net = build(name)
        sd = net.state_dict()
        entry = {
            "keys": list(sd),
            "shapes": [list(v.shape) for v in sd.values()],
            "init_sums": torch.stack([v.double().sum() for v in sd.values()]),
        }
        perturb(net)
        with torch.no_grad():
            entry["output"] = call(name, net, shape)
        out[name] = entry
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("unet_presets.pt")
    torch.save(record(), path)
    print(path)
