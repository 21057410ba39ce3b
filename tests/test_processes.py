"""Forward processes against autograd, their inverses, the papers' SDEs and a simulated forward SDE."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scorediff.processes as P
from tests.conftest import PROCESS_SPECS, interior_times


def test_derivatives_match_autograd(process):
    t = interior_times(process).requires_grad_(True)
    for f, df in [(process.alpha, process.d_alpha), (process.sigma, process.d_sigma)]:
        (g,) = torch.autograd.grad((f(t) + 0 * t).sum(), t)  # + 0 t: constants have no graph
        torch.testing.assert_close(df(t.detach()), g, rtol=1e-9, atol=1e-9)


def test_log_snr_inverse_and_monotone(process):
    t = interior_times(process, n=25)
    lam = process.log_snr(t)
    assert (lam[1:] < lam[:-1]).all(), "log-SNR must decrease in t"
    torch.testing.assert_close(process.t_of_log_snr(lam), t, rtol=1e-9, atol=1e-9)
    a, s = process.alpha(t), process.sigma(t)
    torch.testing.assert_close(lam, torch.log(a / s))


def _int_beta(t, bmin=0.1, bmax=20.0):
    return bmin * t + 0.5 * t**2 * (bmax - bmin)


@pytest.mark.parametrize(
    "name,opts,expected",
    [
        ("vp", {}, lambda t: (-(0.1 + t * 19.9) / 2, 0.1 + t * 19.9)),
        (
            "sub-vp",
            {},
            lambda t: (-(0.1 + t * 19.9) / 2, (0.1 + t * 19.9) * (1 - torch.exp(-2 * _int_beta(t)))),
        ),
        (
            "ve",
            {"sigma_min": 0.01, "sigma_max": 50.0},
            lambda t: (0 * t, 2 * math.log(5000.0) * (0.01 * 5000.0**t) ** 2),
        ),
        ("edm", {}, lambda t: (0 * t, 2 * t)),
        ("flow", {}, lambda t: (-1 / (1 - t), 2 * t / (1 - t))),
    ],
)
def test_sde_equals_papers(name, opts, expected):
    """(f, g^2) derived from alpha, sigma equal Song et al.'s VP, sub-VP, VE SDEs (and EDM's, flow's)."""
    p = P.make(name, **opts)
    t = interior_times(p)
    f, g2 = p.sde(t)
    f_ref, g2_ref = expected(t)
    torch.testing.assert_close(f, f_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g2, g2_ref, rtol=1e-10, atol=1e-12)


def test_discrete_vp_grid_is_cumprod():
    for sched in ("linear", "cosine"):
        p = P.make("vp-discrete", steps=100, schedule=sched)
        i = torch.arange(1, 101, dtype=torch.float64)
        abar = torch.cumprod(1 - p.betas, 0)
        torch.testing.assert_close(p.alpha(i / 100) ** 2, abar, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(p.sigma(i / 100) ** 2, 1 - abar, rtol=1e-12, atol=1e-14)
    lin = P.make("vp-discrete")
    assert lin.betas[0].item() == pytest.approx(1e-4) and lin.betas[-1].item() == pytest.approx(0.02)
    cos = P.make("vp-discrete", schedule="cosine")
    assert cos.betas.max().item() <= 0.999 + 1e-12  # Nichol & Dhariwal's clipping


def test_discrete_vp_interpolation_is_linear_in_log_abar():
    p = P.make("vp-discrete", steps=100)
    t0, t1 = torch.tensor(0.30, dtype=torch.float64), torch.tensor(0.31, dtype=torch.float64)  # adjacent grid points
    mid = 0.5 * (t0 + t1)
    la = lambda t: 2 * torch.log(p.alpha(t))
    torch.testing.assert_close(la(mid), 0.5 * (la(t0) + la(t1)))


def test_ddpm_posterior_matches_gaussian_conditioning():
    """q(x_{i-1} | x_i, x0) from the process equals Gaussian conditioning of the joint, done here independently."""
    p = P.make("vp-discrete", steps=50)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    xt = torch.randn(4, 3, generator=g, dtype=torch.float64)
    for i in (1, 2, 17, 50):
        abar_prev = 1.0 if i == 1 else p.alpha_bar[i - 2].item()
        beta = p.betas[i - 1].item()
        # joint of (x_{i-1}, x_i) given x0: x_{i-1} = a x0 + s e1, x_i = sqrt(1-beta) x_{i-1} + sqrt(beta) e2
        a, s2 = math.sqrt(abar_prev), 1 - abar_prev
        c = math.sqrt(1 - beta)
        var_t = c**2 * s2 + beta
        cov = c * s2
        mean_ref = a * x0 + cov / var_t * (xt - c * a * x0)
        var_ref = s2 - cov**2 / var_t
        mean, var = p.posterior(x0, xt, i)
        torch.testing.assert_close(mean, mean_ref)
        assert float(var) == pytest.approx(var_ref, rel=1e-10, abs=1e-15)


@pytest.mark.parametrize(
    "name,opts,ta,tb,steps",
    [
        ("vp", {}, 0.05, 0.8, 800),
        ("vp", {"schedule": "cosine"}, 0.05, 0.9, 800),
        ("sub-vp", {}, 0.05, 0.8, 800),
        ("ve", {"sigma_min": 0.01, "sigma_max": 5.0}, 0.0, 0.8, 800),
        ("edm", {}, 0.01, 2.0, 800),
        ("flow", {}, 0.05, 0.9, 800),
        ("vp-discrete", {"steps": 100}, 0.05, 0.7, 650),
    ],
)
def test_simulated_forward_sde_reproduces_marginal(name, opts, ta, tb, steps):
    """Euler-Maruyama on dx = f x dt + g dw from x_ta ~ q(x_ta | x0) reaches mean alpha(tb) x0, variance sigma(tb)^2."""
    p = P.make(name, **opts)
    n, x0 = 40000, 1.7
    g = torch.Generator().manual_seed(1)
    ta_, tb_ = torch.tensor(ta, dtype=torch.float64), torch.tensor(tb, dtype=torch.float64)
    x = p.alpha(ta_) * x0 + p.sigma(ta_) * torch.randn(n, generator=g, dtype=torch.float64)
    ts = torch.linspace(ta, tb, steps + 1, dtype=torch.float64)
    for k in range(steps):
        dt = ts[k + 1] - ts[k]
        f, g2 = p.sde(ts[k])
        x = x + f * x * dt + torch.sqrt(g2 * dt) * torch.randn(n, generator=g, dtype=torch.float64)
    mean_ref, var_ref = (p.alpha(tb_) * x0).item(), (p.sigma(tb_) ** 2).item()
    se_mean = math.sqrt(var_ref / n)
    assert abs(x.mean().item() - mean_ref) < 4 * se_mean + 0.01 * abs(mean_ref)
    assert x.var().item() == pytest.approx(var_ref, rel=4 * math.sqrt(2 / n) + 0.01)


def test_prior_sample_and_logp(process):
    g = torch.Generator().manual_seed(0)
    x = process.prior_sample((20000, 2), g, dtype=torch.float64)
    s = process.sigma(torch.tensor(process.t_max, dtype=torch.float64)).item()
    assert x.std().item() == pytest.approx(s, rel=0.03)
    ref = torch.distributions.Normal(0.0, s).log_prob(x[:10]).sum(1)
    torch.testing.assert_close(process.prior_logp(x[:10]), ref)


def test_q_sample_uses_generator(process):
    x0 = torch.zeros(3, 2, dtype=torch.float64)
    a = process.q_sample(x0, 0.5 * process.t_max, torch.Generator().manual_seed(3))[0]
    b = process.q_sample(x0, 0.5 * process.t_max, torch.Generator().manual_seed(3))[0]
    torch.testing.assert_close(a, b)


def test_config_round_trip(process):
    q = P.from_config(process.config())
    t = interior_times(process)
    torch.testing.assert_close(q.alpha(t), process.alpha(t))
    torch.testing.assert_close(q.sigma(t), process.sigma(t))


def test_bad_input_errors():
    with pytest.raises(ValueError, match="process 'vpp' unknown; one of"):
        P.make("vpp")
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        P.make("vp").alpha(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 80\]"):
        P.make("edm").sigma(-0.1)
    with pytest.raises(ValueError, match="beta"):
        P.make("vp-discrete", betas=[0.1, 0.2, 1.0])
    with pytest.raises(ValueError, match="beta"):
        P.make("vp-discrete", betas=[0.1, -0.2, 0.3])
    with pytest.raises(ValueError, match="schedule 'quadratic' unknown"):
        P.make("vp-discrete", schedule="quadratic")
    with pytest.raises(ValueError, match="bad option"):
        P.make("flow", beta_min=0.1)
    with pytest.raises(ValueError, match="sigma_min"):
        P.make("ve", sigma_min=10, sigma_max=1)
    # EDM's sigma_data belongs to the preconditioning: a process would ignore it, so it is rejected
    with pytest.raises(ValueError, match="sigma_data is not a process option; give it to the parameterization"):
        P.make("edm", sigma_data=0.5)
    assert "sigma_data" not in P.make("edm").config()


# -- property-based: any time, any process ---------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(spec=st.sampled_from(PROCESS_SPECS), frac=st.floats(0.01, 0.99))
def test_log_snr_inverse_and_eps_round_trip_at_any_time(spec, frac):
    """At an arbitrary time (hypothesis draws it, shrinking to the failing one): t_of_log_snr inverts log_snr,
    and x0 -> eps -> x0 through the process's alpha, sigma is exact to float64 rounding."""
    import scorediff.parameterizations as PZ

    _, name, opts = spec
    p = P.make(name, **opts)
    t = torch.tensor([p.t_min + frac * (p.t_max - p.t_min)], dtype=torch.float64)
    torch.testing.assert_close(p.t_of_log_snr(p.log_snr(t)), t, rtol=1e-7, atol=1e-9)
    x0 = torch.linspace(-2, 2, 6, dtype=torch.float64).reshape(1, 6)
    eps = torch.linspace(1, -1, 6, dtype=torch.float64).reshape(1, 6)
    xt = p.marginal(x0, t, eps)
    a, s = PZ.coefficients(p, t, xt)[:2]
    torch.testing.assert_close(PZ.x0_from_eps(xt, PZ.eps_from_x0(xt, x0, a, s), a, s), x0, rtol=1e-9, atol=1e-9)
