"""Likelihood through the probability-flow ODE, bits/dim, the DDPM bound, encoding and decoding.

Truth is the oracle: with the exact denoiser of a Gaussian mixture the PF-ODE carries p_{t_min} exactly onto
p_{t_max}, so the ODE estimate must equal log p_{t_min}(x) (``log_prob_t``, not log p0: we compare at the
same t_min) up to (a) the solver's tolerance and (b) the prior's mismatch log N(z; 0, sigma(t_max)^2) -
log p_{t_max}(z), which the oracle also gives in closed form. We check (a) after removing (b), and that the
plain estimate stays within (b) plus the tolerance.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

import scorediff.processes as P
from scorediff.analytic import GaussianMixture, mixture64, ring2d
from scorediff.likelihood import bits_per_dim, decode, encode, log_likelihood, round_trip, to_model_space
from scorediff.losses import ddpm_vlb
from tests.conftest import PROCESS_SPECS, env_one_thread, free_port

F64 = torch.float64
# every registered process (and variant) but the discrete DDPM chain, whose likelihood is tested through its
# bound (method "vlb") below
# (cld's likelihood is a bound through its phase space: tests/test_cld.py)
ODE_PROCESSES = [(name, opts) for _, name, opts in PROCESS_SPECS
                 if name != "vp-discrete" and not getattr(P.make(name, **opts), "phase_space", False)]


def _id(spec):
    return spec[0] + "".join(f"-{v}" for v in spec[1].values())


@pytest.mark.parametrize("spec", ODE_PROCESSES, ids=_id)
def test_ode_exact_trace_matches_ring2d(spec):
    proc, mix = P.make(spec[0], **spec[1]), ring2d()
    x = mix.sample(16, torch.Generator().manual_seed(0))
    rtol = 1e-6
    out = log_likelihood(mix.denoiser(proc), proc, x, rtol=rtol, atol=rtol)
    truth = mix.log_prob_t(x, proc.t_min, proc)
    mismatch = out.prior_logp - mix.log_prob_t(out.z, proc.t_max, proc)  # prior vs the true p_{t_max}
    solver_err = (out.logp - mismatch - truth).abs().max().item()
    assert solver_err < 100 * rtol, solver_err
    assert ((out.logp - truth).abs() <= mismatch.abs() + 100 * rtol).all()
    assert mismatch.abs().max() < 1e-3  # the prior is a good stand-in for p_{t_max} on these processes
    assert out.stderr is None and out.nfe > 10
    torch.testing.assert_close(out.logp, out.prior_logp + out.delta_logp)


def test_ode_error_follows_the_tolerance():
    proc, mix = P.make("vp"), ring2d()
    x = mix.sample(16, torch.Generator().manual_seed(1))
    truth = mix.log_prob_t(x, proc.t_min, proc)
    errs = []
    for tol in (1e-4, 1e-7):
        out = log_likelihood(mix.denoiser(proc), proc, x, rtol=tol, atol=tol)
        errs.append((out.logp - out.prior_logp + mix.log_prob_t(out.z, proc.t_max, proc) - truth).abs().max().item())
    assert errs[1] < errs[0] / 10, errs


@pytest.mark.parametrize("name,noise", [("vp", "rademacher"), ("edm", "gaussian"), ("flow", "rademacher")])
def test_hutchinson_on_mixture64_within_standard_errors(name, noise):
    proc, mix = P.make(name), mixture64()
    x = mix.sample(8, torch.Generator().manual_seed(0))
    out = log_likelihood(mix.denoiser(proc), proc, x, trace="hutchinson", probes=16, noise=noise, rtol=1e-5,
                         atol=1e-5, generator=torch.Generator().manual_seed(3))
    truth = mix.log_prob_t(x, proc.t_min, proc)
    z = (out.logp - truth) / out.stderr
    assert z.abs().max() < 4.5, z
    z_all = (out.logp - truth).mean() / (out.stderr.pow(2).mean().sqrt() / math.sqrt(len(x)))
    assert abs(z_all) < 3, z_all
    assert (out.stderr > 0).all()
    # Rademacher probes drop the diagonal's contribution to the variance (2 sum_{i != j} J_ij^2 instead of
    # Gaussian's 2 ||J||_F^2); on this nearly diagonal Jacobian that is a large gain
    assert out.stderr.max() < (5 if noise == "rademacher" else 40)


def test_exact_trace_on_mixture64_points():
    proc, mix = P.make("flow"), mixture64()
    x = mix.sample(2, torch.Generator().manual_seed(0))
    out = log_likelihood(mix.denoiser(proc), proc, x, rtol=1e-6, atol=1e-6)
    truth = mix.log_prob_t(x, proc.t_min, proc)  # flow's prior is exactly p_1 = N(0, I)
    assert (out.logp - truth).abs().max() < 2e-3


def test_probes_fixed_along_trajectory_and_seeded():
    proc, mix = P.make("vp"), ring2d()
    x = mix.sample(4, torch.Generator().manual_seed(0))
    kw = dict(trace="hutchinson", probes=2, rtol=1e-4, atol=1e-4)
    a = log_likelihood(mix.denoiser(proc), proc, x, generator=torch.Generator().manual_seed(5), **kw)
    b = log_likelihood(mix.denoiser(proc), proc, x, generator=torch.Generator().manual_seed(5), **kw)
    torch.testing.assert_close(a.logp, b.logp)
    assert a.stderr is not None and a.stderr.shape == (4,)
    # probes split over several backward passes give the same numbers
    c = log_likelihood(mix.denoiser(proc), proc, x, generator=torch.Generator().manual_seed(5), chunk=1, **kw)
    torch.testing.assert_close(a.logp, c.logp, rtol=0, atol=1e-9)
    e1 = log_likelihood(mix.denoiser(proc), proc, x, rtol=1e-4, atol=1e-4)
    e2 = log_likelihood(mix.denoiser(proc), proc, x, rtol=1e-4, atol=1e-4, chunk=1)
    torch.testing.assert_close(e1.logp, e2.logp, rtol=0, atol=1e-9)


# -- bits/dim ----------------------------------------------------------------------------------------------


def test_bits_per_dim_change_of_scale_is_exact():
    """bits_per_dim = -(log p_M(m_u) - D log 127.5) / (D ln 2), m_u = (x + u - 1/2) / 127.5 - 1, per example.

    Flow's prior N(0, I) is exactly its p_1, so the ODE estimate is log p_{t_min} up to the solver alone."""
    proc, mix = P.make("flow"), ring2d()
    x8 = ((mix.sample(6, torch.Generator().manual_seed(0)) + 1) * 127.5).round().clamp(0, 255).long()
    out = bits_per_dim(mix.denoiser(proc), proc, x8, dtype=F64, generator=torch.Generator().manual_seed(1),
                       rtol=1e-6, atol=1e-6)
    u = torch.rand(x8.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    m = (x8.double() + u - 0.5) / 127.5 - 1
    torch.testing.assert_close(m, to_model_space(x8, u, F64))
    logp = mix.log_prob_t(m, proc.t_min, proc) - 2 * math.log(127.5)
    torch.testing.assert_close(out.logp, logp, atol=2e-5, rtol=0)
    torch.testing.assert_close(out.bpd, -logp / (2 * math.log(2)), atol=2e-5, rtol=0)
    # several dequantizations: "mean" is the mean of log p, "logmeanexp" the tighter bound (Jensen)
    kw = dict(dtype=F64, dequantize=2, rtol=1e-6, atol=1e-6)
    mean = bits_per_dim(mix.denoiser(proc), proc, x8, generator=torch.Generator().manual_seed(2), **kw)
    lme = bits_per_dim(mix.denoiser(proc), proc, x8, generator=torch.Generator().manual_seed(2), reduce="logmeanexp", **kw)
    g = torch.Generator().manual_seed(2)
    lps = torch.stack([mix.log_prob_t(to_model_space(x8, torch.rand(x8.shape, generator=g, dtype=F64), F64), proc.t_min, proc)
                       for _ in range(2)]) - 2 * math.log(127.5)
    torch.testing.assert_close(mean.logp, lps.mean(0), atol=1e-4, rtol=0)
    assert (lme.logp >= mean.logp - 1e-9).all() and mean.bpd_stderr is not None


def test_bits_per_dim_of_uniform_8bit_data_is_8():
    """A model of uniform data: a 1-D mixture of 256 Gaussians centred on the 8-bit levels with std one bin,
    whose density is flat to ~1e-8 inside [-1 - 1/255, 1 + 1/255] (Poisson summation) and leaks only at the
    two ends. Its exact expected bits/dim (quadrature of the oracle's density) is 8 + O(edge) ~ 8.005, and the
    ODE + dequantization estimate must match it."""
    h = 2 / 255
    levels = torch.arange(256, dtype=F64) / 127.5 - 1
    mix = GaussianMixture(torch.ones(256), levels[:, None], torch.full((256, 1), h**2))
    proc = P.make("flow")
    m = torch.linspace(-1 - h / 2, 1 + h / 2, 20001, dtype=F64)[:, None]
    truth = ((-mix.log_prob_t(m, proc.t_min, proc).mean() + math.log(127.5)) / math.log(2)).item()
    assert abs(truth - 8) < 0.01
    x8 = torch.arange(256)[:, None]
    out = bits_per_dim(mix.denoiser(proc), proc, x8, dtype=F64, generator=torch.Generator().manual_seed(0),
                       rtol=1e-5, atol=1e-5)
    est, se = out.bpd.mean().item(), out.bpd.std().item() / 16
    assert abs(est - truth) < 3 * se + 1e-3, (est, truth, se)
    assert abs(est - 8) < 0.02


def test_bits_per_dim_on_17_levels_is_log2_17():
    """The same construction on the 17 levels of scikit-learn's digits (x / 8 - 1): uniform data then has
    log2(17) = 4.087 bits/dim (+0.08 of leakage at the two end levels, 1/17 of the data here against 1/256
    for 8-bit), and the change of scale is D log 8, not D log 127.5."""
    h = 2 / 16
    mix = GaussianMixture(torch.ones(17), (torch.arange(17, dtype=F64) / 8 - 1)[:, None], torch.full((17, 1), h**2))
    proc = P.make("flow")
    m = torch.linspace(-1 - h / 2, 1 + h / 2, 20001, dtype=F64)[:, None]
    truth = ((-mix.log_prob_t(m, proc.t_min, proc).mean() + math.log(8)) / math.log(2)).item()
    assert 0 < truth - math.log2(17) < 0.1
    x = torch.arange(17).repeat(4)[:, None]
    out = bits_per_dim(mix.denoiser(proc), proc, x, dtype=F64, generator=torch.Generator().manual_seed(0),
                       levels=17, rtol=1e-5, atol=1e-5)
    est, se = out.bpd.mean().item(), out.bpd.std().item() / math.sqrt(x.shape[0])
    assert abs(est - truth) < 3 * se + 1e-3, (est, truth, se)
    with pytest.raises(ValueError, match="0..16"):
        bits_per_dim(mix.denoiser(proc), proc, torch.tensor([[17]]), levels=17)
    with pytest.raises(ValueError, match="levels must be 256"):
        bits_per_dim(mix.denoiser(proc), P.make("vp-discrete"), x, levels=17, method="vlb")


def test_bits_per_dim_checks_its_input():
    proc, mix = P.make("vp"), ring2d()
    with pytest.raises(ValueError, match="0..255"):
        bits_per_dim(mix.denoiser(proc), proc, torch.tensor([[0, 300]]))
    with pytest.raises(ValueError, match="integer"):
        bits_per_dim(mix.denoiser(proc), proc, torch.tensor([[0.5, 3.0]]))
    with pytest.raises(ValueError, match="reduction 'max' unknown"):
        bits_per_dim(mix.denoiser(proc), proc, torch.tensor([[1, 3]]), reduce="max")


# -- the DDPM bound ----------------------------------------------------------------------------------------


def test_vlb_method_is_a_lower_bound():
    proc = P.make("vp-discrete", steps=20, schedule="cosine")
    gauss = GaussianMixture([1.0], [[0.2, -0.1]], [[[0.1, 0.02], [0.02, 0.05]]])
    x = gauss.sample(2000, torch.Generator().manual_seed(0))
    out = log_likelihood(gauss.denoiser(proc), proc, x, method="vlb", generator=torch.Generator().manual_seed(1))
    gap = gauss.log_prob(x) - out.logp  # >= 0 in expectation
    assert gap.mean() > 4 * gap.std() / math.sqrt(len(x))
    assert gap.mean() < 0.5
    # the bound of a strided sub-chain is looser
    strided = log_likelihood(gauss.denoiser(proc), proc, x, method="vlb", stride=5,
                             generator=torch.Generator().manual_seed(1))
    assert strided.logp.mean() < out.logp.mean()


def test_vlb_bits_per_dim_uses_the_discretized_decoder():
    proc = P.make("vp-discrete", steps=20, schedule="cosine")
    gauss = GaussianMixture([1.0], [[0.1, -0.2, 0.3]], [[0.2, 0.3, 0.1]])
    x8 = torch.randint(0, 256, (5, 3), generator=torch.Generator().manual_seed(0))
    out = bits_per_dim(gauss.denoiser(proc), proc, x8, method="vlb", generator=torch.Generator().manual_seed(1))
    ref = ddpm_vlb(gauss.denoiser(proc), proc, to_model_space(x8), decoder="discretized",
                   generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.bpd, ref.bpd)
    with pytest.raises(ValueError, match="vp-discrete"):
        bits_per_dim(gauss.denoiser(P.make("vp")), P.make("vp"), x8, method="vlb")


# -- encoding ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [("vp", {}), ("edm", {}), ("flow", {})], ids=_id)
def test_encode_decode_round_trip(spec):
    proc, mix = P.make(spec[0], **spec[1]), ring2d()
    x = mix.sample(32, torch.Generator().manual_seed(0))
    rt = round_trip(mix.denoiser(proc), proc, x, rtol=1e-6, atol=1e-6)
    assert rt.error.max() < 1e-3, rt.error.max()
    torch.testing.assert_close(rt.z, encode(mix.denoiser(proc), proc, x, rtol=1e-6, atol=1e-6))
    # the latents are distributed as the prior: decode prior noise and the data come back (on average)
    z = proc.prior_sample((256, 2), torch.Generator().manual_seed(1), dtype=F64)
    xs = decode(mix.denoiser(proc), proc, z, rtol=1e-5, atol=1e-5)
    assert (mix.log_prob(xs).mean() - mix.log_prob(mix.sample(4096, torch.Generator().manual_seed(2))).mean()).abs() < 0.3


def test_errors():
    proc, mix = P.make("vp"), ring2d()
    x = torch.zeros(2, 2, dtype=F64)
    d = mix.denoiser(proc)
    with pytest.raises(ValueError, match="likelihood method 'sde' unknown"):
        log_likelihood(d, proc, x, method="sde")
    with pytest.raises(ValueError, match="trace estimator 'skilling' unknown"):
        log_likelihood(d, proc, x, trace="skilling")
    with pytest.raises(ValueError, match="probe noise 'uniform' unknown"):
        log_likelihood(d, proc, x, trace="hutchinson", noise="uniform")
    with pytest.raises(ValueError, match="t_min"):
        log_likelihood(d, proc, x, t_min=2.0)
    with pytest.raises(ValueError, match="vp-discrete"):
        log_likelihood(d, proc, x, method="vlb")
    with pytest.raises(ValueError, match="stride"):
        log_likelihood(d, proc, x, stride=2)
    with pytest.raises(ValueError, match="chunk"):
        log_likelihood(d, proc, x, chunk=0)


def test_cli_with_oracle(tmp_path, capsys):
    from scorediff.cli import main

    out = tmp_path / "res.json"
    rc = main(["likelihood", "--oracle", "ring2d", "--num", "8", "--no-progress", "--rtol", "1e-6", "--atol", "1e-6",
               "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert abs(res["logp_nats"] - res["exact_logp_nats"]) < 1e-3
    assert abs(res["bits_per_dim"] + res["logp_nats"] / (2 * math.log(2))) < 1e-9
    text = capsys.readouterr().out
    assert "bits/dim" in text and "nats" in text
    assert main(["likelihood"]) == 2
    assert main(["likelihood", "--oracle", "ring2d", "--method", "vlb"]) == 2


@pytest.mark.slow  # a subprocess or a training run: minutes under load
def test_cli_under_torchrun_shards_and_gathers(tmp_path):
    """Two gloo processes: each rank integrates its own shard (no collective inside the adaptive solver) and
    rank 0 writes the gathered per-example values, which equal a single process's to the solver tolerance."""
    from scorediff.cli import main

    args = ["likelihood", "--oracle", "ring2d", "--num", "7", "--no-progress", "--rtol", "1e-6", "--atol", "1e-6"]
    assert main([*args, "--json", str(tmp_path / "one.json")]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "scorediff", "--", *args, "--json", str(tmp_path / "two.json")]
    res = subprocess.run(cmd, env=env_one_thread(), capture_output=True, timeout=180)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert len(two["per_example_logp"]) == 7
    torch.testing.assert_close(torch.tensor(two["per_example_logp"]), torch.tensor(one["per_example_logp"]),
                               atol=1e-4, rtol=0)
