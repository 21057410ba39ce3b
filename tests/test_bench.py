"""The sampler benchmark's machinery (scorediff.eval.bench): NFE matching, the exact ODE reference, metrics, tables."""

from __future__ import annotations

import math

import pytest
import torch

from scorediff import processes
from scorediff.analytic import GaussianMixture
from scorediff.eval import bench


@pytest.mark.parametrize(
    "nfe_of, target, expected",
    [
        (lambda s: s, 10, (10, 10)),  # one call per step
        (lambda s: 2 * s - 1, 10, (5, 9)),  # Heun: 9 and 11 are equally far; the smaller NFE wins
        (lambda s: 2 * s - 1, 12, (6, 11)),
        (lambda s: 3 * s, 10, (3, 9)),  # 9 is closer to 10 than 12
        (lambda s: 100 * (s - 1) + 1, 5, (1, 1)),  # annealed Langevin: nothing close; take the nearest
        (lambda s: s + 1, 50, (49, 50)),
    ],
)
def test_match_steps_finds_the_closest_nfe(nfe_of, target, expected):
    assert bench.match_steps(nfe_of, target) == expected
    # and it really is the closest over all step counts
    steps, nfe = expected
    assert all(abs(nfe_of(s) - target) >= abs(nfe - target) for s in range(1, 3 * target))


def test_pf_ode_reference_matches_the_gaussian_closed_form():
    # One Gaussian N(mu, diag(v)): along the PF-ODE in EDM coordinates, (x~ - mu) / sqrt(v + sigma~^2) is
    # constant per coordinate, so x0 = mu + sqrt(v / (v + sigma~_T^2)) (x~_T - mu).
    mu = torch.tensor([[0.3, -1.0]], dtype=torch.float64)
    v = torch.tensor([[0.04, 0.5]], dtype=torch.float64)
    mix = GaussianMixture(torch.ones(1), mu, v)
    proc = processes.make("vp-discrete")
    x_T = proc.prior_sample((16, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    x0, calls = bench.pf_ode_reference(mix, proc, x_T, proc.t_max, rtol=1e-8)  # the benchmark uses 1e-10
    t = torch.tensor(proc.t_max, dtype=torch.float64)
    a, s = proc.alpha(t), proc.sigma(t)
    expected = mu + torch.sqrt(v / (v + (s / a) ** 2)) * (x_T / a - mu)
    assert calls > 10
    torch.testing.assert_close(x0, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", ["ve", "vp-discrete"])
def test_pf_ode_reference_stops_at_the_noise_level_of_t_end(name):
    # to an explicit t_end the map is x~(t_end) = mu + sqrt((v + s_end^2) / (v + s_T^2)) (x~_T - mu); VE's t = 0 is
    # sigma_min, not the data (the default, t_end=None, goes to sigma~ = 0 on every process)
    mu = torch.tensor([[0.3, -1.0]], dtype=torch.float64)
    v = torch.tensor([[0.04, 0.5]], dtype=torch.float64)
    mix = GaussianMixture(torch.ones(1), mu, v)
    proc = processes.make(name)
    x_T = proc.prior_sample((16, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    t_T, t_end = (torch.tensor(t, dtype=torch.float64) for t in (proc.t_max, proc.t_min))
    s_T, s_end = (proc.sigma(t) / proc.alpha(t) for t in (t_T, t_end))
    assert s_end > 1e-3  # a noise level the data-end answer would miss
    x, _ = bench.pf_ode_reference(mix, proc, x_T, proc.t_max, rtol=1e-9, t_end=proc.t_min)
    expected = proc.alpha(t_end) * (mu + torch.sqrt((v + s_end**2) / (v + s_T**2)) * (x_T / proc.alpha(t_T) - mu))
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-7)
    x0, _ = bench.pf_ode_reference(mix, proc, x_T, proc.t_max, rtol=1e-9)
    torch.testing.assert_close(x0, mu + torch.sqrt(v / (v + s_T**2)) * (x_T / proc.alpha(t_T) - mu), rtol=0, atol=1e-7)


@pytest.fixture(scope="module")
def ring():
    return bench.make_problem("ring2d", processes.make("vp-discrete"), 512, ref_points=16, rtol=1e-7, mc=20_000)


def test_metrics_see_spread_and_collapse(ring):
    p = ring
    # the exact sample sits at the noise floors
    m = bench.errors(p, p.exact, deterministic=False)
    assert m["sw"] < 3 * p.floor_sw and abs(m["gap"]) < 5 * p.gap_se and m["rms"] is None
    # left-over noise: samples too spread, gap clearly positive
    noisy = p.exact + 0.1 * torch.randn(p.exact.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert bench.errors(p, noisy, False)["gap"] > 20 * p.gap_se
    # every sample collapsed onto its component mean: over-concentrated, gap clearly negative
    _, k = p.mixture.sample(p.n, torch.Generator().manual_seed(1), return_labels=True)
    collapsed = p.mixture.means[k]
    assert bench.errors(p, collapsed, False)["gap"] < -20 * p.gap_se
    # rms is zero at the exact ODE solutions, nan samples give nan metrics
    x = p.exact.clone()
    x[: p.ref.shape[0]] = p.ref
    assert bench.errors(p, x, True)["rms"] == 0.0
    x[0, 0] = float("nan")
    assert all(math.isnan(v) for v in bench.errors(p, x, True).values())


def test_measure_matches_nfe_and_reports_failures(ring):
    from scorediff.samplers import SAMPLERS

    # every registered deterministic single-evaluation sampler would do; take the first one
    name = next(n for n, f in SAMPLERS.items() if not f.info.stochastic and f.info.nfe_per_step == 1)
    config = bench.our_configs(ring.process, ["default"], [name])[0]
    row = bench.measure(ring, config, 10)
    assert row.error is None and row.nfe == 10 and bench.matched(row)
    assert 0 < row.rms < 1 and row.sw > 0 and math.isfinite(row.gap)

    def broken(x_T, steps, seed, denoiser):
        raise ValueError("no such grid")

    bad = bench.measure(ring, bench.SamplerConfig("scorediff", "broken", "x", False, broken), 10)
    assert bad.error == "ValueError: no such grid"
    table = bench.format_table([row, bad], "rms", [10])
    assert f"| scorediff | {name} |" in table and "| fail |" in table
    assert bench.best([row, bad], "rms") == {10: row}
    assert "broken" in bench.failures([row, bad])[0]


def test_cli_bench_samplers_prints_tables(capsys):
    from scorediff.cli import main
    from scorediff.samplers import SAMPLERS

    name = next(iter(SAMPLERS))
    rc = main(["bench", "samplers", "--samplers", name, "--mixtures", "ring2d", "--nfe", "5", "--n", "64",
               "--ref-points", "0", "--grids", "default"])
    out = capsys.readouterr().out
    assert rc == 0 and "ring2d: sw" in out and f"| scorediff | {name} |" in out
    with pytest.raises(SystemExit):
        main(["bench", "nothing"])
    assert main(["bench", "samplers", "--samplers", "dpm++2x"]) == 2


def test_bench_options_make_steps_match_nfe_and_rms_is_kept_per_start(ring):
    # annealed Langevin's default costs 100 calls per level: the benchmark runs it with one Langevin step per
    # level, so that a target NFE is met (before, every target matched the single denoise-to-zero call, NFE 1)
    config = bench.our_configs(ring.process, ["default"], ["annealed_langevin"])[0]
    assert config.sampler == "annealed_langevin n_steps_each=1"
    row = bench.measure(ring, config, 10)
    assert row.error is None and row.nfe == 10 and bench.matched(row) and row.rms is None
    # the rms is the root of the mean of the kept per-start squared errors (for paired comparisons)
    det = bench.measure(ring, bench.our_configs(ring.process, ["uniform"], ["ddim"])[0], 10)
    sq = det.extra["rms_sq"]
    assert sq.shape == (ring.ref.shape[0],) and math.isclose(float(sq.mean().sqrt()), det.rms, rel_tol=1e-12)


def test_t_min_grids_end_without_the_denoising_call(ring):
    # "default@t_min": the sampler's default grid ending at t_min with its own last step (no denoise-to-zero call);
    # same NFE, and its samples differ from the denoise-to-zero run's
    zero, at_min = bench.our_configs(ring.process, ["default", "default@t_min"], ["ddim"])
    assert at_min.grid == zero.grid + "@t_min"
    a, b = bench.measure(ring, zero, 10), bench.measure(ring, at_min, 10)
    assert a.nfe == b.nfe == 10 and a.rms != b.rms
    # the two runs differ in their grids (10 steps to t_min vs 9 steps to t_min and the call there) and last step,
    # but follow the same ODE: path errors of the same size
    assert abs(a.rms - b.rms) < 0.5 * a.rms
    assert bench.our_configs(processes.make("ve"), ["default@t_min"], ["ddim"]) == []  # VE always ends at t_min
