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
