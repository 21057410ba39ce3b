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
``scorediff.runs.load_run``), the same samplers draw from the trained model and the table reports
the sliced W2 to data the run was not trained on (its test split when it trained on split=train,
else a fresh draw of its toy dataset, else its data).
"""

from __future__ import annotations

from .configs import (
    BENCH_OPTIONS,
    OPTIMIZED,
    PILOT_N,
    PILOT_SEED,
    T_MIN_SUFFIX,
    default_grids,
    optimized_grid,
    our_configs,
    pilots,
)
from .measure import ADAPTIVE_STEPS, NFE_SLACK, Row, SamplerConfig, accuracy, match_steps, matched, measure
from .problems import MIXTURES, Problem, errors, make_mixture, make_problem, pf_ode_reference
from .tables import best, failures, format_table, problem_summary
from .trained import compare_samplers, grid_names, held_out, oracle_rows, run_comparison, trained_rows

TARGET_NFES = (5, 10, 20, 50)

__all__ = [
    "ADAPTIVE_STEPS", "BENCH_OPTIONS", "MIXTURES", "NFE_SLACK", "OPTIMIZED", "PILOT_N", "PILOT_SEED", "T_MIN_SUFFIX",
    "TARGET_NFES", "Problem", "Row", "SamplerConfig", "accuracy", "best", "compare_samplers", "default_grids", "errors", "failures",
    "format_table", "grid_names", "held_out", "make_mixture", "make_problem", "match_steps", "matched", "measure",
    "optimized_grid", "oracle_rows", "our_configs", "pf_ode_reference", "pilots", "problem_summary", "run_comparison",
    "trained_rows",
]
