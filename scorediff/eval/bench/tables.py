"""Tables of benchmark rows: formatting, failures, the best row per target."""

from __future__ import annotations

import math
from collections.abc import Iterable

from .measure import Row, matched
from .problems import Problem


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
