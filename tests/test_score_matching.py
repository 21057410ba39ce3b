"""Score matching objectives, the energy parameterization, plain and annealed Langevin dynamics.

Truth is closed form: for data N(mu, S) and a linear score model s(x) = -P (x - m), the Fisher divergence
    J_F = 1/2 E||s(x) - grad log p(x)||^2 = 1/2 [tr(A S A^T) + ||P d||^2],  A = S^{-1} - P,  d = mu - m,
and each objective's expectation is J_F minus a model-free constant (1/2 tr(S^{-1}) for the exact and
sliced forms; for DSM at noise sigma, J_F against q_sigma = N(mu, S + sigma^2 I) plus D/(2 sigma^2) - 1/2 tr(S_sigma^{-1})).
Monte Carlo estimates are checked within a few standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import scorediff.processes as P
from scorediff.analytic import ring2d
from scorediff.score_matching import (
    EnergyScore,
    denoising_score_matching,
    exact_score_matching,
    langevin_dynamics,
    score_matching_loss,
    sliced_score_matching,
)

F64 = torch.float64
MU = torch.tensor([0.5, -1.0], dtype=F64)
S = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=F64)
S_INV = torch.linalg.inv(S)
# a deliberately non-symmetric (non-conservative) model: Hyvarinen's identity holds for any s
M_MODEL = torch.tensor([0.2, -0.5], dtype=F64)
P_MODEL = torch.tensor([[1.5, 0.4], [-0.2, 0.9]], dtype=F64)


def gaussian_data(n: int, seed: int, cov: torch.Tensor = S) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return MU + torch.randn(n, 2, generator=g, dtype=F64) @ torch.linalg.cholesky(cov).T


def linear_score(m: torch.Tensor, p: torch.Tensor):
    return lambda x: -(x - m) @ p.T


def fisher_gaussian(m: torch.Tensor, p: torch.Tensor, cov: torch.Tensor) -> float:
    """1/2 E||-P(x - m) + cov^{-1}(x - mu)||^2 for x ~ N(mu, cov), in closed form."""
    a = torch.linalg.inv(cov) - p
    pd = p @ (MU - m)
    return float(0.5 * (torch.trace(a @ cov @ a.T) + pd @ pd))


def assert_mc(losses: torch.Tensor, truth: float, k: float = 4.0) -> None:
    mean, se = float(losses.mean()), float(losses.std() / math.sqrt(losses.numel()))
    assert abs(mean - truth) < k * se, f"MC estimate {mean:.5f} +- {se:.5f}, closed form {truth:.5f}"


# -- objectives equal the Fisher divergence up to a model-free constant -----------------------------------


@pytest.mark.parametrize(
    "name, options",
    [
        ("exact", {}),
        ("sliced", {"distribution": "gaussian", "projections": 2}),
        ("sliced", {"distribution": "rademacher"}),
        ("sliced-vr", {"distribution": "gaussian"}),
        ("sliced-vr", {"distribution": "rademacher"}),
        ("sliced-vr", {"distribution": "sphere"}),
    ],
)
def test_objective_is_fisher_divergence_up_to_constant(name, options):
    x = gaussian_data(40000, seed=1)
    s = linear_score(M_MODEL, P_MODEL)
    g = torch.Generator().manual_seed(2)
    losses = score_matching_loss(name, s, x, generator=g, create_graph=False, **options).detach()
    assert losses.shape == (x.shape[0],)
    truth = fisher_gaussian(M_MODEL, P_MODEL, S) - 0.5 * float(torch.trace(S_INV))
    assert_mc(losses, truth)


def test_dsm_is_fisher_divergence_to_noised_density():
    sigma = 0.5
    x = gaussian_data(40000, seed=3)
    s = linear_score(M_MODEL, P_MODEL)
    losses = denoising_score_matching(s, x, sigma, generator=torch.Generator().manual_seed(4))
    s_sigma = S + sigma**2 * torch.eye(2, dtype=F64)
    truth = fisher_gaussian(M_MODEL, P_MODEL, s_sigma) + 2 / (2 * sigma**2) - 0.5 * float(torch.trace(torch.linalg.inv(s_sigma)))
    assert_mc(losses, truth)


def test_exact_trace_matches_analytic_jacobian_per_example():
    # a nonlinear score: s(x) = -x^3 (elementwise) + sin(x_1) e_0, Jacobian trace -3 sum x^2 + 0
    x = gaussian_data(16, seed=5)
    s = lambda x: -(x**3) + torch.stack([torch.sin(x[:, 1]), torch.zeros_like(x[:, 0])], 1)
    got = exact_score_matching(s, x, create_graph=False)
    want = -3 * (x**2).sum(1) + 0.5 * (s(x) ** 2).sum(1)
    torch.testing.assert_close(got, want)


def test_objectives_are_reproducible_and_check_names():
    x = gaussian_data(64, seed=6)
    s = linear_score(M_MODEL, P_MODEL)
    for name in ("sliced", "dsm"):
        a = score_matching_loss(name, s, x, generator=torch.Generator().manual_seed(7))
        b = score_matching_loss(name, s, x, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="'ssm' unknown; one of"):
        score_matching_loss("ssm", s, x)
    with pytest.raises(ValueError, match="'uniform' unknown"):
        sliced_score_matching(s, x, distribution="uniform")
    with pytest.raises(ValueError, match="sigma must be > 0"):
        denoising_score_matching(s, x, 0.0)


# -- each objective recovers a Gaussian by gradient descent -----------------------------------------------


class LinearScore(nn.Module):
    """s(x) = -P (x - m) with free m and P."""

    def __init__(self):
        super().__init__()
        self.m = nn.Parameter(torch.zeros(2, dtype=F64))
        self.p = nn.Parameter(torch.eye(2, dtype=F64))

    def forward(self, x):
        return -(x - self.m) @ self.p.T


def fit(model: nn.Module, name: str, x: torch.Tensor, steps: int, **options) -> None:
    g = torch.Generator().manual_seed(11)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        score_matching_loss(name, model, x, generator=g, **options).mean().backward()
        opt.step()
        sched.step()


@pytest.mark.parametrize(
    "name, options",
    [
        ("exact", {}),
        ("sliced", {"projections": 4}),
        ("sliced-vr", {"projections": 2, "distribution": "rademacher"}),
        ("dsm", {"sigma": 0.3}),
    ],
)
def test_objective_recovers_gaussian(name, options):
    x = gaussian_data(2000, seed=12)
    model = LinearScore()
    fit(model, name, x, steps=300, **options)
    # The minimiser of each objective's expectation (over v or z) on this sample is closed form: m = mean,
    # P = cov_hat^{-1} (exact, sliced), P = (cov_hat + sigma^2 I)^{-1} for DSM (the noised sample's score).
    sigma2 = options.get("sigma", 0.0) ** 2
    eye = torch.eye(2, dtype=F64)
    xc = x - x.mean(0)
    p_hat = torch.linalg.inv(xc.T @ xc / len(x) + sigma2 * eye)
    tol = 2e-3 if name == "exact" else 0.03  # deterministic full-batch descent vs. stochastic projections/noise
    torch.testing.assert_close(model.m.detach(), x.mean(0), atol=tol, rtol=0)
    torch.testing.assert_close(model.p.detach(), p_hat, atol=5 * tol, rtol=0)
    # and the population's: mu and (S + sigma^2 I)^{-1}, up to the sampling error of 2000 points
    # (DSM's target differs from S^{-1} by up to 0.3 at sigma = 0.3)
    assert torch.allclose(model.m.detach(), MU, atol=0.1), model.m
    assert torch.allclose(model.p.detach(), torch.linalg.inv(S + sigma2 * eye), atol=0.15), model.p


# -- energy parameterization ----------------------------------------------------------------------------


class QuadraticEnergy(nn.Module):
    """E(x) = 1/2 (x - m)^T A (x - m), A = L L^T: the energy of N(m, A^{-1})."""

    def __init__(self, m, l):
        super().__init__()
        self.m = nn.Parameter(torch.as_tensor(m, dtype=F64).clone())
        self.l = nn.Parameter(torch.as_tensor(l, dtype=F64).clone())

    def forward(self, x):
        a = self.l @ self.l.T
        d = x - self.m
        return 0.5 * ((d @ a) * d).sum(1)


def test_energy_score_matches_quadratic_score_and_trains():
    l = torch.tensor([[1.2, 0.0], [0.5, 0.8]], dtype=F64)
    energy = QuadraticEnergy(M_MODEL, l)
    model = EnergyScore(energy)
    x = gaussian_data(32, seed=13)
    a = l @ l.T
    torch.testing.assert_close(model(x), -(x - M_MODEL) @ a.T)
    with torch.no_grad():
        out = model(x)
    assert not out.requires_grad
    torch.testing.assert_close(out, -(x - M_MODEL) @ a.T)
    # the loss reaches the energy's weights (create_graph): compare with the closed-form score's gradients
    exact_score_matching(model, x).mean().backward()
    ref_l = l.clone().requires_grad_(True)
    ref_m = M_MODEL.clone().requires_grad_(True)
    exact_score_matching(lambda y: -(y - ref_m) @ (ref_l @ ref_l.T).T, x).mean().backward()
    torch.testing.assert_close(energy.l.grad, ref_l.grad)
    torch.testing.assert_close(energy.m.grad, ref_m.grad)


def test_energy_fit_by_sliced_matching_recovers_precision():
    x = gaussian_data(2000, seed=14)
    energy = QuadraticEnergy(torch.zeros(2), torch.eye(2))
    fit(EnergyScore(energy), "sliced-vr", x, steps=300)
    a = (energy.l @ energy.l.T).detach()
    xc = x - x.mean(0)
    # the sample's minimiser (as in test_objective_recovers_gaussian), then the population's
    torch.testing.assert_close(a, torch.linalg.inv(xc.T @ xc / len(x)), atol=0.15, rtol=0)
    torch.testing.assert_close(energy.m.detach(), x.mean(0), atol=0.03, rtol=0)
    assert torch.allclose(a, S_INV, atol=0.15), a
    assert torch.allclose(energy.m.detach(), MU, atol=0.1)


# -- Langevin dynamics ----------------------------------------------------------------------------------


def test_langevin_reaches_gaussian_and_its_exact_discretisation_bias():
    eps, n = 0.05, 20000
    g = torch.Generator().manual_seed(15)
    x0 = torch.randn(n, 2, generator=g, dtype=F64)
    score = linear_score(MU, S_INV)
    x, traj = langevin_dynamics(score, x0, eps, 300, g, return_trajectory=True)
    assert traj.shape == (301, n, 2) and torch.equal(traj[0], x0) and torch.equal(traj[-1], x)
    # ULA's stationary law for N(mu, S): N(mu, S (I - eps/4 S^{-1})^{-1}); slowest contraction here is
    # (1 - eps / (2 * 1.16))^300 ~ 1.5e-3 of the initial offset, well below the sampling error
    cov_stationary = S @ torch.linalg.inv(torch.eye(2, dtype=F64) - eps / 4 * S_INV)
    xc = x - x.mean(0)
    cov = xc.T @ xc / n
    se_mean = torch.sqrt(torch.diagonal(cov_stationary) / n)
    assert ((x.mean(0) - MU).abs() < 4 * se_mean).all(), x.mean(0)
    # var of a sample covariance entry: (C_ij^2 + C_ii C_jj) / n
    se_cov = torch.sqrt((cov_stationary**2 + torch.outer(torch.diagonal(cov_stationary), torch.diagonal(cov_stationary))) / n)
    assert ((cov - cov_stationary).abs() < 4 * se_cov).all(), (cov, cov_stationary)


def test_langevin_is_reproducible_and_checks_arguments():
    x0 = torch.zeros(8, 2, dtype=F64)
    score = linear_score(MU, S_INV)
    a = langevin_dynamics(score, x0, 0.1, 5, torch.Generator().manual_seed(0))
    b = langevin_dynamics(score, x0, 0.1, 5, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    seen = []
    langevin_dynamics(score, x0, 0.1, 3, torch.Generator().manual_seed(0), callback=lambda k, x: seen.append(k))
    assert seen == [1, 2, 3]
    with pytest.raises(ValueError, match="step_size must be > 0"):
        langevin_dynamics(score, x0, 0.0, 5)


# -- annealed Langevin (NCSN) recovers mode weights that plain Langevin cannot ------------------------------

CHI2_7DOF_P001 = 24.32  # chi-square quantile, 7 degrees of freedom, p = 0.001


def mode_weights(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Fraction of samples nearest to each mode."""
    k = torch.cdist(x.to(F64), means).argmin(1)
    return torch.bincount(k, minlength=means.shape[0]).to(F64) / x.shape[0]


def chi2(w_hat: torch.Tensor, w: torch.Tensor, n: int) -> float:
    return float(n * ((w_hat - w) ** 2 / w).sum())


def test_annealed_langevin_recovers_mode_weights_plain_langevin_does_not():
    from scorediff.samplers import SAMPLERS

    # a rename of the sampler must fail here, not skip
    assert "annealed_langevin" in SAMPLERS, "sampler 'annealed_langevin' is not registered in SAMPLERS"
    mix = ring2d()  # 8 modes with weights 0.05 .. 0.2, 0.77 apart, std 0.03 .. 0.15
    process = P.make("ve", sigma_min=0.02, sigma_max=3.0, levels=11)  # sigma_max ~ the largest pairwise distance
    n = 2000
    g = torch.Generator().manual_seed(0)
    x = process.prior_sample((n, 2), g, dtype=F64)
    # NCSN: Algorithm 1 with the exact scores at each level, 100 steps per level
    xs = SAMPLERS["annealed_langevin"](mix.denoiser(process), process, x, process.level_times, generator=g, n_steps_each=100)
    w_ncsn = mode_weights(xs, mix.means)
    se = torch.sqrt(mix.weights * (1 - mix.weights) / n)
    assert chi2(w_ncsn, mix.weights, n) < CHI2_7DOF_P001, (w_ncsn, mix.weights)
    assert ((w_ncsn - mix.weights).abs() < 4 * se).all(), (w_ncsn, mix.weights)
    # plain Langevin with the exact score at the smallest level, from the same start: each point stays in the
    # basin it falls into first, so the weights follow the basins (about 1/8 each), not p
    m = 1000
    x_plain = langevin_dynamics(lambda y: mix.score(y, 0.0, process), x[:m], 0.2 * 0.02**2, 600, g)
    w_plain = mode_weights(x_plain, mix.means)
    assert chi2(w_plain, mix.weights, m) > 4 * CHI2_7DOF_P001, (w_plain, mix.weights)
