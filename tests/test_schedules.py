"""Time grids: endpoints, strict monotonicity, and each spacing against its definition."""

import math

import pytest
import torch

import scorediff.processes as P
from scorediff import schedules

CONTINUOUS = ("uniform", "logsnr", "karras", "quadratic", "logsnr_cosine")


def sigma_tilde(process, ts):
    return process.sigma(ts) / process.alpha(ts)


@pytest.mark.parametrize("name", CONTINUOUS)
@pytest.mark.parametrize("steps", [1, 2, 7, 50])
def test_endpoints_and_monotone(process, name, steps):
    ts = schedules.make(name, steps, process)
    assert ts.dtype == torch.float64 and ts.shape == (steps + 1,)
    assert ts[0] == process.t_max and ts[-1] == process.t_min
    assert (ts[1:] < ts[:-1]).all()


@pytest.mark.parametrize("name", CONTINUOUS)
def test_denoise_to_zero(process, name):
    if float(process.sigma(torch.tensor(0.0, dtype=torch.float64))) > 0:  # VE: sigma(0) = sigma_min, there is no time of clean data
        with pytest.raises(ValueError, match="sigma > 0 at t = 0"):
            schedules.make(name, 10, process, denoise_to_zero=True)
        return
    ts = schedules.make(name, 10, process, denoise_to_zero=True)
    assert ts.shape == (11,) and ts[-1] == 0 and ts[-2] == process.t_min and ts[0] == process.t_max
    assert (ts[1:] < ts[:-1]).all()
    # EDM's convention: the first N nodes are the N-node schedule from t_max to t_min
    assert torch.equal(ts[:-1], schedules.make(name, 9, process))


def test_uniform_and_quadratic_spacing():
    p = P.make("vp")
    ts = schedules.make("uniform", 8, p)
    assert torch.allclose(ts[:-1] - ts[1:], torch.full((8,), (1 - p.t_min) / 8, dtype=torch.float64))
    q = schedules.make("quadratic", 8, p)
    u = torch.linspace(1, 0, 9, dtype=torch.float64)
    assert torch.allclose(q, p.t_min + (1 - p.t_min) * u**2)


@pytest.mark.parametrize("name", ["vp", "sub-vp", "ve", "edm"])
def test_logsnr_uniform_in_lambda(name):
    p = P.make(name)
    ts = schedules.make("logsnr", 12, p)
    lam = p.log_snr(ts)
    d = lam[1:] - lam[:-1]
    assert torch.allclose(d, d.mean().expand(12), rtol=1e-8)
    assert math.isclose(float(lam[0]), float(p.log_snr(torch.tensor(p.t_max, dtype=torch.float64))), rel_tol=1e-9)


@pytest.mark.parametrize("name,opts", [("flow", {}), ("vp", {"schedule": "cosine"})])
def test_logsnr_infinite_noise(name, opts):
    # lambda(t_max) = -inf (flow) or about -37 (cosine VP): ts[0] stays t_max, the rest are uniform in lambda
    # from lambda_min to lambda(t_min)
    p = P.make(name, **opts)
    ts = schedules.make("logsnr", 10, p, lambda_min=-5.0)
    assert ts[0] == p.t_max and torch.isfinite(ts).all()
    lam = p.log_snr(ts[1:])
    assert math.isclose(float(lam[0]), -5.0, abs_tol=1e-8)
    assert torch.allclose(lam, torch.linspace(-5.0, float(p.log_snr(torch.tensor(p.t_min, dtype=torch.float64))), 10, dtype=torch.float64), atol=1e-7)


@pytest.mark.parametrize("name", ["vp-discrete", "edm", "flow"])
def test_logsnr_cosine_closed_form(name):
    # weight 0: uniform in the cosine schedule's time u = (2 / pi) arctan(e^{(lambda - c) / 2}) between the ends
    # (closed-form inverse lambda = c + 2 log tan(pi u / 2)); weight 1: the logsnr grid; in between, the mixture's
    # CDF w (lambda - lo) / (hi - lo) + (1 - w) (u(lambda) - u(lo)) / (u(hi) - u(lo)) is i / (N - 1) at node i.
    p, n = P.make(name), 9
    first = 1 if name == "flow" else 0  # flow: ts[0] = t_max at lambda = -inf, the rest from lambda_min = -6
    lam = p.log_snr(schedules.make("logsnr_cosine", n - 1 + first, p, weight=0.0, center=0.5)[first:])
    lo, hi = float(lam[0]), float(lam[-1])
    u_of = lambda x: (2 / math.pi) * torch.atan(torch.exp((torch.as_tensor(x, dtype=torch.float64) - 0.5) / 2))
    u = torch.linspace(float(u_of(lo)), float(u_of(hi)), n, dtype=torch.float64)
    assert torch.allclose(lam, 0.5 + 2 * torch.log(torch.tan(math.pi * u / 2)), atol=1e-7)
    assert torch.allclose(schedules.make("logsnr_cosine", 12, p, weight=1.0), schedules.make("logsnr", 12, p), atol=1e-9)
    lam = p.log_snr(schedules.make("logsnr_cosine", n - 1 + first, p)[first:])  # default: weight 1/2, center 0
    u_lam = u_of(lam + 0.5)  # u with center 0
    cdf = 0.5 * (lam - lo) / (hi - lo) + 0.5 * (u_lam - u_lam[0]) / (u_lam[-1] - u_lam[0])
    assert torch.allclose(cdf, torch.linspace(0, 1, n, dtype=torch.float64), atol=1e-7)
    with pytest.raises(ValueError, match="weight must lie in"):
        schedules.make("logsnr_cosine", 5, p, weight=1.5)


@pytest.mark.parametrize("name", ["edm", "vp", "ve"])
def test_karras_rho(name):
    p = P.make(name)
    ts = schedules.make("karras", 17, p, rho=7.0)
    s = sigma_tilde(p, ts)
    r = s ** (1 / 7)
    assert torch.allclose(r[1:] - r[:-1], (r[-1] - r[0]).expand(17) / 17, rtol=1e-7)  # linear in sigma~^(1/rho)
    if name == "edm":  # time is sigma: EDM eq. (5) with the paper's constants
        i = torch.arange(18, dtype=torch.float64)
        ref = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
        assert torch.allclose(ts, ref, rtol=1e-12)


def test_discrete_spacings_match_diffusers_definitions():
    p = P.make("vp-discrete")  # T = 1000
    lead = schedules.make("leading", 10, p)
    assert torch.allclose(lead, torch.tensor([901, 801, 701, 601, 501, 401, 301, 201, 101, 1, 0.0], dtype=torch.float64) / 1000)
    trail = schedules.make("trailing", 10, p)
    assert torch.allclose(trail, torch.tensor([1000, 900, 800, 700, 600, 500, 400, 300, 200, 100, 0.0], dtype=torch.float64) / 1000)
    lin = schedules.make("linspace", 4, p)
    assert torch.allclose(lin, torch.tensor([1000, 667, 334, 1, 0.0], dtype=torch.float64) / 1000)  # round(linspace(0, 999, 4)) + 1
    assert schedules.make("trailing", 10, p, denoise_to_zero=False)[-1] == p.t_min
    with pytest.raises(ValueError, match="already ends at t_min"):
        schedules.make("leading", 10, p, denoise_to_zero=False)
    with pytest.raises(ValueError, match="vp-discrete"):
        schedules.make("leading", 10, P.make("vp"))
    with pytest.raises(ValueError, match="exceeds"):
        schedules.make("linspace", 1001, p)


def test_errors():
    p = P.make("vp")
    with pytest.raises(ValueError, match="schedule 'cubic' unknown; one of"):
        schedules.make("cubic", 10, p)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="steps must be an integer"):
            schedules.make("uniform", bad, p)
    with pytest.raises(ValueError, match="does not strictly decrease"):
        schedules.make("uniform", 100, P.make("vp", t_min=1 - 1e-15))
