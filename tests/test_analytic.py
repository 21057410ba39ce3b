"""The oracle against autograd, Tweedie's formula, Monte Carlo and brute-force conditioning."""

import math

import pytest
import torch

import scorediff.processes as P
from scorediff.analytic import GaussianMixture, mixture64, ring2d, sliced_wasserstein
from tests.conftest import interior_times


def _points(mix, process, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = mix.sample(n, g)
    t = interior_times(process, n=n)
    return process.q_sample(x0, t, g)[0], t


@pytest.mark.parametrize("mix", [ring2d(), mixture64()], ids=["ring2d", "mixture64"])
def test_score_is_gradient_of_log_prob_t(process, mix):
    x, t = _points(mix, process, 6)
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(mix.log_prob_t(x, t, process).sum(), x)
    torch.testing.assert_close(mix.score(x.detach(), t, process), g, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("mix", [ring2d(), mixture64()], ids=["ring2d", "mixture64"])
def test_denoiser_is_tweedie(process, mix):
    x, t = _points(mix, process, 6)
    a, s = process.alpha(t)[:, None], process.sigma(t)[:, None]
    tweedie = (x + s**2 * mix.score(x, t, process)) / a
    torch.testing.assert_close(mix.denoiser(process)(x, t), tweedie, rtol=1e-8, atol=1e-8)


def test_denoiser_monte_carlo_1d():
    """E[x0 | x_t] by self-normalised importance sampling over p0 matches the closed form."""
    mix = GaussianMixture([0.3, 0.7], [[-1.0], [1.5]], [[0.2], [0.5]])
    p = P.make("vp")
    g = torch.Generator().manual_seed(0)
    x0 = mix.sample(400000, g)[:, 0]
    for t, xt in [(0.3, 0.2), (0.6, -0.5), (0.9, 1.0)]:
        tt = torch.tensor(t, dtype=torch.float64)
        a, s = p.alpha(tt), p.sigma(tt)
        logw = -0.5 * ((xt - a * x0) / s) ** 2
        w = torch.softmax(logw, 0)
        est = (w * x0).sum()
        se = torch.sqrt((w**2 * (x0 - est) ** 2).sum())
        exact = mix.x0_mean(torch.tensor([[xt]], dtype=torch.float64), tt, p)[0, 0]
        assert abs(est - exact) < 5 * se + 1e-4


def test_log_prob_is_normalised_and_matches_torch():
    mix = ring2d()
    lin = torch.linspace(-2, 2, 401, dtype=torch.float64)
    xx, yy = torch.meshgrid(lin, lin, indexing="ij")
    grid = torch.stack([xx.flatten(), yy.flatten()], 1)
    mass = mix.log_prob(grid).exp().sum() * (lin[1] - lin[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=1e-3)
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(mix.weights),
        torch.distributions.MultivariateNormal(mix.means, mix.covs),
    )
    x = mix.sample(50, torch.Generator().manual_seed(2))
    torch.testing.assert_close(mix.log_prob(x), ref.log_prob(x))


def test_log_prob_t_at_zero_is_log_prob_for_vp():
    mix = ring2d()
    x = mix.sample(20, torch.Generator().manual_seed(3))
    # flow at t = 0: alpha = 1, sigma = 0
    torch.testing.assert_close(mix.log_prob_t(x, 0.0, P.make("flow")), mix.log_prob(x))


def test_component_posterior_sums_to_one(process):
    mix = ring2d()
    x, t = _points(mix, process, 8)
    post = mix.component_posterior(x, t, process)
    torch.testing.assert_close(post.sum(1), torch.ones(8, dtype=torch.float64))


def test_condition_matches_bayes():
    """log p(x_u | x_o) = log p0(x) - log p0_o(x_o), with p0_o the mixture of the observed marginals."""
    mix = mixture64(dim=6, components=3, rank=2)
    g = torch.Generator().manual_seed(4)
    x = mix.sample(1, g)[0]
    mask = torch.tensor([True, False, True, False, False, True])
    cond = mix.condition(x, mask)
    o = mask.nonzero().flatten()
    marg = GaussianMixture(mix.weights, mix.means[:, o], mix.covs[:, o][:, :, o])
    xu = mix.sample(5, g)[:, ~mask]
    full = torch.zeros(5, 6, dtype=torch.float64)
    full[:, mask] = x[mask]
    full[:, ~mask] = xu
    torch.testing.assert_close(cond.log_prob(xu), mix.log_prob(full) - marg.log_prob(x[mask][None]))


def test_any_event_shape():
    mix = GaussianMixture([1.0, 2.0], torch.zeros(2, 4), torch.ones(2, 4), event_shape=(1, 2, 2))
    x = mix.sample(3)
    assert x.shape == (3, 1, 2, 2)
    assert mix.score(x.float(), 0.5, P.make("vp")).shape == (3, 1, 2, 2)


def test_sample_moments():
    mix = ring2d()
    x = mix.sample(200000, torch.Generator().manual_seed(5))
    torch.testing.assert_close(x.mean(0), mix.mean(), atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), mix.covariance(), atol=0.01, rtol=0)


def test_sliced_wasserstein():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert sliced_wasserstein(x, x, generator=g).item() == 0.0
    shift = torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64)
    # sliced W2 of a pure shift m: sqrt(E[(m.u)^2]) = |m| / sqrt(D)
    sw = sliced_wasserstein(x, x + shift, projections=1000, generator=g).item()
    assert sw == pytest.approx(3.0 / math.sqrt(3), rel=0.08)


def test_bad_mixtures():
    with pytest.raises(ValueError, match="not positive definite"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, -1.0]]])
    with pytest.raises(ValueError, match="means must have shape"):
        GaussianMixture([1.0, 1.0], [[0.0, 0.0]], [[1.0, 1.0]])
    with pytest.raises(ValueError, match="expected x of shape"):
        ring2d().log_prob(torch.zeros(3, 3))


# -- Gaussian processes on a grid ------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["rbf", "matern12", "matern32", "matern52", "periodic", "seasonal"])
def test_gp_kernel_is_a_valid_stationary_covariance(kernel):
    from scorediff.analytic import kernel_matrix

    k = kernel_matrix(12, kernel, lengthscale=0.3, variance=2.0)
    assert torch.allclose(k, k.T)
    assert torch.allclose(torch.diagonal(k), torch.full((12,), 2.0, dtype=torch.float64))
    assert torch.allclose(k[0, 3], k[5, 8])  # stationary: depends on |i - j| only
    assert torch.linalg.eigvalsh(k).min() > -1e-8
    if kernel == "seasonal":  # two thirds of the variance repeat exactly every period (here 4 steps)
        k = kernel_matrix(12, kernel, lengthscale=0.3, variance=2.0, period=4 / 11)
        season = k - kernel_matrix(12, "matern52", lengthscale=0.3, variance=2.0) / 3
        torch.testing.assert_close(season[0, 4], season[0, 0])
        torch.testing.assert_close(season[0, 0], torch.tensor(4 / 3, dtype=torch.float64))


def test_gp_forecast_equals_textbook_gp_regression():
    """The oracle's conditional (through GaussianMixture.condition) equals GP regression written out
    (Rasmussen & Williams eq. 2.19, noise-free): mean K_*o K_oo^-1 y, cov K_** - K_*o K_oo^-1 K_o*."""
    from scorediff.analytic import gaussian_process, kernel_matrix

    L, k_obs = 20, 12
    gp = gaussian_process(L, kernel="matern52", lengthscale=0.25, jitter=1e-8)
    x = gp.sample(1, torch.Generator().manual_seed(3))[0]
    mask = torch.zeros(1, L, dtype=torch.bool)
    mask[0, :k_obs] = True
    post = gp.condition(x, mask)
    K = kernel_matrix(L, "matern52", lengthscale=0.25) + 1e-8 * torch.eye(L, dtype=torch.float64)
    o, u = slice(0, k_obs), slice(k_obs, L)
    sol = torch.linalg.solve(K[o, o], K[o, u])
    mean = sol.T @ x[0, :k_obs]
    cov = K[u, u] - K[u, o] @ sol
    assert torch.allclose(post.means[0], mean, atol=1e-8)
    assert torch.allclose(post.covs[0], cov, atol=1e-8)


def test_gp_channels_are_independent_and_bad_input_is_one_line():
    from scorediff.analytic import gaussian_process

    gp = gaussian_process(6, channels=3, kernel="rbf")
    assert gp.event_shape == (3, 6)
    cov = gp.covs[0]
    assert torch.count_nonzero(cov[:6, 6:]) == 0 and torch.count_nonzero(cov[6:12, 12:]) == 0
    with pytest.raises(ValueError, match="kernel 'gauss' unknown"):
        gaussian_process(6, kernel="gauss")
    with pytest.raises(ValueError, match="lengthscale"):
        gaussian_process(6, lengthscale=0.0)
