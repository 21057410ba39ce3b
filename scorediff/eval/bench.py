"""``scorediff bench samplers [RUN]``: every registered sampler against closed-form truth, at matched NFE.

Without RUN, each sampler in ``scorediff.samplers.SAMPLERS`` (whatever is registered) samples the analytic
Gaussian mixtures ``ring2d`` (2-D) and ``mixture64`` (64-D) through their exact denoiser E[x0 | x_t]
(float64), on each time grid, with its step count chosen so that the number of model calls (NFE, counted
by the denoiser) comes as close as possible to each target NFE. Three errors per run:

* ``sw``   -- sliced Wasserstein-2 to an independent exact sample of p0 of the same size (fixed random
  projections); the ``floor`` line is the same distance between two exact samples (sampling noise).
* ``gap``  -- the log-density gap E_p0[log p0] - E[log p0(samples)] in nats (exact ``log_prob``).
  Positive: samples sit where p0 is too thin (e.g. left-over noise); negative: samples are
  over-concentrated (e.g. fine per-coordinate variance wiped out). In 64-D sliced W2 barely sees the
  latter; the gap does. Tables rank by |gap|. Estimated with a control variate: E_p0[log p0] is taken as
  the mean of log p0 over the exact PF-ODE images of the *same* start states (an exact sample of p0,
  solved at rtol 1e-7), so the sampling noise of n draws (``gap_se`` of the plain estimate, about 0.1-0.3
  nats in 64-D) cancels for every sampler that follows the ODE closely. The plain estimate against a
  100k-sample Monte-Carlo mean is kept as ``gap_plain`` in ``Row.extra``.
* ``rms``  -- deterministic samplers only: per-coordinate RMS distance to the exact probability-flow ODE
  solution from the same start state (the first ``ref_points`` starts), integrated by torchdiffeq's
  dopri5 at rtol = atol = 1e-10 in EDM coordinates (x~ = x / alpha against log sigma~, Karras et al.
  2022, eq. 4), independently of every sampler. On a mixture it is dominated by the few starts whose
  trajectory ends in another mode than the exact one, so the per-start squared errors are kept
  (``Row.extra["rms_sq"]``) for paired comparisons.

Grids end with one denoise-to-zero call (as the peers' defaults do); ``NAME@t_min`` (e.g. ``default@t_min``)
ends at t_min with the sampler's own last step instead. ``optimized`` is a grid fitted to the problem's exact
denoiser on a pilot batch of prior draws with its own seed (``scorediff.samplers.fit_schedule``, GITS; see
``optimized_grid``); its pilot's model calls are a one-off per problem, listed by ``pilots()``, not counted in a
run's NFE. ``BENCH_OPTIONS`` holds the few sampler options the
benchmark sets, with the reason (annealed Langevin: one Langevin step per level, so that steps = NFE).

Every sampler starts from the same prior draw x_T at t_max. With RUN (a training run folder, see
``scorediff.training.load_run``), the same samplers draw from the trained model and the table reports
the sliced W2 to data the run was not trained on (its test split when it trained on split=train,
else a fresh draw of its toy dataset, else its data).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

MIXTURES = ("ring2d", "mixture64")
TARGET_NFES = (5, 10, 20, 50)


# ---------------------------------------------------------------------------------------------------
# The problem: a mixture, a process, shared start states, an exact sample and the exact ODE solutions
# ---------------------------------------------------------------------------------------------------


@dataclass
class Problem:
    """One benchmark problem; everything every sampler is measured against."""

    name: str
    mixture: Any  # scorediff.analytic.GaussianMixture
    process: Any  # scorediff.processes.Process
    x_T: Tensor  # (n, *event) start states at t_max, float64, shared by every sampler
    exact: Tensor  # (n, *event) an independent exact sample of p0
    ref: Tensor | None  # exact PF-ODE solutions (at t = 0) from x_T[:ref_points]
    logp_mean: float  # E_p0[log p0], Monte Carlo over a large exact sample
    floor_sw: float  # sliced W2 between two independent exact samples of size n
    floor_gap: float  # plain gap of an independent exact sample of size n (sampling noise of the plain gap)
    gap_se: float  # standard error of a plain gap estimated from n samples
    logp_ode: Tensor | None = None  # (n,) log p0 at the exact PF-ODE images of x_T (the control variate)
    projections: int = 256
    proj_seed: int = 12345
    ref_seconds: float = 0.0
    ref_nfe: int = 0

    @property
    def n(self) -> int:
        return self.x_T.shape[0]

    def denoiser(self):
        """A fresh exact denoiser (its ``nfe`` counter starts at 0)."""
        return self.mixture.denoiser(self.process)

    def sw(self, x: Tensor) -> float:
        from ..analytic import sliced_wasserstein

        g = torch.Generator().manual_seed(self.proj_seed)  # the same projections for every sampler
        return float(sliced_wasserstein(x, self.exact, self.projections, generator=g))


def make_mixture(name: str):
    from .. import analytic

    if name not in MIXTURES:
        from ..utils import unknown

        raise unknown("mixture", name, MIXTURES)
    return getattr(analytic, name)()


def pf_ode_reference(mixture, process, x_start: Tensor, t_start: float, rtol: float = 1e-10,
                     t_end: float | None = None) -> tuple[Tensor, int]:
    """The exact probability-flow ODE solution at ``t_end`` from x_start at t_start; returns (x, model calls).
    Default: the noise-free end, sigma~ = 0 (the data), also for a process whose own times never reach it (VE).

    Solved in EDM coordinates: y = x / alpha, u = log sigma~, dy/du = y - D(y, sigma~) (Karras et al. 2022,
    eq. 4 with dt = sigma~ du), where D is the mixture's exact denoiser of y = x0 + sigma~ eps. This is
    independent of the process's own time variable (smooth where the process's is not: ``vp-discrete``
    interpolates its alphas piecewise) and of every sampler in the package. To t = 0 it stops at
    sigma~ = 1e-7 and returns D there (which differs from the sigma~ = 0 limit by O(1e-14)); to a t_end with
    sigma(t_end) > 0 (any t_end of VE: sigma(0) = sigma_min) it returns alpha(t_end) y at sigma~(t_end).
    Needs alpha(t_start) > 0 (not the pure-noise end of flow or cosine VP).
    """
    from torchdiffeq import odeint

    from .. import processes

    t0 = torch.tensor(float(t_start), dtype=torch.float64)
    if not float(process.alpha(t0)) > 0:
        raise ValueError(f"pf_ode_reference: alpha(t_start) = 0 for process '{process.name}' at t = {t_start:g}; "
                         "start below the pure-noise end")
    s_start = float(process.sigma(t0) / process.alpha(t0))
    t1 = torch.tensor(0.0 if t_end is None else float(t_end), dtype=torch.float64)
    s_end = 0.0 if t_end is None else float(process.sigma(t1) / process.alpha(t1))
    to_data = not s_end > 0
    s_end = 1e-7 if to_data else s_end
    ve = processes.make("edm", sigma_min=s_end / 10, sigma_max=max(s_start * 10, 100.0))
    calls = [0]

    def f(u: Tensor, y: Tensor) -> Tensor:
        calls[0] += 1
        return y - mixture.x0_mean(y, torch.exp(u), ve)

    y0 = x_start.to(torch.float64) / process.alpha(t0)
    u = torch.tensor([math.log(s_start), math.log(s_end)], dtype=torch.float64)
    y = odeint(f, y0, u, rtol=rtol, atol=rtol, method="dopri5")[-1]
    if not to_data:
        return y * process.alpha(t1), calls[0]
    return mixture.x0_mean(y, torch.tensor(s_end, dtype=torch.float64), ve), calls[0] + 1


def make_problem(
    name: str,
    process,
    n: int,
    *,
    seed: int = 0,
    ref_points: int = 256,
    rtol: float = 1e-10,
    gap_rtol: float | None = 1e-7,
    mc: int = 100_000,
) -> Problem:
    """Build a problem: start states, an exact sample, floors, E_p0[log p0] and the exact ODE solutions.

    ``ref_points`` starts get the rms reference at ``rtol``; all n starts get an ODE solution at ``gap_rtol``
    for the control-variate gap (None: the plain gap).
    """
    mixture = make_mixture(name) if isinstance(name, str) else name
    label = name if isinstance(name, str) else "mixture"
    g = torch.Generator().manual_seed(seed)
    x_T = process.prior_sample((n, *mixture.event_shape), g, dtype=torch.float64)
    exact = mixture.sample(n, torch.Generator().manual_seed(seed + 1))
    other = mixture.sample(n, torch.Generator().manual_seed(seed + 2))
    big = mixture.sample(mc, torch.Generator().manual_seed(seed + 3))
    lp = mixture.log_prob(big)
    prob = Problem(label, mixture, process, x_T, exact, None, float(lp.mean()), 0.0, 0.0,
                   float(lp.std() / math.sqrt(n)))
    prob.floor_sw = prob.sw(other)
    prob.floor_gap = prob.logp_mean - float(mixture.log_prob(other).mean())
    t0 = time.perf_counter()
    if ref_points > 0:
        prob.ref, prob.ref_nfe = pf_ode_reference(mixture, process, x_T[:ref_points], process.t_max, rtol)
    if gap_rtol is not None:
        x0, _ = pf_ode_reference(mixture, process, x_T, process.t_max, gap_rtol)
        prob.logp_ode = mixture.log_prob(x0)
    prob.ref_seconds = time.perf_counter() - t0
    return prob


def evaluate(problem: Problem, x: Tensor, deterministic: bool) -> dict[str, float | None]:
    """sw, gap and (for deterministic samplers) rms of samples x drawn from problem.x_T; nan if x is not finite."""
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        nan = float("nan")
        return {"sw": nan, "gap": nan, "rms": nan if deterministic else None}
    logp = problem.mixture.log_prob(x)
    plain = problem.logp_mean - float(logp.mean())
    out: dict[str, float | None] = {"sw": problem.sw(x), "gap": plain, "rms": None, "gap_plain": plain}
    if problem.logp_ode is not None:
        diff = problem.logp_ode - logp
        out["gap"] = float(diff.mean())
        out["gap_se"] = float(diff.std() / math.sqrt(len(diff)))
    if deterministic and problem.ref is not None:
        m = problem.ref.shape[0]
        # per-start mean squared error: kept so that two samplers can be compared start by start (paired), since
        # on a mixture a few trajectories that end in another mode than the exact ODE's dominate the rms
        sq = ((x[:m] - problem.ref) ** 2).reshape(m, -1).mean(1)
        out["rms"] = float(sq.mean().sqrt())
        out["rms_sq"] = sq
    return out


# ---------------------------------------------------------------------------------------------------
# NFE matching and one run
# ---------------------------------------------------------------------------------------------------


def match_steps(nfe_of: Callable[[int], int], target: int, max_steps: int | None = None) -> tuple[int, int]:
    """The step count whose NFE is closest to ``target`` (ties: the smaller NFE); returns (steps, nfe).

    ``nfe_of(steps)`` must not decrease with steps. Binary search for the first step count reaching the
    target, then compare with the one before it.
    """
    hi = max_steps if max_steps is not None else max(target, 1) + 1
    lo = 1
    cache: dict[int, int] = {}

    def f(s: int) -> int:
        if s not in cache:
            cache[s] = int(nfe_of(s))
        return cache[s]

    if f(hi) < target:
        return hi, f(hi)
    while lo < hi:  # first s with f(s) >= target
        mid = (lo + hi) // 2
        if f(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    best = lo
    if lo > 1 and target - f(lo - 1) <= f(lo) - target:
        best = lo - 1
    return best, f(best)


@dataclass
class Config:
    """One way of sampling: a library, a sampler and its grid; ``run(x_T, steps, seed, denoiser)`` draws."""

    library: str  # "scorediff", "diffusers", "k-diffusion"
    sampler: str
    grid: str
    stochastic: bool
    run: Callable[[Tensor, int, int, Any], Tensor]  # (x_T, steps, seed, denoiser) -> x0
    adaptive: bool = False  # NFE not set by steps (reported at its own NFE)
    max_steps: int | None = None

    @property
    def label(self) -> str:
        return f"{self.library}:{self.sampler}[{self.grid}]"


@dataclass
class Row:
    """One measured run."""

    problem: str
    process: str
    library: str
    sampler: str
    grid: str
    stochastic: bool
    target_nfe: int
    steps: int = 0
    nfe: int = 0
    sw: float | None = None
    gap: float | None = None
    rms: float | None = None
    seconds: float = 0.0
    error: str | None = None
    extra: dict = field(default_factory=dict)


ADAPTIVE_STEPS = 10  # the initial grid an adaptive solver is handed (its NFE is its own)
_STEPS_CACHE: dict[tuple[str, str, int], int] = {}  # (config label, process, target NFE) -> steps
NFE_SLACK = 0.5  # a run whose NFE misses the target by more than this fraction is not a fair comparison


class _CountingIdentity:
    """x0_hat = x at no cost, counting calls (for NFE probes)."""

    def __init__(self):
        self.nfe = 0

    def __call__(self, x: Tensor, t, **cond) -> Tensor:
        self.nfe += 1
        return x


def measure(problem: Problem, config: Config, target: int, seed: int = 0, probe: int = 1) -> Row:
    """Run ``config`` at the step count matching ``target`` NFE (probed on ``probe`` start states).

    An adaptive solver runs once with its default tolerances; its row carries its own NFE.
    """
    row = Row(problem.name, problem.process.name, config.library, config.sampler, config.grid,
              config.stochastic, target)
    try:
        def nfe_of(steps: int) -> int:
            # a fixed-step sampler's NFE does not depend on the model's values: probe with a free one
            d = _CountingIdentity()
            config.run(problem.x_T[:probe], steps, seed, d)
            return d.nfe

        key = (config.label, problem.process.name, target)
        if config.adaptive:
            steps = ADAPTIVE_STEPS
        elif key in _STEPS_CACHE:  # the NFE of a fixed-step sampler does not depend on the data
            steps = _STEPS_CACHE[key]
        else:
            steps, _ = match_steps(nfe_of, target, config.max_steps)
            _STEPS_CACHE[key] = steps
        d = problem.denoiser()
        t0 = time.perf_counter()
        x = config.run(problem.x_T, steps, seed, d)
        row.seconds = time.perf_counter() - t0
        row.steps, row.nfe = steps, d.nfe
        m = evaluate(problem, x, not config.stochastic)
        row.sw, row.gap, row.rms = m["sw"], m["gap"], m["rms"]
        row.extra = {k: v for k, v in m.items() if k in ("gap_plain", "gap_se", "rms_sq")}
    except Exception as e:  # a sampler that cannot run this grid / NFE is a table entry, not a crash
        row.error = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    return row


def accuracy(problem: Problem, configs: Iterable[Config], targets: Iterable[int], seed: int = 0,
             log: Callable[[str], None] | None = None) -> list[Row]:
    """Measure every config at every target NFE (an adaptive one once, with ``target_nfe`` = 0)."""
    rows = []
    for config in configs:
        for target in [0] if config.adaptive else targets:
            row = measure(problem, config, target, seed)
            rows.append(row)
            if log is not None:
                log(f"{problem.name}/{problem.process.name} {config.label} NFE {row.nfe} "
                    f"({row.seconds:.2f} s){' ' + row.error if row.error else ''}")
    return rows


def matched(row: Row) -> bool:
    """Whether a row ran at (close to) its target NFE, so that it may be compared with others there."""
    return row.target_nfe > 0 and abs(row.nfe - row.target_nfe) <= NFE_SLACK * row.target_nfe


# ---------------------------------------------------------------------------------------------------
# Our samplers: whatever the registry holds, on each applicable grid
# ---------------------------------------------------------------------------------------------------


def default_grids(process) -> tuple[str, ...]:
    """The time grids tried for a process: every continuous one, plus diffusers' trailing for DDPM."""
    grids = ["uniform", "logsnr", "karras", "quadratic"]
    if process.name == "vp-discrete":
        grids.append("trailing")
    return tuple(grids)


# Sampler options the benchmark sets, with the reason. Annealed Langevin's default T = 100 Langevin steps per
# noise level costs 100 model calls per step, more than any target NFE (5-50): with it, the closest step count
# is the single denoise-to-zero call (NFE 1). One Langevin step per level (T = 1) makes its step count its NFE,
# like the other samplers' (Song & Ermon 2019 use T = 100 at L = 10 levels, 1000 NFE: it is not a few-step method).
BENCH_OPTIONS: dict[str, dict[str, Any]] = {"annealed_langevin": {"n_steps_each": 1}}


T_MIN_SUFFIX = "@t_min"

# The "optimized" grid (``scorediff.samplers.fit_schedule``, GITS): fitted per problem (mixture and process) on a
# pilot batch of PILOT_N prior draws with its own seed, never the evaluation starts (seed and seed + 100 in the
# benchmark; the exact samples use seed + 1 .. seed + 3). One pilot per problem and ending serves every step count.
OPTIMIZED = "optimized"
PILOT_SEED = 9973
PILOT_N = 256
_PILOTS: dict[tuple, Any] = {}  # (id(mixture), process, denoise_to_zero) -> (mixture, ScheduleFit)


def pilots() -> list[tuple[Any, str, bool, int]]:
    """The pilots run so far: (mixture, process name, denoise_to_zero, the pilot's model calls)."""
    return [(m, key[1], key[2], fit.pilot_nfe) for key, (m, fit) in _PILOTS.items()]


def optimized_grid(denoiser, process, steps: int, denoise_to_zero: bool) -> Tensor:
    """The pilot-optimised grid for the exact denoiser's mixture (the pilot runs once per mixture and process).

    The free NFE probe (``_CountingIdentity``) gets a logsnr grid of the same length: a fixed-step sampler's NFE
    depends on the number of nodes only. Any other denoiser (a trained run) is an error: the pilot needs the
    problem's own model, which the benchmark's trained mode does not wire up.
    """
    from .. import schedules
    from ..samplers import fit_schedule

    if isinstance(denoiser, _CountingIdentity):
        return schedules.make("logsnr", steps, process, denoise_to_zero=denoise_to_zero)
    mixture = getattr(denoiser, "mixture", None)
    if mixture is None:
        raise ValueError("grid 'optimized' needs the exact oracle (scorediff.analytic's denoiser)")
    key = (id(mixture), process.name, denoise_to_zero)
    if key not in _PILOTS or _PILOTS[key][0] is not mixture:
        g = torch.Generator().manual_seed(PILOT_SEED)
        x = process.prior_sample((PILOT_N, *mixture.event_shape), g, dtype=torch.float64)
        _PILOTS[key] = (mixture, fit_schedule(mixture.denoiser(process), process, x,
                                              denoise_to_zero=denoise_to_zero))
    return _PILOTS[key][1].grid(steps)


def our_configs(process, grids: Iterable[str] | None = None, samplers: Iterable[str] | None = None,
                dtype: torch.dtype = torch.float64) -> list[Config]:
    """One Config per registered sampler and grid ("default" is the sampler's own default schedule).

    Grids end with the denoise-to-zero step where the process has sigma(0) = 0 (as diffusers' and
    k-diffusion's samplers do); the step count is then the number of model-calling steps. A grid name with
    the suffix "@t_min" (e.g. "default@t_min") ends at t_min instead, with the sampler's own last step and no
    denoising call: ``scorediff.sample``'s default for continuous grids, DPM-Solver's default (Lu et al. 2022)
    and diffusers' ``final_sigmas_type="sigma_min"``; its samples keep noise of size sigma(t_min).
    The grid "optimized" is fitted to the problem's exact denoiser on a pilot batch (``optimized_grid``);
    it is offered to deterministic fixed-step samplers only.
    """
    from ..samplers import SAMPLERS, default_schedule, sample

    # every sampler of a Denoiser E[x0 | x_t] (not the consistency sampler, which needs a consistency model)
    names = [n for n, f in SAMPLERS.items() if f.info.denoiser == "any"] if samplers is None else list(samplers)
    grids = list(default_grids(process) if grids is None else grids)
    sigma0 = float(process._sigma(torch.tensor(0.0, dtype=torch.float64)))
    out = []
    for name in names:
        if name not in SAMPLERS:
            from ..utils import unknown

            raise unknown("sampler", name, SAMPLERS)
        info = SAMPLERS[name].info
        if not info.runs_on(process):
            continue  # e.g. cld's samplers on a data-space process
        adaptive = not math.isfinite(info.nfe_per_step)
        seen = set()
        for grid in grids:
            base, at_t_min = (grid[: -len(T_MIN_SUFFIX)], True) if grid.endswith(T_MIN_SUFFIX) else (grid, False)
            g = default_schedule(name, process) if base == "default" else base
            if (g, at_t_min) in seen or at_t_min and sigma0 > 0:  # VE already ends at t_min
                continue
            if g == OPTIMIZED and (info.stochastic or adaptive):
                continue  # the pilot's costs are those of ODE steps; an adaptive solver picks its own steps
            seen.add((g, at_t_min))
            if at_t_min:
                opts = {"denoise_to_zero": False}
            else:
                opts = {} if g in ("leading", "trailing", "linspace") else {"denoise_to_zero": sigma0 == 0.0}

            extra = BENCH_OPTIONS.get(name, {})

            def run(x_T, steps, seed, denoiser, name=name, g=g, opts=opts, extra=extra):
                if g == OPTIMIZED:
                    ts = optimized_grid(denoiser, process, steps, opts["denoise_to_zero"])
                    return sample(denoiser, process, x_T, sampler=name, steps=steps, seed=seed, schedule=ts,
                                  dtype=dtype, **extra)
                return sample(denoiser, process, x_T, sampler=name, steps=steps, seed=seed, schedule=g,
                              schedule_options=opts, dtype=dtype, **extra)

            label = g + ("*" if g == default_schedule(name, process) else "") + (T_MIN_SUFFIX if at_t_min else "")
            shown = name + "".join(f" {k}={v}" for k, v in extra.items())
            out.append(Config("scorediff", shown, label, bool(info.stochastic), run, adaptive=adaptive))
            if adaptive:
                break  # the grid only seeds an adaptive solver
    return out


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------


def _fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "-"
    if not math.isfinite(v):
        return "nan"
    if metric == "gap":
        return f"{v:+.3g}"
    return f"{v:.3g}"


def format_table(rows: list[Row], metric: str, targets: Iterable[int] | None = None) -> str:
    """A Markdown table: one line per (library, sampler, grid), one column per target NFE.

    A cell is the metric, with the actual NFE in parentheses where it differs from the target (a run more
    than 50% off its target is not ranked); a failed run reads "fail". Adaptive solvers get one line each
    below the table, at their own NFE.
    """
    targets = sorted({r.target_nfe for r in rows if r.target_nfe > 0}) if targets is None else list(targets)
    keys: list[tuple[str, str, str]] = []
    cells: dict[tuple[str, str, str], dict[int, str]] = {}
    adaptive = []
    for r in rows:
        if r.target_nfe == 0:
            adaptive.append(r)
            continue
        key = (r.library, r.sampler, r.grid)
        if key not in cells:
            keys.append(key)
            cells[key] = {}
        if r.error:
            cells[key][r.target_nfe] = "fail"
        else:
            v = getattr(r, metric)
            s = _fmt(v, metric)
            if r.nfe != r.target_nfe and v is not None:
                s += f" ({r.nfe})"
            cells[key][r.target_nfe] = s
    head = "| library | sampler | grid | " + " | ".join(f"NFE {t}" for t in targets) + " |"
    sep = "|---|---|---|" + "---:|" * len(targets)
    lines = [head, sep]
    for key in keys:
        lines.append("| " + " | ".join(key) + " | " + " | ".join(cells[key].get(t, "") for t in targets) + " |")
    for r in adaptive:
        v = "fail" if r.error else _fmt(getattr(r, metric), metric)
        lines.append(f"\nadaptive {r.library}:{r.sampler} at its own NFE {r.nfe}: {metric} {v}")
    return "\n".join(lines)


def failures(rows: list[Row]) -> list[str]:
    """One line per distinct failure: which sampler/grid and why."""
    seen, out = set(), []
    for r in rows:
        if r.error and (r.library, r.sampler, r.grid, r.error) not in seen:
            seen.add((r.library, r.sampler, r.grid, r.error))
            out.append(f"{r.library}:{r.sampler}[{r.grid}] ({r.problem}, NFE {r.target_nfe}): {r.error}")
    return out


def best(rows: list[Row], metric: str, library: str | None = None, exclude: str | None = None) -> dict[int, Row]:
    """Per target NFE, the NFE-matched row with the smallest |metric| (restricted to or excluding a library)."""
    out: dict[int, Row] = {}
    for r in rows:
        v = getattr(r, metric)
        if r.error or v is None or not math.isfinite(v) or not matched(r):
            continue
        if library is not None and r.library != library or exclude is not None and r.library == exclude:
            continue
        if r.target_nfe not in out or abs(v) < abs(getattr(out[r.target_nfe], metric)):
            out[r.target_nfe] = r
    return out


def problem_summary(p: Problem) -> str:
    ref = (f"; exact PF-ODE reference (rtol 1e-10) on {p.ref.shape[0]} starts: {p.ref_nfe} evaluations"
           if p.ref is not None else "")
    cv = (f"; gap via the exact ODE images of all {p.n} starts (their own plain gap "
          f"{p.logp_mean - float(p.logp_ode.mean()):+.3g})" if p.logp_ode is not None else "")
    return (f"{p.name} on {p.process.name} (n = {p.n}): sliced-W2 floor {p.floor_sw:.3g}; plain gap of an exact "
            f"sample {p.floor_gap:+.3g} (s.e. {p.gap_se:.2g} nats){cv}{ref}; references {p.ref_seconds:.1f} s")


# ---------------------------------------------------------------------------------------------------
# Whole runs (the ``scorediff bench samplers`` command parses its arguments and calls these)
# ---------------------------------------------------------------------------------------------------


def grid_names(spec: str | Iterable[str], process) -> list[str]:
    """``"all"``: the sampler's own grid and every applicable one; else the names given (a list or comma-separated)."""
    if spec == "all":
        return ["default", *default_grids(process)]
    return [v.strip() for v in spec.split(",") if v.strip()] if isinstance(spec, str) else list(spec)


def oracle_rows(process, mixtures: Iterable[str], grids: str | Iterable[str], samplers: Iterable[str],
                nfes: Iterable[int], n: int = 1024, seed: int = 0, ref_points: int = 256,
                log: Callable[[str], None] = print) -> list[Row]:
    """Every sampler on every grid at every target NFE, on each oracle mixture (its summary goes to ``log``)."""
    rows = []
    for name in mixtures:
        problem = make_problem(name, process, n, seed=seed, ref_points=ref_points)
        log(problem_summary(problem))
        rows += accuracy(problem, our_configs(process, grid_names(grids, process), samplers), nfes, seed)
    return rows


def held_out(run) -> Tensor:
    """Data the run did not train on: the test split if it trained on ``split="train"``, else a fresh draw
    (seed + 1) of a seeded toy dataset, else the data itself."""
    from .. import data

    cfg = run.config["data"]
    options = dict(cfg.get("options") or {})
    try:
        import inspect

        seeded = "seed" in inspect.signature(data.DATASETS[cfg["name"]]).parameters
    except (KeyError, TypeError, ValueError):
        seeded = False
    if options.get("split") == "train":
        options["split"] = "test"
    elif seeded:
        options["seed"] = int(options.get("seed", 0)) + 1
    else:
        print(f"note: dataset {cfg['name']!r} has no seed; comparing with its own (training) data")
    ds = data.make(cfg["name"], **options)
    if hasattr(ds, "x"):
        return ds.x
    return torch.stack([ds[i][0] for i in range(len(ds))])


def trained_rows(run, label: str, samplers: Iterable[str], grids: str | Iterable[str], nfes: Iterable[int],
                 n: int = 1024, seed: int = 0, log: Callable[[str], None] = print) -> list[Row]:
    """The samplers on a trained run (``scorediff.training.load_run``): sliced W2 to held-out data."""
    from ..analytic import sliced_wasserstein

    if run.class_conditional:
        raise ValueError(f"run {label!r} is class-conditional; bench samplers supports unconditional runs")
    data = held_out(run).to(torch.float32)
    n = min(n, data.shape[0])
    perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))
    ref = data[perm[:n]]
    x_T = run.process.prior_sample((n, *run.shape), torch.Generator().manual_seed(seed))
    floor = ""
    if data.shape[0] >= 2 * n:  # two disjoint data samples: what sliced W2 reads for a perfect model
        g = torch.Generator().manual_seed(12345)
        floor = f"; floor (data vs data) {float(sliced_wasserstein(data[perm[n:2 * n]], ref, 256, generator=g)):.3g}"
    log(f"run {label} (step {run.step}, process {run.process.name}); sliced W2 to {n} held-out "
        f"examples{floor}")
    rows = []

    class Counting:
        def __init__(self):
            self.nfe = 0

        def __call__(self, x, t, **cond):
            self.nfe += 1
            return run.denoiser(x, t, **cond)

    for config in our_configs(run.process, grid_names(grids, run.process), samplers, dtype=torch.float32):
        for target in [0] if config.adaptive else nfes:
            row = Row(label, run.process.name, config.library, config.sampler, config.grid,
                      config.stochastic, target)
            try:
                def nfe_of(steps, config=config):
                    d = Counting()
                    config.run(x_T[:1], steps, seed, d)
                    return d.nfe

                steps = ADAPTIVE_STEPS if config.adaptive else match_steps(nfe_of, target)[0]
                d = Counting()
                t0 = time.perf_counter()
                x = config.run(x_T, steps, seed, d)
                row.seconds, row.steps, row.nfe = time.perf_counter() - t0, steps, d.nfe
                g = torch.Generator().manual_seed(12345)
                row.sw = float(sliced_wasserstein(x, ref, 256, generator=g)) if torch.isfinite(x).all() else math.nan
            except Exception as e:
                row.error = f"{type(e).__name__}: {e}"
            rows.append(row)
    return rows
