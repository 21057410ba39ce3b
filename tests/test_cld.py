"""Critically-damped Langevin diffusion (processes/cld.py, samplers/cld.py, losses/hsm.py, likelihood/cld.py),
against closed-form truth: the kernel against an independent solution of the SDE's moment equations, the phase-space
oracle against autograd and normalisation, the samplers against the exact mixture (order, weak order, samples), the
likelihood bound against the exact log-density, and the training path end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import scorediff
import scorediff.analytic as A
import scorediff.parameterizations as PZ
import scorediff.processes as P
from scorediff import schedules
from scorediff.likelihood import log_likelihood
from scorediff.likelihood.cld import phase_log_likelihood
from scorediff.losses import make as make_loss
from scorediff.samplers import SAMPLERS


@pytest.fixture(scope="module")
def cld():
    return P.make("cld")


def _slope(xs, ys) -> float:
    xs, ys = torch.tensor(xs), torch.tensor(ys)
    return float(((xs - xs.mean()) * (ys - ys.mean())).sum() / ((xs - xs.mean()) ** 2).sum())


@pytest.mark.parametrize("opts", [{}, {"beta": 2.0, "beta_max": 6.0, "mass": 1.0, "gamma": 0.2}])
def test_kernel_solves_the_moment_equations(opts):
    # independent truth: the mean and covariance ODEs of the linear SDE du = beta F u dt + G dw, solved numerically
    p = P.make("cld", **opts)
    m, g = p.mass, p.friction
    F = np.array([[0.0, 1 / m], [-1.0, -g / m]])
    GG = np.diag([0.0, 2 * g])

    def rhs(t, y):
        b = float(p.beta(torch.tensor(t)))
        mean, cov = y[:2], y[2:].reshape(2, 2)
        return np.concatenate([b * F @ mean, (b * (F @ cov + cov @ F.T) + b * GG).ravel()])

    y0 = np.concatenate([[1.0, 0.0], np.diag([0.0, p.gamma * m]).ravel()])
    ts = [1e-3, 0.05, 0.3, 1.0]
    sol = solve_ivp(rhs, (0, 1), y0, t_eval=ts, rtol=1e-11, atol=1e-13, method="DOP853")
    for i, t in enumerate(ts):
        p_xx, p_vx, sxx, sxv, svv = (float(c) for c in p.kernel(t))
        np.testing.assert_allclose([p_xx, p_vx], sol.y[:2, i], rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose([sxx, sxv, svv], sol.y[[2, 3, 5], i], rtol=1e-6, atol=1e-11)
        # the data-space view is the position marginal
        assert float(p.alpha(torch.tensor(t, dtype=torch.float64))) == pytest.approx(p_xx, rel=1e-12)
        assert float(p.sigma(torch.tensor(t, dtype=torch.float64))) ** 2 == pytest.approx(sxx, rel=1e-10)


def test_reverse_ou_is_the_exact_linear_step(cld):
    # SSCS's A part: Phi = expm(F' ds), LL^T = Sigma_inf - Phi Sigma_inf Phi^T with F' = [[0, -1/M], [1, -Gamma/M]]
    from scipy.linalg import expm

    m, g, ds = cld.mass, cld.friction, 0.37
    Fp = np.array([[0.0, -1 / m], [1.0, -g / m]])
    phi, (lxx, lvx, lvv) = cld.reverse_ou(ds)
    np.testing.assert_allclose(np.array(phi).reshape(2, 2), expm(Fp * ds), rtol=1e-12, atol=1e-14)
    s_inf = np.diag([1.0, m])
    L = np.array([[lxx, 0.0], [lvx, lvv]])
    np.testing.assert_allclose(L @ L.T, s_inf - expm(Fp * ds) @ s_inf @ expm(Fp * ds).T, rtol=1e-10, atol=1e-14)
    # and Sigma_inf is its stationary law: F' S + S F'^T + G G^T = 0
    np.testing.assert_allclose(Fp @ s_inf + s_inf @ Fp.T + np.diag([0.0, 2 * g]), 0.0, atol=1e-14)


def test_phase_oracle_is_exact(cld):
    mix = A.ring2d()
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0.01, 0.1, 0.3, 0.7, 0.9, 0.02], dtype=torch.float64)
    x0 = mix.sample(6, g)
    u = cld.phase_marginal(x0, t, torch.randn(6, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    logp = mix.phase_log_prob_t(u, t, cld)
    (grad,) = torch.autograd.grad(logp.sum(), u)
    x0_hat = mix.denoiser(cld)(u.detach(), t)
    # Tweedie in phase space: grad log p_t(u) = -Sigma_t^{-1} (u - m_t E[x0 | u]), velocity part and position part
    torch.testing.assert_close(cld.velocity_score(u.detach(), x0_hat, t), grad[:, 2:], rtol=1e-8, atol=1e-8)
    p_xx, p_vx, sxx, sxv, svv = (c[:, None] for c in cld.kernel(t))
    ex, ev = u.detach()[:, :2] - p_xx * x0_hat, u.detach()[:, 2:] - p_vx * x0_hat
    torch.testing.assert_close(-(svv * ex - sxv * ev) / (sxx * svv - sxv**2), grad[:, :2], rtol=1e-8, atol=1e-8)
    # a data-shaped input gets the position marginal's denoiser
    xd = u.detach()[:, :2]
    torch.testing.assert_close(mix.denoiser(cld)(xd, t), mix.x0_mean(xd, t, cld))
    # normalised in phase space (1-D data: a 2-D grid)
    m1 = A.GaussianMixture([0.3, 0.7], [[-1.0], [0.5]], [[0.1], [0.05]])
    xs, vs = torch.linspace(-4, 4, 401, dtype=torch.float64), torch.linspace(-3, 3, 301, dtype=torch.float64)
    grid = torch.stack([a.flatten() for a in torch.meshgrid(xs, vs, indexing="ij")], 1)
    for tt in (0.05, 0.5):
        mass = m1.phase_log_prob_t(grid, tt, cld).exp().sum() * (xs[1] - xs[0]) * (vs[1] - vs[0])
        assert float(mass) == pytest.approx(1.0, abs=1e-3)


def test_cld_param_target_inverts_to_x0(cld):
    param = PZ.make("cld")
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0.01, 0.95, 9, dtype=torch.float64)
    x0 = torch.randn(9, 3, 2, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(9, 6, 2, 2, generator=g, dtype=torch.float64)
    u = cld.phase_marginal(x0, t, eps)
    target = param.target(x0, eps, u, t, cld)
    raw = cld.join(torch.randn_like(target), target)  # the position half of the raw output is never read
    torch.testing.assert_close(param.to_x0(raw, u, t, cld), x0, rtol=1e-8, atol=1e-8)
    noisy = cld.join(raw[:, :3], target + 0.1 * torch.randn_like(target))
    lhs = ((param.output(noisy, cld) - target) ** 2).flatten(1).sum(1)
    rhs = (param.x0_weight(u, t, cld) * (param.to_x0(noisy, u, t, cld) - x0) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-8, atol=1e-10)
    # "eps" on cld is CLD's eps prediction; other parameterizations there, and "cld" elsewhere, are refused
    assert isinstance(PZ.for_process(PZ.make("eps"), cld), PZ.CLDParam)
    with pytest.raises(ValueError, match="process 'cld' trains with parameterization 'cld'"):
        PZ.for_process(PZ.make("v"), cld)
    with pytest.raises(ValueError, match="needs the phase-space process 'cld', got 'vp'"):
        PZ.for_process(param, P.make("vp"))


class _ExactHSM:
    """model.raw(u, t) of the exact CLD model (eps_v = -ell s_v) shifted by d, in the parameterization's terms."""

    def __init__(self, mix, p, param, d=0.0):
        self.mix, self.p, self.param, self.d = mix, p, param, d

    def raw(self, u, t, **cond):
        s_v = self.p.velocity_score(u, self.mix.phase_x0_mean(u, t, self.p), t)
        ell = self.p.cholesky(t)[2][:, None]
        f_v = -ell * s_v - self.param._gaussian_part(u, t, self.p) + self.d
        return self.p.join(torch.zeros_like(f_v), f_v)


def test_hsm_exact_model_is_the_minimum(cld):
    # E[eps_v | u] = -ell s_v(u): with common random numbers L(+d) + L(-d) - 2 L(0) = 2 d^2 and L(+-d) > L(0)
    mix, param = A.ring2d(), PZ.make("cld")
    loss = make_loss("hsm", cld, param)
    x0 = mix.sample(1024, torch.Generator().manual_seed(0))
    vals = {d: float(loss(_ExactHSM(mix, cld, param, d), x0, torch.Generator().manual_seed(1)).mean())
            for d in (-0.1, 0.0, 0.1)}
    assert vals[0.1] + vals[-0.1] - 2 * vals[0.0] == pytest.approx(2 * 0.1**2, rel=1e-6)
    assert vals[0.1] > vals[0.0] and vals[-0.1] > vals[0.0]
    # the minimum is the conditional variance of eps_v, below 1 (the loss of predicting 0)
    assert vals[0.0] < 0.9
    with pytest.raises(ValueError, match="loss 'hsm' needs the phase-space process 'cld', got 'vp'"):
        make_loss("hsm", P.make("vp"), param)
    with pytest.raises(ValueError, match="hsm: weighting 'elbo' unknown"):
        make_loss("hsm", cld, param, weighting="elbo")


def test_heun_converges_at_second_order(cld):
    # the same start (position and the velocity drawn from the same seed) against the adaptive ODE at 1e-10
    mix = A.GaussianMixture(A.mixture64(dim=8, components=4, rank=2, seed=1).weights,
                            A.mixture64(dim=8, components=4, rank=2, seed=1).means,
                            A.mixture64(dim=8, components=4, rank=2, seed=1).covs)
    p = P.make("cld", t_min=0.02)
    x = p.prior_sample((16, 8), torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = SAMPLERS["cld_ode"](mix.denoiser(p), p, x, schedules.make("uniform", 1, p), rtol=1e-9, atol=1e-9,
                              generator=torch.Generator().manual_seed(5))
    log_nfe, log_err = [], []
    for steps in (16, 32, 64):
        d = mix.denoiser(p)
        y = SAMPLERS["cld_heun"](d, p, x, schedules.make("logsnr", steps, p), generator=torch.Generator().manual_seed(5))
        log_nfe.append(math.log(d.nfe))
        log_err.append(math.log((y - ref).abs().amax(1).median().item()))
    assert -_slope(log_nfe, log_err) >= 2 - 0.5, log_err


@pytest.mark.parametrize("name", ["sscs", "cld_euler_maruyama"])
def test_weak_order(name, cld):
    # target N(0.5, 0.3^2 I_50); moments of the position at t_min against the exact marginal N(alpha m, alpha^2 s^2
    # + sigma^2); uniform-in-lambda grids of 16, 32, 64 steps; slope >= declared order - 0.5, as for every sampler
    mu, s0, dim, n = 0.5, 0.3, 50, 1000
    mix = A.GaussianMixture([1.0], [[mu] * dim], [[s0**2] * dim])
    log_steps, log_err = [], []
    for steps in (16, 32, 64):
        ts = schedules.make("logsnr", steps, cld)
        a, s = float(cld.alpha(ts[-1])), float(cld.sigma(ts[-1]))
        m_true, v_true = a * mu, a * a * s0 * s0 + s * s
        g = torch.Generator().manual_seed(0)
        x = cld.prior_sample((n, dim), g, dtype=torch.float64)
        y = SAMPLERS[name](mix.denoiser(cld), cld, x, ts, generator=g)
        err = abs(float(y.mean()) - m_true) / math.sqrt(v_true) + abs(float(y.var()) / v_true - 1)
        log_steps.append(math.log(steps))
        log_err.append(math.log(err))
    assert -_slope(log_steps, log_err) >= SAMPLERS[name].info.order - 0.5, log_err


def test_sample_takes_and_returns_data_shapes(cld):
    # images (B, 1, 4, 4): the network / oracle sees (B, 2, 4, 4), the caller never does; defaults pick sscs
    m = A.mixture64(dim=16, components=3, rank=2, seed=2)
    mix = A.GaussianMixture(m.weights, m.means, m.covs, event_shape=(1, 4, 4))
    shapes = []
    d = mix.denoiser(cld)
    x = scorediff.sample(lambda u, t: shapes.append(tuple(u.shape)) or d(u, t), cld, (8, 1, 4, 4), steps=10)
    assert x.shape == (8, 1, 4, 4) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert set(shapes) == {(8, 2, 4, 4)} and len(shapes) == 10
    # same seed, same samples; onto t = 0 the last step returns x0_hat
    y = scorediff.sample(d, cld, (8, 1, 4, 4), steps=10)
    torch.testing.assert_close(x, scorediff.sample(d, cld, (8, 1, 4, 4), steps=10))
    z = scorediff.sample(d, cld, (8, 1, 4, 4), steps=10, ending="zero")
    assert z.shape == y.shape and torch.isfinite(z).all()


def test_bad_options_get_one_line(cld):
    mix = A.ring2d()
    with pytest.raises(ValueError, match="sampler 'ddim' does not run on process 'cld'; samplers that do: sscs"):
        scorediff.sample(mix.denoiser(cld), cld, (4, 2), sampler="ddim")
    with pytest.raises(ValueError, match="sampler 'sscs' does not run on process 'vp'"):
        scorediff.sample(mix.denoiser(P.make("vp")), P.make("vp"), (4, 2), sampler="sscs")
    with pytest.raises(ValueError, match="process 'cld' carries a velocity"):
        SAMPLERS["ddim"](mix.denoiser(cld), cld, torch.zeros(4, 2), schedules.make("uniform", 4, cld))
    with pytest.raises(ValueError, match="ending 'midpoint' is a data-space step"):
        scorediff.sample(mix.denoiser(cld), cld, (4, 2), sampler="cld_heun", ending="midpoint")
    from scorediff.samplers import parallel

    with pytest.raises(ValueError, match="parallel: process 'cld' carries a velocity"):
        parallel(mix.denoiser(cld), cld, torch.zeros(4, 2), sampler="sscs", steps=5)
    for bad in ({"mass": -1.0}, {"gamma": 1.5}, {"beta": 0.0}):
        with pytest.raises(ValueError, match="cld: "):
            P.make("cld", **bad)
    with pytest.raises(ValueError, match="velocities must be >= 1"):
        log_likelihood(mix.denoiser(cld), cld, mix.sample(2), velocities=0)


def test_likelihood_bound_against_the_exact_density(cld):
    mix = A.ring2d()
    x = mix.sample(8, torch.Generator().manual_seed(0))
    # (1) the phase-space ODE gives the exact phase density log p_{t_min}(x, v) (plus the prior's mismatch)
    v = 0.1 * torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = phase_log_likelihood(mix.denoiser(cld), cld, cld.join(x, v), rtol=1e-6, atol=1e-6)
    mismatch = out.prior_logp - mix.phase_log_prob_t(out.z, cld.t_max, cld)
    truth = mix.phase_log_prob_t(cld.join(x, v), cld.t_min, cld)
    assert (out.logp - mismatch - truth).abs().max() < 1e-4
    # (2) the bound on log p_{t_min}(x): below it (up to Monte Carlo error over the velocity draws), and tight at
    # the default t_min = 1e-5 (the gap E KL(q || p(v | x)) is measured at < 1e-4 nats there)
    b = log_likelihood(mix.denoiser(cld), cld, x, velocities=4, generator=torch.Generator().manual_seed(2))
    exact = mix.log_prob_t(x, 1e-5, cld)
    assert ((b.logp - exact) <= 3 * b.stderr + 1e-3).all()
    assert (b.logp - exact).mean().abs() < 0.01 and (b.logp - mix.log_prob(x)).abs().max() < 0.03
    # (3) at t_min = 1e-3 the gap is visible: the bound is clearly below (Jensen), about 0.13 nats on average
    b3 = log_likelihood(mix.denoiser(cld), cld, x, velocities=4, generator=torch.Generator().manual_seed(2),
                        t_min=1e-3, rtol=1e-4, atol=1e-4)
    gap = (mix.log_prob_t(x, 1e-3, cld) - b3.logp).mean()
    assert 0.03 < float(gap) < 0.4


def test_training_with_process_cld(tmp_path, capsys):
    from scorediff.cli import main
    from scorediff.runs import load_run

    out = tmp_path / "cld"
    fast = ["--set", "optim.steps=4", "--set", "log.progress=false", "--set", "log.tensorboard=false",
            "--set", "sample.num=16", "--set", "sample.steps=4", "--set", "data.options.n=300"]
    assert main(["train", "toy2d", "--out", str(out), "--set", "process.name=cld", "--set", "sample.sampler=sscs",
                 *fast]) == 0
    run = load_run(out)
    assert isinstance(run.denoiser.param, PZ.CLDParam) and run.process.name == "cld"
    x = scorediff.sample(run.denoiser, run.process, (5, 2), steps=3)
    assert x.shape == (5, 2) and torch.isfinite(x).all()
    # the configured data-space sampler is refused before training, in one line
    capsys.readouterr()
    assert main(["train", "toy2d", "--out", str(tmp_path / "bad"), "--set", "process.name=cld", *fast]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sample.sampler 'heun' does not run on process 'cld'" in err
    assert not (tmp_path / "bad").exists()
