"""Latent diffusion: the KL autoencoder, its objective, the latent scale, the diffusers AutoencoderKL adapter,
and the whole latent pipeline (encode, scale, sample in latent space, decode) on blob images whose position
distribution is known."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import scorediff.processes as P
from scorediff import analytic, nets
from scorediff.latent import (
    AutoencoderCodec,
    LatentDataset,
    autoencoder_loss,
    kl_divergence,
    load_diffusers_vae,
    measure_scale,
)
from scorediff.samplers import sample

POSITIONS = [(2, 2), (2, 5), (5, 3)]  # blob centres on an 8x8 image
WEIGHTS = [0.5, 0.3, 0.2]


def blob(r: float, c: float) -> torch.Tensor:
    ii, jj = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    return (2 * torch.exp(-((ii - r) ** 2 + (jj - c) ** 2) / 1.5) - 1)[None]


class Blobs(torch.utils.data.Dataset):
    """Gaussian blobs at one of three positions (class = position), slightly jittered."""

    def __init__(self, n: int, seed: int = 0, jitter: float = 0.15):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.multinomial(torch.tensor(WEIGHTS), n, replacement=True, generator=g)
        d = torch.randn(n, 2, generator=g) * jitter
        self.x = torch.stack([blob(POSITIONS[k][0] + d[i, 0], POSITIONS[k][1] + d[i, 1])
                              for i, k in enumerate(self.y.tolist())])
        self.info = {"shape": [1, 8, 8], "num_classes": 3, "kind": "images"}

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


@pytest.fixture(scope="module")
def trained_ae():
    torch.manual_seed(0)
    ae = nets.make("autoencoder-f2", channels=16)
    data = Blobs(256)
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(250):
        idx = torch.randint(0, len(data), (32,), generator=g)
        loss = autoencoder_loss(ae, data.x[idx], generator=g, kl_weight=1e-6).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ae.eval()


def test_autoencoder_shapes_and_errors():
    ae = nets.make("autoencoder-f4", channels=8)
    x = torch.randn(2, 3, 16, 16)
    mean, logvar = ae.encode(x)
    assert mean.shape == logvar.shape == (2, 4, 4, 4) and ae.factor == 4
    assert ae.decode(mean).shape == x.shape
    with pytest.raises(ValueError, match="divisible"):
        ae.encode(torch.randn(1, 3, 10, 16))
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        ae.decode(torch.randn(1, 3, 4, 4))


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(kl_divergence(mean, logvar), ref)


def test_trained_autoencoder_round_trip_and_unit_latent_scale(trained_ae):
    test = Blobs(128, seed=5)
    codec = AutoencoderCodec(trained_ae)
    rec = codec.decode(codec.encode(test.x))
    # reconstruction error far below the data's own spread
    assert float((rec - test.x).pow(2).mean()) < 0.05 * float(test.x.var())
    train_ds = LatentDataset(Blobs(256), codec, source="mem")
    assert train_ds.info["shape"] == [4, 4, 4] and train_ds.info["kind"] == "latents"
    assert abs(float(train_ds.z.std()) - 1.0) < 1e-4  # the measured scale, on the data it was measured on
    held = codec.encode(test.x) * train_ds.scale
    assert abs(float(held.std()) - 1.0) < 0.1  # and on held-out data


def test_latent_samples_decode_onto_the_data(trained_ae):
    """The latent pipeline end to end, with the exact model of the latents: a mixture around each position's
    latent, sampled in latent space by a registered sampler and decoded. Decoded samples must be blobs at the
    three positions, in the right proportions."""
    codec = AutoencoderCodec(trained_ae)
    ds = LatentDataset(Blobs(512), codec, source="mem")
    means = torch.stack([ds.z[ds.y == k].mean(0).flatten() for k in range(3)])
    covs = torch.stack([ds.z[ds.y == k].flatten(1).T.cov() + 1e-3 * torch.eye(64) for k in range(3)])
    prior = analytic.GaussianMixture(WEIGHTS, means, covs, event_shape=(4, 4, 4))
    proc = P.make("vp")
    z = sample(prior.denoiser(proc), proc, (600, 4, 4, 4), sampler="heun", steps=25, seed=0)
    x = ds.decode(z)
    assert x.shape == (600, 1, 8, 8)
    templates = torch.stack([blob(*p) for p in POSITIONS])
    d = (x[:, None] - templates[None]).pow(2).flatten(2).mean(2)
    nearest = d.argmin(1)
    freq = torch.bincount(nearest, minlength=3).double() / len(nearest)
    assert float((freq - torch.tensor(WEIGHTS, dtype=torch.float64)).abs().sum() / 2) < 0.06
    assert float(d.min(1).values.median()) < 0.02  # on the blobs (decoded N(0, I) latents: ~0.1)


FAST = ["--set", "log.progress=false", "--set", "optim.steps=3", "--set", "sample.num=4", "--set", "sample.steps=2"]


def test_autoencoder_and_latent_diffusion_from_configs_and_the_cli(tmp_path, capsys):
    from scorediff import data
    from scorediff.cli import main
    from scorediff.training import load_codec, load_run

    ae_run, lat_run = tmp_path / "ae", tmp_path / "lat"
    assert main(["train", "digits-autoencoder", "--out", str(ae_run), *FAST]) == 0
    assert (ae_run / "samples" / "step_000003.png").exists()  # the autoencoder's grid: reconstructions
    codec = load_codec(ae_run)
    assert isinstance(codec, AutoencoderCodec) and codec.encode(torch.zeros(2, 1, 8, 8)).shape == (2, 4, 4, 4)
    assert main(["train", "digits-latent", "--out", str(lat_run), *FAST, "--set", f"autoencoder.path={ae_run}"]) == 0
    r = load_run(lat_run)
    assert r.latent and r.shape == (4, 4, 4) and r.net.config["type"] == "dit"
    lat = r.info["latent"]
    assert lat["source"] == str(ae_run.resolve()) and lat["image_shape"] == [1, 8, 8]
    # the measured scale gives the training latents unit variance
    train = data.make("digits", split="train")
    z = codec.encode(train.x) * lat["scale"]
    assert abs(float(z.std()) - 1.0) < 1e-3
    capsys.readouterr()
    assert main(["sample", str(lat_run), "--num", "6", "--steps", "2", "--out", str(tmp_path / "s.png")]) == 0
    samples = np.load(tmp_path / "s.npz")["samples"]
    assert samples.shape == (6, 1, 8, 8) and np.isfinite(samples).all()  # decoded, not latents
    torch.testing.assert_close(torch.as_tensor(samples),
                               r.decode(torch.as_tensor(np.load(tmp_path / "s.npz")["latents"])))
    # commands that cannot serve these runs say so in one line
    for argv, word in [(["likelihood", str(lat_run), "--num", "4"], "latent"),
                       (["sample", str(ae_run), "--num", "2"], "autoencoder")]:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and word in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    assert main(["train", "digits-latent", "--out", str(tmp_path / "lat2"), *FAST,
                 "--set", f"autoencoder.path={bad}"]) == 2


def test_diffusers_autoencoder_kl_adapter(tmp_path):
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("diffusers not installed")
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=8, scaling_factor=0.5)
    vae.save_pretrained(str(tmp_path / "vae"))
    codec = load_diffusers_vae(tmp_path / "vae")
    x = Blobs(6).x
    z = codec.encode(x)
    assert z.shape == (6, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(z, vae.encode(x).latent_dist.mean)
        torch.testing.assert_close(codec.decode(z), vae.decode(z).sample)
    ds = LatentDataset(Blobs(16), codec, source=str(tmp_path / "vae"), scale="config")
    assert ds.scale == 0.5
    ds = LatentDataset(Blobs(16), codec, source=str(tmp_path / "vae"))
    assert abs(ds.scale - measure_scale(codec.encode(Blobs(16).x))) < 1e-9
