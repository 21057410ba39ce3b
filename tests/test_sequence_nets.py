"""Networks over sequences (B, C, L) and video (B, C, T, H, W): the one U-Net code path, the 1-D DiT, presets.

Truth for the 2-D presets: ``tests/data/unet_presets.pt``, recorded by ``tests/data/make_unet_presets.py`` with the
U-Net as it was before it took on other dimensionalities (same parameter names and shapes, same seeded init,
same outputs under seeded weights).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from scorediff import nets
from scorediff.nets.unet import TemporalAttention, TemporalConv

DATA = Path(__file__).parent / "data"
_spec = importlib.util.spec_from_file_location("make_unet_presets", DATA / "make_unet_presets.py")
presets_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(presets_fixture)
SAVED = torch.load(DATA / "unet_presets.pt", weights_only=True)


@pytest.mark.parametrize("name", sorted(presets_fixture.CASES))
def test_2d_presets_are_unchanged(name):
    saved = SAVED[name]
    net = presets_fixture.build(name)
    sd = net.state_dict()
    assert list(sd) == saved["keys"]  # run folders written before still load
    assert [list(v.shape) for v in sd.values()] == saved["shapes"]
    torch.testing.assert_close(torch.stack([v.double().sum() for v in sd.values()]), saved["init_sums"])
    presets_fixture.perturb(net)
    with torch.no_grad():
        out = presets_fixture.call(name, net, presets_fixture.CASES[name])
    torch.testing.assert_close(out, saved["output"], rtol=1e-5, atol=1e-6)


def _perturbed(net):
    presets_fixture.perturb(net)
    return net.eval()


def _spatial_state(video) -> dict:
    """The video U-Net's state without its temporal layers, renamed to the 2-D U-Net's module indices."""
    rename = {}
    for part in ("down", "up", "mid"):
        layers = [getattr(video, part)] if part == "mid" else list(getattr(video, part))
        for i, layer in enumerate(layers):
            kept = [j for j, m in enumerate(layer) if not isinstance(m, (TemporalAttention, TemporalConv))]
            where = part if part == "mid" else f"{part}.{i}"
            rename.update({f"{where}.{j}.": f"{where}.{n}." for n, j in enumerate(kept)})
    out = {}
    for k, v in video.state_dict().items():
        if not k.startswith(("down.", "up.", "mid.")):
            out[k] = v
        prefix = next((a for a in rename if k.startswith(a)), None)
        if prefix is not None:
            out[rename[prefix] + k[len(prefix):]] = v
    return out


@pytest.mark.parametrize("temporal", ["attention", "conv"])
def test_video_unet_on_one_frame_is_the_2d_unet_per_frame(temporal):
    # Factorised space-time: with T = 1 and the temporal layers silenced, every layer of the video U-Net is the
    # 2-D U-Net's layer with its 1x3x3 kernels read as 3x3 ones.
    torch.manual_seed(0)
    video = _perturbed(nets.make("unet-video-tiny", temporal=temporal, shape=(2, 1, 8, 8)))
    image = nets.make("unet-video-tiny", dims=2, shape=(2, 8, 8))
    with torch.no_grad():
        for m in video.modules():  # silence each temporal layer's last map: the layer becomes the identity
            if isinstance(m, (TemporalAttention, TemporalConv)):
                (m.proj if temporal == "attention" else m.conv).weight.zero_()
                (m.proj if temporal == "attention" else m.conv).bias.zero_()
        target = image.state_dict()
        spatial = _spatial_state(video)
        assert sorted(spatial) == sorted(target)
        image.load_state_dict({k: v.reshape(target[k].shape) for k, v in spatial.items()})
    x = torch.randn(3, 2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([5.0, 300.0, 900.0])
    with torch.no_grad():
        torch.testing.assert_close(video(x, t)[:, :, 0], image(x[:, :, 0], t), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temporal", ["attention", "conv"])
def test_video_unet_mixes_frames_and_sees_their_order(temporal):
    torch.manual_seed(0)
    net = _perturbed(nets.make("unet-video-tiny", temporal=temporal, shape=(1, 4, 8, 8)))
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 1, 4, 8, 8, generator=g), torch.tensor([10.0, 500.0])
    with torch.no_grad():
        out = net(x, t)
        y = x.clone()
        y[:, :, 3] += 1.0  # change the last frame only: the first frame's output moves
        assert float((net(y, t)[:, :, 0] - out[:, :, 0]).abs().max()) > 1e-3
        perm = torch.tensor([2, 0, 3, 1])  # not equivariant to reordering frames
        assert float((net(x[:, :, perm], t) - out[:, :, perm]).abs().max()) > 1e-3


@pytest.mark.parametrize("name,shape", [("unet1d-tiny", (2, 16)), ("dit1d-tiny", (3, 32)), ("unet-video-tiny", (1, 3, 8, 8))])
def test_sequence_and_video_presets_keep_shape_and_dtype(name, shape):
    torch.manual_seed(0)
    net = nets.make(name, shape=shape).double()
    x = torch.randn(2, *shape, dtype=torch.float64)
    out = net(x, torch.tensor([1.0, 900.0], dtype=torch.float64))
    assert out.shape == x.shape and out.dtype == torch.float64
    assert nets.make(net.config).config == net.config  # rebuilt from its config


def test_dit_1d_patches_match_a_direct_patchify():
    torch.manual_seed(0)
    net = _perturbed(nets.make("dit1d-tiny", shape=(2, 16), patch_size=4))
    x = torch.randn(1, 2, 16)
    # token j is the linear map of x[:, :, 4j:4j+4], as a p x C matrix product
    tokens = net.patch(x).transpose(1, 2)
    direct = torch.stack([net.patch.weight.flatten(1) @ x[0, :, 4 * j:4 * j + 4].flatten() for j in range(4)])
    torch.testing.assert_close(tokens[0], direct + net.patch.bias, rtol=1e-5, atol=1e-5)
    assert net(x, torch.tensor([5.0])).shape == x.shape


def test_bad_layouts_are_one_line():
    with pytest.raises(ValueError, match=r"needs data of shape \(C, L\) or \(C, H, W\)"):
        nets.make("dit1d-tiny", shape=(1, 4, 8, 8))
    with pytest.raises(ValueError, match="needs data of shape"):
        nets.make("autoencoder-f2", shape=(1, 16))
    with pytest.raises(ValueError, match="dims must be one of"):
        nets.make("unet1d-tiny", dims=4)
    net = nets.make("unet1d-tiny", shape=(1, 16))
    with pytest.raises(ValueError, match=r"U-Net expects \(B, 1, L\)"):
        net(torch.randn(2, 1, 4, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="L divisible by 2"):
        net(torch.randn(2, 1, 15), torch.zeros(2))


def test_fill_previous_carries_the_last_observed_step_forward_then_the_first_back():
    from scorediff.nets.masked import MaskedConditional, fill_previous

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 7, 2, 3, generator=g)  # video-like (B, C, T, H, W)
    m = torch.rand(3, 2, 7, 1, 1, generator=g) < 0.4  # per channel and frame
    m[0, 0] = False  # nothing observed: zeros
    out = fill_previous(x, m)
    for b in range(3):
        for c in range(2):
            known = [t for t in range(7) if m[b, c, t, 0, 0]]
            for t in range(7):
                if not known:
                    expect = torch.zeros(2, 3)
                else:
                    before = [s for s in known if s <= t]
                    expect = x[b, c, before[-1] if before else known[0]]
                torch.testing.assert_close(out[b, c, t], expect)
    # the network sees only observed entries: changing an unobserved one changes nothing
    net = MaskedConditional({"type": "unet", "dims": 3, "channels": 8, "channel_mult": [1], "num_res_blocks": 1,
                             "attention_levels": [], "dropout": 0.0, "norm_groups": 4}, in_channels=2,
                            fill="previous")
    y = x.clone()
    y[~m.expand_as(x)] = 5.0
    xt = torch.randn(x.shape, generator=g)
    torch.testing.assert_close(net(xt, torch.ones(3), observed=x, observed_mask=m),
                               net(xt, torch.ones(3), observed=y, observed_mask=m))
    with pytest.raises(ValueError, match="fill 'x' unknown"):
        MaskedConditional(fill="x")
