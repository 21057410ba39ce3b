"""Training losses: DSM under every weighting and time sampling, and the DDPM variational bound.

Truth: the oracle's exact denoiser E[x0 | x_t] minimises every DSM loss; on Gaussian data the exact
denoiser is linear, so each expected KL term of the DDPM bound is closed form (computed here from the
betas, independently of the library's posterior). Monte Carlo comparisons use a few standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm
from torch import nn

import scorediff.parameterizations as PZ
import scorediff.processes as P
from scorediff.analytic import GaussianMixture, ring2d
from scorediff.losses import (
    LOSSES,
    TIME_SAMPLINGS,
    WEIGHTINGS,
    ddpm_vlb,
    discretized_gaussian_log_likelihood,
    from_config,
    make,
)
from tests.conftest import PROCESS_SPECS

F64 = torch.float64
# from the registries, so a new parameterization or process is tested without editing this file
PARAMS = [n for n in PZ.PARAMETERIZATIONS if n != "cld"]  # (cld's phase-space one: tests/test_cld.py)
PROCS = [(name, opts) for _, name, opts in PROCESS_SPECS] + [("ve", {"levels": 10})]


class ExactModel:
    """A NetDenoiser look-alike whose raw output is the parameterization's target at the exact x0_hat.

    ``to_x0`` is inverted by evaluating ``param.target`` at (x0_hat, eps_hat): these are consistent with x_t,
    so ``param.to_x0(raw) == x0_hat``. ``delta`` shifts x0_hat (a perturbed denoiser).
    """

    def __init__(self, mixture, process, param, delta: float = 0.0):
        self.d, self.process, self.param, self.delta = mixture.denoiser(process), process, param, delta

    def __call__(self, x, t, **cond):
        return self.d(x, t) + self.delta

    def raw(self, x, t, **cond):
        x0 = self(x, t)
        a, s = PZ.coefficients(self.process, t, x)
        return self.param.target(x0, PZ.eps_from_x0(x, x0, a, s), x, t, self.process)


def test_exact_model_inverts_to_x0():
    proc, mix = P.make("vp"), ring2d()
    x = torch.randn(5, 2, dtype=F64)
    t = torch.full((5,), 0.3, dtype=F64)
    for name in PARAMS:
        param = PZ.make(name)
        raw = ExactModel(mix, proc, param).raw(x, t)
        torch.testing.assert_close(param.to_x0(raw, x, t, proc), mix.x0_mean(x, t, proc))


@pytest.mark.parametrize("spec", PROCS, ids=lambda s: s[0] + "".join(f"-{v}" for v in s[1].values()))
def test_dsm_exact_denoiser_is_the_minimum(spec):
    """With common random numbers, L(+d) + L(-d) - 2 L(0) = 2 d^2 mean(w_x0(t)) exactly, and both L(+-d) > L(0)."""
    proc, mix = P.make(spec[0], **spec[1]), ring2d()
    x0 = mix.sample(1024, torch.Generator().manual_seed(0))
    delta = 0.1
    for weighting in ["simple", "elbo", "min_snr", "edm"]:
        for pname in ["eps", "edm"]:
            param = PZ.make(pname)
            loss = make("dsm", proc, param, weighting=weighting)
            vals = {}
            for d in (-delta, 0.0, delta):
                vals[d] = loss(ExactModel(mix, proc, param, d), x0, torch.Generator().manual_seed(1)).mean()
            t = loss.sample_t(x0.shape[0], torch.Generator().manual_seed(1))
            expected = 2 * delta**2 * loss.x0_weight(t).mean()  # mean over the D = 2 dims of d^2 each
            second = vals[delta] + vals[-delta] - 2 * vals[0.0]
            torch.testing.assert_close(second, expected, rtol=1e-6, atol=1e-10)
            assert vals[delta] > vals[0.0] and vals[-delta] > vals[0.0], (weighting, pname, vals)


@pytest.mark.parametrize("weighting", [w for w in WEIGHTINGS if w != "none"])
def test_weighting_is_the_same_objective_for_every_parameterization(weighting):
    """A weighting is stated on x0: with the exact model and common random numbers, every parameterization
    gives the same per-example loss."""
    mix = ring2d()
    x0 = mix.sample(64, torch.Generator().manual_seed(0))
    for name, opts in [("vp", {}), ("ve", {}), ("flow", {})]:
        proc = P.make(name, **opts)
        ref = None
        for pname in PARAMS:
            param = PZ.make(pname)
            val = make("dsm", proc, param, weighting=weighting)(ExactModel(mix, proc, param), x0, torch.Generator().manual_seed(2))
            if ref is None:
                ref = val
            torch.testing.assert_close(val, ref, rtol=1e-7, atol=1e-9)


def test_weights_match_their_papers():
    t = torch.tensor([0.01, 0.2, 0.5, 0.9], dtype=F64)
    vp = P.make("vp")
    # Ho et al.: unit weight on eps
    torch.testing.assert_close(make("dsm", vp, PZ.make("eps")).raw_weight(t), torch.ones(4, dtype=F64))
    # Karras et al.: unit weight on F under EDM preconditioning (any process)
    for proc in (P.make("edm"), vp):
        ts = torch.tensor([0.01, 0.3, 0.9], dtype=F64) * proc.t_max
        w = make("dsm", proc, PZ.make("edm", sigma_data=0.7), weighting="edm").raw_weight(ts)
        torch.testing.assert_close(w, torch.ones(3, dtype=F64))
    # min-SNR-gamma (Hang et al.): on eps the weight is min(SNR, gamma) / SNR, on v min(SNR, gamma) / (SNR + 1)
    snr = (vp.alpha(t) / vp.sigma(t)) ** 2
    w_eps = make("dsm", vp, PZ.make("eps"), weighting="min_snr", gamma=5).raw_weight(t)
    torch.testing.assert_close(w_eps, snr.clamp(max=5) / snr)
    w_v = make("dsm", vp, PZ.make("v"), weighting="min_snr", gamma=5).raw_weight(t)
    torch.testing.assert_close(w_v, snr.clamp(max=5) / (snr + 1))
    # NCSN: sigma^2 on the score
    w = make("dsm", P.make("ve"), PZ.make("score"), weighting="ncsn").raw_weight(t)
    torch.testing.assert_close(w, P.make("ve").sigma(t) ** 2)
    # likelihood weighting (Song et al. 2021): g^2 on the score, divided by the uniform density 1/(t_max - t_min)
    loss = make("dsm", vp, PZ.make("score"), weighting="likelihood")
    _, g2 = vp.sde(t)
    torch.testing.assert_close(loss.raw_weight(t), g2 * (loss.t_hi - loss.t_lo))
    # ELBO (VDM eq. 17): -1/2 dSNR/dt on x0, checked against a finite difference of SNR
    for proc in (vp, P.make("ve"), P.make("flow"), P.make("edm")):
        ts = torch.tensor([0.1, 0.4, 0.7], dtype=F64) * proc.t_max
        h = 1e-6 * proc.t_max
        snr = lambda s, proc=proc: (proc.alpha(s) / proc.sigma(s)) ** 2
        d_snr = (snr(ts + h) - snr(ts - h)) / (2 * h)
        loss = make("dsm", proc, PZ.make("x0"), weighting="elbo")
        torch.testing.assert_close(loss.raw_weight(ts), -0.5 * d_snr * (loss.t_hi - loss.t_lo), rtol=1e-6, atol=0)
        lik = make("dsm", proc, PZ.make("x0"), weighting="likelihood")
        torch.testing.assert_close(lik.raw_weight(ts), 2 * loss.raw_weight(ts))


@pytest.mark.parametrize("name,opts", [("vp", {}), ("vp", {"schedule": "cosine"}), ("edm", {}), ("flow", {}), ("sub-vp", {})])
def test_importance_sampling_density(name, opts):
    """Samples follow the stated density (empirical CDF vs the integrated density), and the likelihood weight
    is constant on the eps scale."""
    proc = P.make(name, **opts)
    loss = make("dsm", proc, PZ.make("eps"), weighting="likelihood", importance=True)
    span = loss.t_hi - loss.t_lo  # a grid fine near both ends, where the density may grow like 1/t or 1/(1 - t)
    ends = torch.logspace(-9, 0, 10001, dtype=F64) * span
    grid = torch.cat([loss.t_lo + ends, loss.t_hi - ends]).clamp(loss.t_lo, loss.t_hi).unique()
    dens = loss.density(grid)
    cdf = torch.cat([torch.zeros(1, dtype=F64), torch.cumulative_trapezoid(dens, grid)])
    assert abs(cdf[-1].item() - 1) < 1e-3
    t = loss.sample_t(20000, torch.Generator().manual_seed(0))
    assert t.min() >= loss.t_lo and t.max() <= loss.t_hi
    for q in (0.1, 0.5, 0.9):
        tq = grid[torch.searchsorted(cdf, torch.tensor(q, dtype=F64))]
        assert abs((t <= tq).double().mean().item() - q) < 0.015
    w = loss.raw_weight(t[:50])
    torch.testing.assert_close(w, w[0].expand(50), rtol=1e-6, atol=0)


def test_time_samplings():
    gen = lambda: torch.Generator().manual_seed(0)
    ddpm = P.make("vp-discrete", steps=50)
    t = make("dsm", ddpm, PZ.make("eps")).sample_t(1000, gen())
    i = t * 50
    assert torch.allclose(i, i.round()) and i.min() >= 1 and i.max() <= 50 and len(i.unique()) == 50
    ncsn = P.make("ve", levels=10)
    t = make("dsm", ncsn, PZ.make("score"), weighting="ncsn").sample_t(1000, gen())
    assert set(t.tolist()) <= set(ncsn.level_times.tolist()) and len(t.unique()) == 10
    # EDM's log-normal in sigma: ln sigma ~ N(-1.2, 1.2^2), on any process through sigma~ = sigma / alpha
    for proc in (P.make("edm"), P.make("vp")):
        loss = make("dsm", proc, PZ.make("edm"), weighting="edm")
        assert loss.time_sampling == "lognormal"
        t = loss.sample_t(20000, gen())
        ln_s = torch.log(proc.sigma(t) / proc.alpha(t))
        inside = (t > loss.t_lo) & (t < loss.t_hi)
        assert abs(ln_s[inside].mean().item() + 1.2) < 0.05 and abs(ln_s[inside].std().item() - 1.2) < 0.05
    t = make("dsm", P.make("vp"), PZ.make("eps"), t_min=0.2, t_max=0.6).sample_t(1000, gen())
    assert t.min() >= 0.2 and t.max() <= 0.6


class TinyMLP(nn.Module):
    """net(x, noise_input) for flat points."""

    def __init__(self, dim: int = 2, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x, c_noise, **cond):
        return self.body(torch.cat([x, c_noise[:, None].to(x.dtype)], dim=1))


def _sensible(proc, sampling, pname=None):
    if pname == "consistency" and sampling in ("discrete", "levels"):
        return False  # c_out(t_min) = 0: the target is undefined on a grid holding t_min (a ValueError)
    if sampling == "discrete":
        return proc.name == "vp-discrete"
    if sampling == "levels":
        return getattr(proc, "levels", None) is not None
    return True


@pytest.mark.parametrize("spec", PROCS, ids=lambda s: s[0] + "".join(f"-{v}" for v in s[1].values()))
def test_one_gradient_step_every_combination(spec):
    """Every (weighting, time sampling) pair, and every parameterization with each weighting, trains one step
    (the parameterization rotates through the pairs so that the product stays cheap); a fresh model each time,
    since the likelihood weightings' large weights near t_min would blow up a shared one."""
    proc = P.make(spec[0], **spec[1])
    torch.manual_seed(0)
    x0 = ring2d().sample(8, torch.Generator().manual_seed(0)).float()
    combos = [(p, w, "uniform") for p in PARAMS for w in WEIGHTINGS[PARAMS.index(p) % 2 :: 2]]
    combos += [
        (PARAMS[(i + j) % len(PARAMS)], w, s)
        for i, w in enumerate(WEIGHTINGS)
        for j, s in enumerate(TIME_SAMPLINGS)
        if _sensible(proc, s, PARAMS[(i + j) % len(PARAMS)])
    ]
    for count, (pname, weighting, sampling) in enumerate(combos):
        param = PZ.make(pname)
        model = PZ.NetDenoiser(TinyMLP(), proc, param)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        loss_fn = make("dsm", proc, param, weighting=weighting, time_sampling=sampling)
        loss = loss_fn(model, x0, torch.Generator().manual_seed(count))
        assert loss.shape == (8,) and torch.isfinite(loss).all(), (pname, weighting, sampling, loss)
        opt.zero_grad()
        loss.mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters()), (pname, weighting, sampling)
        assert any((p.grad != 0).any() for p in model.parameters())
        opt.step()
    if proc.name == "vp-discrete":
        for i, variance in enumerate(("beta", "beta_tilde")):
            for decoder in ("discretized", "gaussian"):
                param = PZ.make(PARAMS[i])
                model = PZ.NetDenoiser(TinyMLP(), proc, param)
                loss = make("vlb", proc, param, variance=variance, decoder=decoder)(model, x0.clamp(-1, 1))
                assert loss.shape == (8,) and torch.isfinite(loss).all()
                loss.mean().backward()
                assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_errors_and_config():
    vp, eps = P.make("vp"), PZ.make("eps")
    with pytest.raises(ValueError, match="loss 'dsn' unknown"):
        make("dsn", vp, eps)
    with pytest.raises(ValueError, match="weightin"):
        make("dsm", vp, eps, weightin="simple")
    with pytest.raises(ValueError, match="weighting 'elb' unknown"):
        make("dsm", vp, eps, weighting="elb")
    with pytest.raises(ValueError, match="time sampling 'unif' unknown"):
        make("dsm", vp, eps, time_sampling="unif")
    with pytest.raises(ValueError, match="vp-discrete"):
        make("dsm", vp, eps, time_sampling="discrete")
    with pytest.raises(ValueError, match="levels"):
        make("dsm", P.make("ve"), eps, time_sampling="levels")
    with pytest.raises(ValueError, match="vp-discrete"):
        make("vlb", vp, eps)
    with pytest.raises(ValueError, match="variance 'big' unknown"):
        make("vlb", P.make("vp-discrete"), eps, variance="big")
    with pytest.raises(ValueError, match="consistency"):
        make("dsm", P.make("vp-discrete"), PZ.make("consistency"))
    with pytest.raises(ValueError, match="t_max"):
        make("dsm", vp, eps, t_max=2.0)
    loss = make("dsm", vp, eps)
    model = ExactModel(ring2d(), vp, eps)
    x0 = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"t must lie in"):
        loss(model, x0, t=torch.tensor([0.5, 1.5, 0.2], dtype=F64))
    with pytest.raises(ValueError, match=r"t must lie in"):
        loss(model, x0, t=-0.1)
    assert loss(model, x0, torch.Generator().manual_seed(0), t=0.5).shape == (3,)
    assert set(LOSSES) == {"dsm", "vlb", "hsm", "bridge"}
    import json

    for name, proc, opts in [
        ("dsm", vp, {"weighting": "min_snr", "gamma": 3.0}),
        ("dsm", P.make("edm"), {"weighting": "edm"}),
        ("dsm", vp, {"weighting": "likelihood", "importance": True, "t_min": 1e-3}),
        ("vlb", P.make("vp-discrete"), {"variance": "beta_tilde"}),
    ]:
        a = make(name, proc, eps, **opts)
        cfg = json.loads(json.dumps(a.config()))
        b = from_config(cfg, proc, eps)
        assert b.config() == a.config()
        xs = torch.randn(4, 2, dtype=F64)
        torch.testing.assert_close(
            a(ExactModel(ring2d(), proc, eps), xs, torch.Generator().manual_seed(5)),
            b(ExactModel(ring2d(), proc, eps), xs, torch.Generator().manual_seed(5)),
        )


# -- the DDPM bound --------------------------------------------------------------------------------------


def test_discretized_decoder_against_scipy():
    levels = torch.linspace(-1, 1, 256, dtype=F64)
    for mean, sd in [(0.1, 0.05), (-0.9, 0.003), (0.999, 0.2), (0.0, 3.0)]:
        logp = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean), torch.tensor(sd**2, dtype=F64))
        assert abs(torch.logsumexp(logp, 0).item()) < 1e-9  # a probability over the 256 levels
        edges = [-math.inf] + [float(v) for v in (levels[:-1] + 1 / 255)] + [math.inf]
        ref = [  # in the upper tail through the survival function, where a difference of cdfs would cancel
            norm.sf(lo, mean, sd) - norm.sf(hi, mean, sd) if lo > mean else norm.cdf(hi, mean, sd) - norm.cdf(lo, mean, sd)
            for lo, hi in zip(edges[:-1], edges[1:])
        ]
        ok = torch.tensor(ref) > 1e-300
        torch.testing.assert_close(logp[ok], torch.log(torch.tensor(ref, dtype=F64))[ok], rtol=1e-6, atol=1e-9)
    # far tails stay finite (no log(0))
    far = discretized_gaussian_log_likelihood(torch.tensor([0.5]), torch.tensor([-0.5]), torch.tensor(1e-4))
    assert torch.isfinite(far).all() and far.item() < -1000


def _closed_form_bound(mu, cov, abar_sub, var_model, x0):
    """E over the chain's noise of the bound (continuous Gaussian decoder), per example, from the betas alone.

    The exact denoiser for N(mu, cov) is x0_hat = A x_t + b with A = alpha cov (alpha^2 cov + sigma^2)^-1,
    b = mu - alpha A mu; each model mean differs from the posterior's by c0 (x0_hat - x0), c0 the posterior's
    x0 coefficient, whose square expectation is ||(alpha A - I) x0 + b||^2 + sigma^2 ||A||_F^2.
    """
    d = mu.shape[0]
    eye = torch.eye(d, dtype=F64)
    prev = torch.cat([torch.ones(1, dtype=F64), abar_sub[:-1]])
    k_steps = len(abar_sub)

    def err2(ab):
        a, s2 = math.sqrt(ab), 1 - ab
        A = a * cov @ torch.linalg.inv(a * a * cov + s2 * eye)
        b = mu - a * A @ mu
        r = x0 @ (a * A - eye).T + b
        return (r**2).sum(1) + s2 * (A**2).sum()

    total = torch.zeros(x0.shape[0], dtype=F64)
    # L_T against N(0, (1 - abar_T) I) (the process's prior std is sigma(1))
    abT = float(abar_sub[-1])
    var_q = 1 - abT
    total += 0.5 * (abT * (x0**2).sum(1) / var_q)
    for k in range(2, k_steps + 1):
        ab, ab_prev = float(abar_sub[k - 1]), float(prev[k - 1])
        beta = 1 - ab / ab_prev
        c0 = math.sqrt(ab_prev) * beta / (1 - ab)
        vq = (1 - ab_prev) / (1 - ab) * beta
        vp = float(var_model[k - 1])
        total += 0.5 * d * (math.log(vp / vq) + vq / vp - 1) + c0**2 * err2(ab) / (2 * vp)
    v1 = float(var_model[0])
    total += 0.5 * d * math.log(2 * math.pi * v1) + err2(float(abar_sub[0])) / (2 * v1)
    return total


@pytest.mark.parametrize("variance,stride", [("beta", None), ("beta_tilde", None), ("beta", 3), ("beta_tilde", 4)])
def test_ddpm_bound_on_gaussian_data_equals_closed_form(variance, stride):
    steps = 20
    proc = P.make("vp-discrete", steps=steps, schedule="cosine")
    mu = torch.tensor([0.3, -0.2, 0.1], dtype=F64)
    q = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.8, 0.0], [0.1, -0.3, 0.4]], dtype=F64)
    cov = 0.2 * q @ q.T
    gauss = GaussianMixture([1.0], mu[None], cov[None])
    x0 = gauss.sample(4000, torch.Generator().manual_seed(0))
    out = ddpm_vlb(gauss.denoiser(proc), proc, x0, variance=variance, decoder="gaussian", stride=stride,
                   generator=torch.Generator().manual_seed(1))
    # the sub-chain's alpha_bar and model variances, built here from the steps alone
    s = sorted(set(range(steps, 0, -(stride or 1))) | {1})
    assert out.steps == s
    abar = proc.alpha_bar[torch.tensor(s) - 1]
    prev = torch.cat([torch.ones(1, dtype=F64), abar[:-1]])
    beta = 1 - abar / prev
    tilde = (1 - prev) / (1 - abar) * beta
    var_model = beta if variance == "beta" else torch.cat([tilde[1:2], tilde[1:]])
    truth = _closed_form_bound(mu, cov, abar, var_model, x0)
    diff = out.total - truth  # mean zero: only the chain's noise differs
    se = diff.std() / math.sqrt(len(diff))
    assert abs(diff.mean()) < 4 * se + 1e-9, (diff.mean().item(), se.item())
    # the check has power: the bound of the other variance choice is rejected
    other = torch.cat([tilde[1:2], tilde[1:]]) if variance == "beta" else beta
    wrong = _closed_form_bound(mu, cov, abar, other, x0)
    assert abs((out.total - wrong).mean()) > 4 * se, ((out.total - wrong).mean().item(), se.item())
    torch.testing.assert_close(out.total, out.prior + out.terms.sum(1))
    torch.testing.assert_close(out.bpd, out.total / (3 * math.log(2)))


def test_vlb_training_loss_is_unbiased_for_the_bound():
    proc = P.make("vp-discrete", steps=10, schedule="cosine")
    gauss = GaussianMixture([1.0], [[0.2, -0.1]], [[[0.1, 0.02], [0.02, 0.05]]])
    x0 = gauss.sample(1, torch.Generator().manual_seed(0)).expand(6000, 2)
    model = ExactModel(gauss, proc, PZ.make("eps"))
    est = make("vlb", proc, PZ.make("eps"), decoder="gaussian")(model, x0, torch.Generator().manual_seed(1))
    ref = ddpm_vlb(gauss.denoiser(proc), proc, x0, decoder="gaussian", generator=torch.Generator().manual_seed(2))
    se = math.hypot(est.std().item(), ref.total.std().item() / 2) / math.sqrt(6000)
    assert abs(est.mean().item() - ref.total.mean().item() / 2) < 4 * se
