"""Every registered sampler, tested generically against closed-form truth (the analytic mixtures).

Parametrised over ``SAMPLERS`` and reading ``SAMPLERS[name].info``, so a new sampler is covered by
adding its registry line. Checks: (a) at high NFE the samples reach the true distribution; (b) each
deterministic sampler converges to the exact probability-flow ODE solution at its declared order;
(c) same seed, same samples; (d) every sampler runs on every process; (e) the model-evaluation count
equals the declared one. Plus the DDIM / Euler / DDPM identities and the framework's contracts.
"""

import functools
import math

import pytest
import torch

import scorediff
import scorediff.analytic as A
import scorediff.processes as P
from scorediff import schedules
from scorediff.samplers import SAMPLERS, options_of, sample, sampler_table
from scorediff.samplers._common import Grid

NAMES = list(SAMPLERS)
# options that make the slow-by-design samplers affordable here (Langevin: T steps per level)
FAST = {"annealed_langevin": {"n_steps_each": 3}}



def mixture8() -> A.GaussianMixture:
    """An 8-D mixture of 4 low-rank-plus-diagonal Gaussians, with non-flat event shape (2, 4)."""
    m = A.mixture64(dim=8, components=4, rank=2, seed=1)
    return A.GaussianMixture(m.weights, m.means, m.covs, event_shape=(2, 4))


def info(name):
    return SAMPLERS[name].info


def proc_for(name, default="vp", **options):
    """``default`` if the sampler runs on it, else the first process it declares (cld's samplers: cld)."""
    p = P.make(default, **options)
    return p if info(name).runs_on(p) else P.make(info(name).processes[0])


def deterministic(name) -> bool:
    return not info(name).stochastic and math.isfinite(info(name).nfe_per_step)


def sw(x, y):
    return float(A.sliced_wasserstein(x, y, projections=128, generator=torch.Generator().manual_seed(0)))


# -- (a) high NFE reaches the truth ------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in NAMES if info(n).denoiser == "any"])  # not the consistency sampler
def test_reaches_truth_at_high_nfe(name):
    # VP (linear), ring2d, 600 samples, ~240 model evaluations (adaptive ODE: default tolerances).
    # Pass: sliced W2 to a true sample within 2x the true-vs-true noise floor (mean over 3 pairs).
    mix, p, n = A.ring2d(), proc_for(name), 600
    nfe = info(name).nfe_per_step
    opts = FAST.get(name, {})
    per_step = opts.get("n_steps_each", nfe)
    steps = 1 if not math.isfinite(nfe) else max(1, round(240 / per_step))
    x = sample(mix.denoiser(p), p, (n, 2), sampler=name, steps=steps, seed=0, dtype=torch.float64, **opts)
    assert x.shape == (n, 2) and torch.isfinite(x).all()
    truth = [mix.sample(n, torch.Generator().manual_seed(100 + k)) for k in range(4)]
    floor = sum(sw(truth[k], truth[k + 1]) for k in range(3)) / 3
    assert sw(x, truth[0]) <= 2 * floor, f"{name}: SW {sw(x, truth[0]):.4f} vs floor {floor:.4f}"


# -- (b) convergence order of the deterministic samplers ----------------------------------------------

ORDER_CASES = [("vp", {"t_min": 0.02}), ("flow", {"t_min": 0.02})]


@functools.cache
def order_reference(case_id: int):
    """(mixture, process, start, tight adaptive PF-ODE solution): shared by every sampler's order test."""
    mix = mixture8()
    p = P.make(ORDER_CASES[case_id][0], **ORDER_CASES[case_id][1])
    x = p.prior_sample((32, 2, 4), torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = SAMPLERS["ode"](mix.denoiser(p), p, x, schedules.make("uniform", 1, p), rtol=1e-10, atol=1e-10)
    return mix, p, x, ref


@pytest.mark.parametrize("case", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
@pytest.mark.parametrize("name", [n for n in NAMES if deterministic(n) and info(n).processes is None])
def test_convergence_order(name, case):  # (cld's samplers, which draw a velocity: tests/test_cld.py)
    # On the 8-D mixture, from the same start, against the adaptive PF-ODE at rtol = atol = 1e-10 (float64).
    # Grid: logsnr (uniform in lambda) from t_max to t_min = 0.02 with 16, 32, 64 steps; at t_min = 0.02 the
    # components are still resolved smoothly, so the asymptotic regime holds (measured slopes: DDIM/Euler
    # 0.96-1.0, Heun 2.02-2.16). For flow the first node has alpha = 0 (infinite noise).
    # The error is the median over the 32 starts of the per-start max error: a start near the boundary between
    # two modes may switch mode at coarse steps (pre-asymptotic), which the median ignores.
    # As diffrax does, fit the slope of log(error) against log(NFE) and require it >= order - 0.5.
    mix, p, x, ref = order_reference(ORDER_CASES.index(case))
    log_nfe, log_err = [], []
    for steps in (16, 32, 64):
        d = mix.denoiser(p)
        y = SAMPLERS[name](d, p, x, schedules.make("logsnr", steps, p))
        log_nfe.append(math.log(d.nfe))
        log_err.append(math.log((y - ref).abs().reshape(32, -1).max(dim=1).values.median().item()))
    xs, ys = torch.tensor(log_nfe), torch.tensor(log_err)
    slope = float(((xs - xs.mean()) * (ys - ys.mean())).sum() / ((xs - xs.mean()) ** 2).sum())
    assert -slope >= info(name).order - 0.5, f"{name}: empirical order {-slope:.2f}, declared {info(name).order}"


def _per_coordinate(denoiser):
    """The exact denoiser of N(MU, S0^2 I_D) from the 1-D oracle's, applied to each coordinate as an example."""
    return lambda x, t: denoiser(x.reshape(-1, 1), t.repeat_interleave(x.shape[1])).reshape(x.shape)


@pytest.mark.parametrize("name", [n for n in NAMES if info(n).stochastic and info(n).denoiser == "any"
                                  and info(n).processes is None])
def test_weak_order(name):  # (cld's: tests/test_cld.py)
    # SamplerInfo.order of a stochastic sampler is its weak order. Target N(0.5, 0.3^2 I) in D = 50 dimensions
    # (the Langevin corrector's step uses per-example norms, which must concentrate), 1000 samples, VP, logsnr
    # grids to t_min with 16, 32, 64 steps; the error is the moments' distance to the exact marginal at
    # t_min, N(alpha m, alpha^2 s^2 + sigma^2): |mean error| / std + |variance ratio - 1| (Monte Carlo noise
    # ~0.006, below the errors at 64 steps). Measured slopes (2 seeds, 4 processes): ddpm 0.7-0.8 (pre-asymptotic,
    # towards 1), euler_maruyama 1.2, pc 1.5-1.8, dpm_solver_pp_2m_sde 0.9-1.8, annealed_langevin 1.0-1.2.
    # As for the deterministic samplers: the fitted slope must be >= order - 0.5.
    mu, s0, dim, n = 0.5, 0.3, 50, 1000
    p = P.make("vp")
    d = _per_coordinate(A.GaussianMixture([1.0], [[mu]], [[s0**2]]).denoiser(p))
    log_steps, log_err = [], []
    for steps in (16, 32, 64):
        ts = schedules.make("logsnr", steps, p)
        a, s = float(p.alpha(ts[-1])), float(p.sigma(ts[-1]))
        m_true, v_true = a * mu, a * a * s0 * s0 + s * s
        g = torch.Generator().manual_seed(0)
        x = p.prior_sample((n, dim), g, dtype=torch.float64)
        y = SAMPLERS[name](d, p, x, ts, generator=g, **FAST.get(name, {}))
        err = abs(float(y.mean()) - m_true) / math.sqrt(v_true) + abs(float(y.var()) / v_true - 1)
        log_steps.append(math.log(steps))
        log_err.append(math.log(err))
    xs, ys = torch.tensor(log_steps), torch.tensor(log_err)
    slope = float(((xs - xs.mean()) * (ys - ys.mean())).sum() / ((xs - xs.mean()) ** 2).sum())
    assert -slope >= info(name).order - 0.5, f"{name}: weak order {-slope:.2f}, declared {info(name).order}"


def test_ode_reaches_its_tolerance():
    # the adaptive solver's own accuracy: a tight solve agrees with a tighter one
    mix, p, x, tight = order_reference(0)
    ts = schedules.make("uniform", 1, p)
    loose = SAMPLERS["ode"](mix.denoiser(p), p, x, ts, rtol=1e-6, atol=1e-6)
    assert (loose - tight).abs().max() < 1e-4


# -- (c) reproducibility ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_samples(name):
    mix, p = mixture8(), proc_for(name)
    opts = {**FAST.get(name, {})}
    run = lambda seed: sample(mix.denoiser(p), p, (8, 2, 4), sampler=name, steps=4, seed=seed, **opts)
    a, b = run(3), run(3)
    assert torch.equal(a, b)
    if info(name).stochastic:
        assert not torch.equal(a, run(4))


# -- (d) every process, (e) nfe ---------------------------------------------------------------------


@pytest.mark.parametrize("to_zero", [False, True], ids=["t_min", "to_zero"])
@pytest.mark.parametrize("name", NAMES)
def test_runs_on_every_process(name, process, to_zero):
    # a sampler runs on every process its info declares (each docstring says how alpha = 0 at t_max is
    # handled) and refuses any other with a ValueError naming it
    if to_zero and float(process.sigma(torch.tensor(0.0, dtype=torch.float64))) > 0:
        pytest.skip("no time with sigma = 0 (VE)")
    mix = A.ring2d()
    run = functools.partial(sample, mix.denoiser(process), process, (16, 2), sampler=name, steps=5, seed=0,
                            dtype=torch.float64, schedule_options={"denoise_to_zero": to_zero}, **FAST.get(name, {}))
    if not info(name).runs_on(process):
        with pytest.raises(ValueError, match=process.name):
            run()
        return
    x = run()
    assert x.shape == (16, 2) and torch.isfinite(x).all()


@pytest.mark.parametrize("name", NAMES)
def test_finite_in_float32_on_every_process(name, process):
    if not info(name).runs_on(process):
        pytest.skip(f"{name} does not run on {process.name}")
    # float32 at sigma(t_min) ~ 1e-5 is where x - alpha x0_hat rounds to 0 (pc's corrector once gave NaN there)
    if float(process.sigma(torch.tensor(0.0, dtype=torch.float64))) > 0:
        opts = {}
    else:
        opts = {"schedule_options": {"denoise_to_zero": True}}
    x = sample(A.ring2d().denoiser(process), process, (64, 2), sampler=name, steps=12, seed=0, dtype=torch.float32,
               **opts, **FAST.get(name, {}))
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    # and the values: float32 follows the float64 run from the same start (a deterministic sampler to rounding;
    # a stochastic one, whose float32 noise differs, to the spread of the samples)
    x0 = process.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = sample(A.ring2d().denoiser(process), process, x0, sampler=name, steps=12, seed=0, dtype=torch.float64,
                 **opts, **FAST.get(name, {}))
    x = sample(A.ring2d().denoiser(process), process, x0, sampler=name, steps=12, seed=0, dtype=torch.float32,
               **opts, **FAST.get(name, {}))
    if getattr(process, "phase_space", False):
        return  # CLD draws the starting velocity inside the sampler (float32 and float64 draw different ones);
        # its samplers' values are checked against the phase-space oracle in tests/test_cld.py
    if info(name).stochastic:
        assert abs(float(x.double().std()) - float(ref.std())) < 0.25 * float(ref.std())
    else:
        assert float((x.double() - ref).abs().max()) < 1e-2 * float(ref.abs().max())


@pytest.mark.parametrize("name", NAMES)
def test_nfe_matches_declaration(name):
    # away from the special steps (uniform grid on linear VP: alpha(t_max) > 0, sigma(t_min) > 0)
    mix, p = A.ring2d(), proc_for(name)
    d, stats, steps = mix.denoiser(p), {}, 6
    opts = {"stats": stats} if "stats" in options_of(name) else {}
    x = p.prior_sample((4, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    SAMPLERS[name](d, p, x, schedules.make("uniform", steps, p), **opts)
    nfe = info(name).nfe_per_step
    if math.isfinite(nfe):
        assert d.nfe == round(nfe * steps) + info(name).nfe_extra
    else:
        assert stats["nfe"] == d.nfe > 0


def test_denoise_to_zero_step_is_one_evaluation():
    # the last step onto sigma = 0 returns x0_hat = D(x, ts[-2]): one evaluation (see _common)
    mix, p = A.ring2d(), P.make("edm")
    ts = schedules.make("karras", 6, p, denoise_to_zero=True)
    x = p.prior_sample((4, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = []
    d = mix.denoiser(p)
    y = SAMPLERS["heun"](d, p, x, ts, callback=seen.append)
    assert d.nfe == 2 * 5 + 1
    assert torch.equal(y, seen[-1]["x0_hat"]) and seen[-1]["t"] == 0.0


# -- identities ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("proc", [("vp", {}), ("vp", {"schedule": "cosine"}), ("edm", {}), ("flow", {}), ("vp-discrete", {})])
def test_ddim_eta0_equals_euler(proc):
    # Euler in x~ = x / alpha, sigma~ = sigma / alpha is DDIM(eta = 0), step for step
    mix, p = mixture8(), P.make(proc[0], **proc[1])
    x = p.prior_sample((16, 2, 4), torch.Generator().manual_seed(2), dtype=torch.float64)
    ts = schedules.make("karras", 12, p)
    a = SAMPLERS["ddim"](mix.denoiser(p), p, x, ts, eta=0.0)
    b = SAMPLERS["euler"](mix.denoiser(p), p, x, ts)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("proc", [("vp-discrete", {}), ("flow", {}), ("sub-vp", {})])
def test_ddim_eta1_equals_ancestral_ddpm(proc):
    # DDIM with eta = 1 is DDPM with the posterior variance: same noise -> the same samples
    mix, p = mixture8(), P.make(proc[0], **proc[1])
    x = p.prior_sample((16, 2, 4), torch.Generator().manual_seed(2), dtype=torch.float64)
    ts = schedules.make("uniform", 20, p, denoise_to_zero=True)
    a = SAMPLERS["ddim"](mix.denoiser(p), p, x, ts, eta=1.0, generator=torch.Generator().manual_seed(7))
    b = SAMPLERS["ddpm"](mix.denoiser(p), p, x, ts, variance="beta_tilde", generator=torch.Generator().manual_seed(7))
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


def test_ddpm_matches_ho_algorithm2_on_the_full_grid():
    # on vp-discrete's own grid t = i/T the step is Algorithm 2: x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t z
    T = 50
    mix, p = A.ring2d(), P.make("vp-discrete", steps=T)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = torch.arange(T, -1, -1, dtype=torch.float64) / T
    for variance in ("beta", "beta_tilde"):
        ours = SAMPLERS["ddpm"](mix.denoiser(p), p, x, ts, variance=variance, generator=torch.Generator().manual_seed(1))
        g, y = torch.Generator().manual_seed(1), x
        abar = torch.cat([torch.ones(1, dtype=torch.float64), p.alpha_bar])
        for i in range(T, 0, -1):
            beta = p.betas[i - 1]
            eps = (y - abar[i].sqrt() * mix.x0_mean(y, i / T, p)) / (1 - abar[i]).sqrt()
            y = (y - beta / (1 - abar[i]).sqrt() * eps) / (1 - beta).sqrt()
            var = beta if variance == "beta" else (1 - abar[i - 1]) / (1 - abar[i]) * beta
            if i > 1:
                y = y + var.sqrt() * torch.randn(y.shape, generator=g, dtype=y.dtype)
        assert torch.allclose(ours, y, rtol=1e-10, atol=1e-10)


def test_churn_reaches_truth_and_is_reproducible():
    mix, p = A.ring2d(), P.make("edm")
    run = lambda: sample(mix.denoiser(p), p, (600, 2), sampler="heun", steps=40, seed=5, dtype=torch.float64,
                         schedule_options={"denoise_to_zero": True}, s_churn=30.0, s_tmin=0.05, s_tmax=50.0)
    x = run()
    assert torch.equal(x, run())
    truth = [mix.sample(600, torch.Generator().manual_seed(100 + k)) for k in range(4)]
    floor = sum(sw(truth[k], truth[k + 1]) for k in range(3)) / 3
    assert sw(x, truth[0]) <= 2 * floor


def test_annealed_langevin_ncsn_levels_and_denoise():
    # NCSN's L geometric levels (Song & Ermon 2019): the uniform grid on ve is exactly process.level_times
    mix, p = A.ring2d(), P.make("ve", sigma_min=0.01, sigma_max=10.0, levels=10)
    ts = schedules.make("uniform", 9, p)
    assert torch.allclose(ts, p.level_times)
    d = mix.denoiser(p)
    x = p.prior_sample((600, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    y = SAMPLERS["annealed_langevin"](d, p, x, ts, n_steps_each=30, denoise=True, generator=torch.Generator().manual_seed(1))
    assert d.nfe == 9 * 30 + 1
    truth = [mix.sample(600, torch.Generator().manual_seed(100 + k)) for k in range(4)]
    floor = sum(sw(truth[k], truth[k + 1]) for k in range(3)) / 3
    assert sw(y, truth[0]) <= 2 * floor


# -- framework contracts -------------------------------------------------------------------------------


def test_callback_hook_and_cond_pass_through():
    mix, p = A.ring2d(), P.make("vp")
    seen_cond, seen_hook, seen_cb = [], [], []
    exact = mix.denoiser(p)

    def denoiser(x, t, **cond):
        seen_cond.append(cond)
        return exact(x, t)

    def hook(x, t, x0_hat):
        seen_hook.append(float(t[0]))
        return x

    labels = torch.zeros(4, dtype=torch.long)
    sample(denoiser, p, (4, 2), sampler="heun", steps=3, callback=seen_cb.append, hook=hook, cond={"y": labels},
           schedule="uniform")
    ts = schedules.make("uniform", 3, p).tolist()
    assert all(c.keys() == {"y"} and c["y"] is labels for c in seen_cond) and len(seen_cond) == 6
    assert seen_hook == pytest.approx(ts[1:])
    assert [c["i"] for c in seen_cb] == [0, 1, 2] and [c["t"] for c in seen_cb] == ts[1:]
    assert {"i", "t", "x", "x0_hat"} <= seen_cb[0].keys()


def test_hook_result_is_used():
    # a hook that pins x to zero after every step leaves zero (what inpainting relies on)
    mix = A.ring2d()
    for name in NAMES:
        p = proc_for(name)
        x = sample(mix.denoiser(p), p, (4, 2), sampler=name, steps=3, hook=lambda x, t, x0: torch.zeros_like(x),
                   **FAST.get(name, {}))
        assert torch.equal(x, torch.zeros_like(x)), name


def test_start_tensor_and_explicit_grid():
    mix, p = A.ring2d(), P.make("vp")
    x0 = p.prior_sample((8, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = schedules.make("logsnr", 7, p)
    a = sample(mix.denoiser(p), p, x0, sampler="ddim", schedule=ts, dtype=torch.float64)
    b = SAMPLERS["ddim"](mix.denoiser(p), p, x0, ts)
    assert torch.equal(a, b)
    assert scorediff.sample is sample


def test_float32_runs():
    mix, p = A.ring2d(), P.make("edm")
    x = sample(mix.denoiser(p), p, (8, 2), sampler="heun", steps=8)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()


def test_errors():
    mix, p = A.ring2d(), P.make("vp")
    d = mix.denoiser(p)
    with pytest.raises(ValueError, match="sampler 'dpm\\+\\+2x' unknown; one of: .*ddim"):
        sample(d, p, (2, 2), sampler="dpm++2x")
    with pytest.raises(ValueError, match="sampler 'ddim': unknown option\\(s\\) etaa; allowed: eta"):
        sample(d, p, (2, 2), sampler="ddim", etaa=1.0)
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="strictly decreasing"):
        SAMPLERS["ddim"](d, p, x, torch.tensor([0.5, 0.7]))
    with pytest.raises(ValueError, match="time t must lie in"):
        SAMPLERS["ddim"](d, p, x, torch.tensor([2.0, 0.5]))
    with pytest.raises(ValueError, match="predictor 'leapfrog' unknown"):
        sample(d, p, (2, 2), sampler="pc", predictor="leapfrog")
    with pytest.raises(ValueError, match="variance 'big' unknown"):
        sample(d, p, (2, 2), sampler="ddpm", variance="big")
    with pytest.raises(ValueError, match="method 'rk99' unknown"):
        sample(d, p, (2, 2), sampler="ode", method="rk99")


def test_sampler_table_and_info():
    rows = sampler_table()
    assert [r["name"] for r in rows] == NAMES
    for r in rows:
        assert r["order"] >= 1 and r["default_schedule"] in schedules.SCHEDULES
        assert r["nfe_per_step"] > 0 or math.isnan(r["nfe_per_step"])


def test_grid_precomputes_coefficients():
    p = P.make("flow")
    x = torch.zeros(3, 2)
    g = Grid(p, schedules.make("uniform", 4, p, denoise_to_zero=True), x)
    assert g.alpha[0] == 0 and g.sigma_tilde[0] == math.inf and g.infinite(0) and not g.infinite(1)
    assert g.to_zero(3) and not g.to_zero(2) and g.lam[-1] == math.inf
    assert g.tb[1].shape == (3,) and g.tb[1].dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_no_tensor_is_written_after_it_is_handed_out(name):
    """The samplers update their state in place for speed (see _common's "Per-step cost"); that must never
    reach the caller: the start tensor is left as it was, and every x the callback receives is a distinct
    tensor that keeps its value for the rest of the run."""
    mix, p = A.ring2d(), proc_for(name)
    x = p.prior_sample((8, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    start = x.clone()
    seen = []
    SAMPLERS[name](mix.denoiser(p), p, x, schedules.make(info(name).default_schedule, 6, p),
                   generator=torch.Generator().manual_seed(1), callback=lambda d: seen.append((d["x"], d["x"].clone())),
                   **FAST.get(name, {}))
    assert torch.equal(x, start)
    assert seen and len({id(a) for a, _ in seen}) == len(seen)
    assert all(torch.equal(a, b) for a, b in seen)
