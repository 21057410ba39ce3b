"""The DiT backbone: shapes, adaLN-Zero's zero output at construction, conditioning, the DiT-S/2 size,
overfitting a tiny batch, and training through the ordinary config path."""

import pytest
import torch

from scorediff import nets
from scorediff.nets.dit import sincos_2d


def test_shapes_patch_sizes_and_non_square():
    torch.manual_seed(0)
    for p, size in [(1, (8, 8)), (2, (8, 8)), (4, (8, 16)), (2, (6, 10))]:
        net = nets.make("dit-tiny", patch_size=p, image_size=list(size), in_channels=3)
        x = torch.randn(2, 3, *size)
        assert net(x, torch.tensor([1.0, 900.0])).shape == x.shape
    with pytest.raises(ValueError, match="divisible by patch_size"):
        nets.make("dit-tiny", patch_size=3)
    net = nets.make("dit-tiny")
    with pytest.raises(ValueError, match=r"DiT expects \(B, 1, 8, 8\)"):
        net(torch.randn(1, 1, 4, 4), torch.zeros(1))


@pytest.mark.parametrize("pos", ["sincos", "learned"])
def test_output_is_exactly_zero_at_construction(pos):
    torch.manual_seed(0)
    net = nets.make("dit-tiny", pos_embedding=pos, num_classes=3)
    x = torch.randn(4, 1, 8, 8)
    out = net(x, torch.rand(4) * 1000, y=torch.tensor([0, 1, 2, -1]))
    assert torch.equal(out, torch.zeros_like(out))
    # yet gradients reach the zero-initialised output layer, so it trains
    loss = (net(x, torch.rand(4) * 1000) - x).pow(2).mean()
    loss.backward()
    assert net.out.weight.grad.abs().sum() > 0


def test_sincos_embedding_is_distinct_per_token_and_bounded():
    pe = sincos_2d(32, 4, 4)
    assert pe.shape == (16, 32)
    assert pe.abs().max() <= 1.0
    d = torch.cdist(pe, pe) + torch.eye(16)
    assert d.min() > 0.1  # every token position gets its own code


def test_dit_s2_parameter_count():
    # Peebles & Xie (2023), Table 1: DiT-S has 33 M parameters.
    with torch.device("meta"):
        net = nets.make("dit-s-2")
    n = nets.count_parameters(net)
    assert 32e6 < n < 34e6, n


def test_class_labels_change_the_output_and_null_is_accepted():
    torch.manual_seed(0)
    net = nets.make("dit-tiny", num_classes=3)
    for p in net.parameters():  # leave the zero initialisation so that the label's effect is visible
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, 1, 8, 8).expand(3, 1, 8, 8)
    out = net(x, torch.full((3,), 500.0), y=torch.tensor([0, 1, -1]))
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[0], out[2])
    uncond = nets.make("dit-tiny")
    with pytest.raises(ValueError, match="unconditional"):
        uncond(x, torch.zeros(3), y=torch.tensor([0, 1, 2]))


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    net = nets.make("dit-tiny")
    x0 = torch.randn(4, 1, 8, 8)
    s = torch.tensor([100.0, 300.0, 600.0, 900.0])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = (net(x0, s) - x0).pow(2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first


def test_trains_through_a_config_like_a_unet(tmp_path):
    from scorediff.training import load_run, train

    cfg = {"data": {"name": "digits"}, "net": {"preset": "dit-tiny"}, "threads": 1,
           "optim": {"steps": 3, "batch_size": 8, "warmup_steps": 1},
           "sample": {"sampler": "euler", "steps": 2, "num": 4, "every": 0}, "log": {"every": 1},
           "ckpt": {"every": 0}}
    train(cfg, out=tmp_path / "run")
    r = load_run(tmp_path / "run")
    assert r.net.config["type"] == "dit" and r.net.config["image_size"] == [8, 8]
