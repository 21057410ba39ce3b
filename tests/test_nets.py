"""Networks: shapes, the DDPM CIFAR-10 parameter count, conditioning, embeddings, gradients, configs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from scorediff import nets
from scorediff.nets.embeddings import FourierEmbedding, SinusoidalEmbedding

# the denoising networks (the autoencoder and super-resolution presets take other inputs: test_latent, test_cascade)
SMALL_PRESETS = [name for name, c in nets.PRESETS.items()
                 if name not in ("ddpm-cifar10", "dit-s-2") and not name.endswith("-large")
                 and c["type"] in ("unet", "dit", "mlp")]


def _example_shape(net) -> tuple[int, ...]:
    c = net.config
    if c["type"] == "mlp":
        return (c["dim"],)
    if c["type"] == "dit":
        return (c["in_channels"], *c["image_size"]) if isinstance(c["image_size"], list) else (
            c["in_channels"], c["image_size"], c["image_size"])
    return (c["in_channels"], *{1: (8,), 2: (8, 8), 3: (3, 8, 8)}[c.get("dims", 2)])  # sequences, images, video


@pytest.mark.parametrize("name", SMALL_PRESETS)
def test_preset_forward_shape(name):
    torch.manual_seed(0)
    net = nets.make(name)
    x = torch.randn(2, *((1, 28, 28) if name == "unet-28" else _example_shape(net)))
    out = net(x, torch.tensor([3.0, 700.0]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_ddpm_cifar10_parameter_count():
    # Ho et al. (2020) report 35.7M parameters for their CIFAR-10 model; built without allocating.
    with torch.device("meta"):
        net = nets.make("ddpm-cifar10")
    n = nets.count_parameters(net)
    assert abs(n - 35.7e6) / 35.7e6 < 0.01, n


def test_unet_non_square_three_channels():
    torch.manual_seed(0)
    net = nets.make("unet-tiny", in_channels=3, channel_mult=[1, 2, 2])
    for h, w in [(8, 12), (4, 16), (12, 8)]:
        x = torch.randn(2, 3, h, w)
        assert net(x, torch.rand(2) * 1000).shape == (2, 3, h, w)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 3, 6, 8), torch.zeros(1))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.randn(1, 1, 8, 8), torch.zeros(1))


@pytest.mark.parametrize("name", ["unet-tiny", "mlp-2d"])
def test_class_conditioning_and_null_label(name):
    torch.manual_seed(0)
    net = nets.make(name, num_classes=3, **({"out_init_scale": 1.0} if name.startswith("unet") else {}))
    net.eval()
    x = torch.randn(4, *_example_shape(net)).expand(4, *_example_shape(net)).contiguous()
    x[:] = x[0]
    s = torch.full((4,), 500.0)
    out = net(x, s, y=torch.tensor([0, 1, 2, -1]))
    # same input, different labels -> different outputs (the label embedding rows differ)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(out[i], out[j])
    null = net(x, s, y=torch.full((4,), nets.NULL_LABEL))
    assert torch.equal(net(x, s), null)  # y=None is all-null
    assert torch.equal(net(x, s, y=torch.full((4,), 3)), null)  # num_classes is an alias of -1
    assert torch.allclose(out[3], null[3])
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        net(x, s, y=torch.tensor([0, 1, 2, 4]))


def test_unconditional_net_rejects_real_labels():
    net = nets.make("unet-tiny")
    x = torch.randn(2, 1, 8, 8)
    net(x, torch.zeros(2), y=torch.tensor([-1, -1]))  # null labels are fine
    with pytest.raises(ValueError, match="unconditional"):
        net(x, torch.zeros(2), y=torch.tensor([0, 1]))


def test_sinusoidal_embedding_formula_and_distinct():
    emb = SinusoidalEmbedding(16)
    t = torch.arange(0, 1001, dtype=torch.float32)
    e = emb(t).double()
    # independent evaluation of sin(w_k t), cos(w_k t), w_k = 10000^(-k/7)
    k = torch.arange(8, dtype=torch.float64)
    w = 10000.0 ** (-k / 7)
    ref = torch.cat([torch.sin(t.double()[:, None] * w), torch.cos(t.double()[:, None] * w)], dim=1)
    assert torch.allclose(e, ref, atol=2e-4)
    # every integer step in 0..1000 gets its own embedding
    d = torch.cdist(e, e) + torch.eye(len(t), dtype=torch.float64) * 10
    assert d.min() > 1e-3


def test_fourier_embedding_frequencies():
    a, b = FourierEmbedding(2048, scale=16.0, seed=3), FourierEmbedding(2048, scale=16.0, seed=3)
    assert torch.equal(a.W, b.W)  # deterministic in the seed, independent of the global RNG
    assert not torch.equal(a.W, FourierEmbedding(2048, scale=16.0, seed=4).W)
    assert abs(a.W.std().item() - 16.0) < 1.0  # W ~ N(0, scale^2)
    s = torch.tensor([0.0, 0.1])
    e = a(s)
    assert torch.allclose(e[0], torch.cat([torch.zeros(1024), torch.ones(1024)]))
    assert torch.allclose(e[1], torch.cat([torch.sin(2 * math.pi * 0.1 * a.W), torch.cos(2 * math.pi * 0.1 * a.W)]))


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("unet-tiny", {"num_classes": 2, "time_injection": "add", "embedding": "fourier"}),
        ("unet-tiny", {"num_classes": 2, "time_injection": "scale_shift", "skip_rescale": True}),
        ("mlp-2d", {"num_classes": 2, "time_injection": "concat"}),
        ("mlp-2d", {"num_classes": 2, "time_injection": "add", "residual": False}),
    ],
)
def test_gradient_reaches_every_parameter(name, overrides):
    torch.manual_seed(0)
    net = nets.make(name, **overrides)
    x = torch.randn(6, *_example_shape(net))
    y = torch.tensor([0, 1, -1, 0, 1, -1])  # every label row, the null one included
    net(x, torch.rand(6) * 1000, y=y).square().sum().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_mlp_any_shape_and_float64():
    net = nets.make("mlp-2d", shape=(3, 4)).double()
    assert net.config["dim"] == 12
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    out = net(x, torch.rand(5, dtype=torch.float64))
    assert out.shape == x.shape and out.dtype == torch.float64


def test_shape_sets_channels():
    net = nets.make("unet-digits", shape=(3, 8, 8))
    assert net.config["in_channels"] == 3
    assert nets.make("unet-digits", shape=(3, 8, 8), in_channels=2).config["in_channels"] == 2


@pytest.mark.parametrize("name", ["unet-tiny", "unet-digits", "mlp-2d"])
def test_config_json_round_trip(name):
    torch.manual_seed(0)
    net = nets.make(name, **({"out_init_scale": 1.0} if name.startswith("unet") else {})).eval()
    config = json.loads(json.dumps(net.config))
    assert config == net.config
    torch.manual_seed(1)  # different init: only the loaded weights make the outputs agree
    net2 = nets.make(config).eval()
    net2.load_state_dict(net.state_dict())
    x = torch.randn(2, *_example_shape(net))
    s = torch.tensor([1.0, 900.0])
    assert torch.equal(net(x, s), net2(x, s))
    assert nets.count_parameters(net) == nets.count_parameters(net2)


def test_unknown_preset_and_key():
    with pytest.raises(ValueError, match=r"'nope' unknown; one of: .*ddpm-cifar10"):
        nets.make("nope")
    with pytest.raises(ValueError, match=r"'chanels' unknown for type 'unet'; allowed: .*channels"):
        nets.make("unet-tiny", chanels=4)
    with pytest.raises(ValueError, match=r"'transformer' unknown"):
        nets.make({"type": "transformer"})
    with pytest.raises(ValueError, match="time_injection 'film' unknown"):
        nets.make("unet-tiny", time_injection="film")
