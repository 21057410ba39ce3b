"""Cascaded generation: the super-resolution network's conditioning path, the training loss's noise-conditioning
augmentation, and a 2-stage cascade with exact models whose outputs downsample back to the base samples."""

from __future__ import annotations

import pytest
import torch

import scorediff.processes as P
from scorediff import analytic, nets
from scorediff.cascade import Stage, SuperResolutionLoss, augment, downsample, sample_cascade


def test_super_resolution_net_sees_the_low_res_input_and_the_level():
    torch.manual_seed(0)
    net = nets.make("sr-x2", shape=(1, 8, 8), base={"type": "unet", "channels": 8, "channel_mult": [1, 2],
                                                    "attention_levels": [], "norm_groups": 4, "out_init_scale": 1.0})
    x, s = torch.randn(3, 1, 8, 8), torch.full((3,), 500.0)
    low = torch.randn(3, 1, 4, 4, requires_grad=True)
    out = net(x, s, low_res=low, aug_level=torch.zeros(3))
    assert out.shape == x.shape
    out.sum().backward()
    assert low.grad.abs().sum() > 0  # the low-resolution input reaches the output
    with torch.no_grad():
        a = net(x, s, low_res=low, aug_level=torch.zeros(3))
        b = net(x, s, low_res=low, aug_level=torch.full((3,), 0.5))
    assert not torch.allclose(a, b)  # and so does the augmentation level
    with pytest.raises(ValueError, match="low_res must have shape"):
        net(x, s, low_res=torch.randn(3, 1, 8, 8))
    with pytest.raises(ValueError, match="low-resolution input"):
        net(x, s)


def test_loss_adds_augmented_downsampled_conditioning():
    seen = {}

    def inner(model, x0, generator=None, **cond):
        seen.update(cond)
        return torch.zeros(x0.shape[0])

    x0 = torch.randn(64, 1, 8, 8)
    SuperResolutionLoss(inner, factor=2, aug_max=0.0)(None, x0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(seen["low_res"], downsample(x0, 2))
    torch.testing.assert_close(seen["low_res"], x0.reshape(64, 1, 4, 2, 4, 2).mean((3, 5)))
    loss = SuperResolutionLoss(inner, factor=2, aug_max=0.3)
    loss(None, x0, generator=torch.Generator().manual_seed(0))
    level, low = seen["aug_level"], seen["low_res"]
    assert level.shape == (64,) and float(level.min()) >= 0 and float(level.max()) <= 0.3 and level.std() > 0
    resid = (low - downsample(x0, 2)).flatten(1)
    # the residual of each example is noise of its level's std
    ratio = resid.std(1) / level
    assert abs(float(ratio.median()) - 1.0) < 0.15
    # same generator state, same draws (resume stays exact)
    first = seen["low_res"].clone()
    loss(None, x0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, seen["low_res"])
    with pytest.raises(ValueError, match="factor"):
        SuperResolutionLoss(inner, factor=1)


def _posterior(prior: analytic.GaussianMixture, A: torch.Tensor, y: torch.Tensor, s: float) -> analytic.GaussianMixture:
    """p(x | A x + N(0, s^2 I) = y) for a Gaussian-mixture prior: again a mixture (written here independently)."""
    logw, means, covs = [], [], []
    for k in range(prior.num_components):
        m, S = prior.means[k], prior.covs[k]
        G = A @ S @ A.T + s**2 * torch.eye(A.shape[0], dtype=torch.float64)
        K = S @ A.T @ torch.linalg.inv(G)
        means.append(m + K @ (y - A @ m))
        c = S - K @ A @ S
        covs.append((c + c.T) / 2 + 1e-9 * torch.eye(len(m), dtype=torch.float64))
        mvn = torch.distributions.MultivariateNormal(A @ m, G)
        logw.append(torch.log(prior.weights[k]) + mvn.log_prob(y))
    w = torch.softmax(torch.stack(logw), 0)
    return analytic.GaussianMixture(w, torch.stack(means), torch.stack(covs), event_shape=prior.event_shape)


def test_two_stage_cascade_downsamples_back_to_the_base_samples():
    """Base: the exact 4x4 marginal of a 8x8 mixture; stage: the exact posterior given the low-res image."""
    hi = analytic.mixture64(dim=64, components=4, rank=3, seed=1)
    hi = analytic.GaussianMixture(hi.weights, hi.means, hi.covs, event_shape=(1, 8, 8))
    A = torch.zeros(16, 64, dtype=torch.float64)
    for r in range(4):
        for c in range(4):
            for dr in range(2):
                for dc in range(2):
                    A[r * 4 + c, (2 * r + dr) * 8 + 2 * c + dc] = 0.25
    lo = analytic.GaussianMixture(hi.weights, hi.means @ A.T, A @ hi.covs @ A.T, event_shape=(1, 4, 4))
    proc = P.make("vp")
    s_obs = 1e-3  # the stage's posterior is conditioned on the low-res image up to this noise

    class ExactStage:
        def __init__(self):
            self.cache = {}

        def __call__(self, x, t, low_res, aug_level):
            out = torch.empty_like(x)
            for key in low_res.unique(dim=0):
                rows = (low_res == key).flatten(1).all(1)
                k = tuple(key.flatten().tolist())
                if k not in self.cache:
                    self.cache[k] = _posterior(hi, A, key.flatten().double(), s_obs).denoiser(proc)
                out[rows] = self.cache[k](x[rows], t[rows])
            return out

    base = (lo.denoiser(proc), proc, (1, 4, 4))
    # the stage conditions each row on its own base sample (one exact posterior per distinct low-res image)
    outs = sample_cascade(base, [Stage(ExactStage(), proc, factor=2)], num=4, sampler="heun", steps=20, seed=3)
    assert [tuple(o.shape) for o in outs] == [(4, 1, 4, 4), (4, 1, 8, 8)]
    err = (downsample(outs[1], 2) - outs[0]).abs().max()
    assert float(err) < 0.02
    # and the high-res samples are not just an upsampling: they carry detail the low-res view cannot
    up = torch.nn.functional.interpolate(outs[0], scale_factor=2, mode="nearest")
    assert float((outs[1] - up).abs().mean()) > 0.05


def test_augment_is_noise_of_the_given_std():
    low = torch.zeros(2000, 1, 2, 2)
    out = augment(low, torch.full((2000,), 0.3), torch.Generator().manual_seed(0))
    assert abs(float(out.std()) - 0.3) < 0.01


def test_cascade_from_configs_and_the_cli(tmp_path, capsys):
    import numpy as np

    from scorediff.cli import main

    fast = ["--set", "log.progress=false", "--set", "optim.steps=3", "--set", "sample.num=4", "--set", "sample.steps=2"]
    base, sr = tmp_path / "base", tmp_path / "sr"
    assert main(["train", "digits-4x4", "--out", str(base), *fast]) == 0
    assert main(["train", "digits-sr", "--out", str(sr), *fast]) == 0
    assert (sr / "samples" / "step_000003.png").exists()  # its grid is conditioned on downsampled training data
    capsys.readouterr()
    assert main(["sample", str(base), "--cascade", str(sr), "--num", "5", "--steps", "2",
                 "--out", str(tmp_path / "c.png")]) == 0
    x = np.load(tmp_path / "c.npz")["samples"]
    assert x.shape == (5, 1, 8, 8) and np.isfinite(x).all()
    for argv, word in [(["sample", str(sr), "--num", "2"], "super-resolution stage"),
                       (["sample", str(base), "--cascade", str(base), "--num", "2"], "diffusion model"),
                       (["train", "digits", "--out", str(tmp_path / "x"), *fast, "--set", "cascade.factor=2"],
                        "super_resolution network"),
                       (["train", "digits-sr", "--out", str(tmp_path / "y"), *fast, "--set", "cascade.factor=0"],
                        "cascade stage")]:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and word in err, err
