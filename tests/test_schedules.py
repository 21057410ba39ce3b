"""Time grids: endpoints, strict monotonicity, and each spacing against its definition."""

import math

import pytest
import torch

import scorediff.processes as P
from scorediff import schedules

CONTINUOUS = tuple(n for n in schedules.SCHEDULES if n not in schedules.DISCRETE)  # from the registry


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
    for power, ref in ((1.25, None), (1.0, ts), (2.0, q)):  # power: between uniform (p = 1) and quadratic (p = 2)
        w = schedules.make("power", 8, p, power=power)
        assert torch.allclose(w, p.t_min + (1 - p.t_min) * u**power)
        if ref is not None:
            assert torch.allclose(w, ref)
    assert torch.equal(schedules.make("power", 8, p), schedules.make("power", 8, p, power=1.25))
    with pytest.raises(ValueError, match="power"):
        schedules.make("power", 8, p, power=0.0)


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
    # node density in lambda: 1 above c, sech((lambda - c) / 2) below. Independently of the implementation: the
    # density's integral from lambda_0 to each node (numerical quadrature) grows by the same amount per node,
    # the steps above c are equal, and a c below the whole range gives the logsnr grid.
    p, n, c = P.make(name), 12, 0.5
    first = 1 if name == "flow" else 0  # flow: ts[0] = t_max at lambda = -inf, the rest from lambda_min = -6
    lam = p.log_snr(schedules.make("logsnr_cosine", n - 1 + first, p, center=c)[first:])
    assert torch.isfinite(lam).all() and (lam[1:] > lam[:-1]).all()
    fine = torch.linspace(float(lam[0]), float(lam[-1]), 200001, dtype=torch.float64)
    dens = torch.where(fine >= c, torch.ones_like(fine), 1 / torch.cosh((fine - c) / 2))
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum((dens[1:] + dens[:-1]) / 2 * (fine[1:] - fine[:-1]), 0)])
    at_nodes = cum[torch.searchsorted(fine, lam).clamp(max=len(fine) - 1)]
    assert torch.allclose(at_nodes, torch.linspace(0, float(cum[-1]), n, dtype=torch.float64), atol=2e-3 * float(cum[-1]) / n)
    steps = (lam[1:] - lam[:-1])[lam[:-1] >= c]
    assert steps.numel() >= 3 and torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-6)
    assert (lam[1:] - lam[:-1])[0] > steps.mean()  # thinner at high noise than the logsnr part
    assert torch.allclose(schedules.make("logsnr_cosine", 12, p, center=-100.0), schedules.make("logsnr", 12, p), atol=1e-9)
    with pytest.raises(ValueError, match="center must be a finite lambda"):
        schedules.make("logsnr_cosine", 12, p, center=float("nan"))


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
