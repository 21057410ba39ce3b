"""``scorediff samplers``: the table of registered samplers (order, stochastic, evaluations per step, default grid)."""

from __future__ import annotations

import argparse
import json
import math

HELP = "list the samplers: order, stochastic, model evaluations per step, default time grid"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the table as JSON (with each sampler's options)")


def _json_value(v):
    """A JSON-safe default: NaN -> null, infinities and other objects -> their repr."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, float) and math.isinf(v):
        return repr(v)
    return v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)


def _fmt_nfe(v: float) -> str:
    return "adaptive" if math.isnan(v) else f"{v:g}"


def run(args: argparse.Namespace) -> int:
    from ..samplers import DEFAULT_ENDINGS, DEFAULT_NFE, DEFAULT_SAMPLER, sampler_table

    rows = sampler_table()
    if args.json:
        clean = [{**r, "nfe_per_step": _json_value(r["nfe_per_step"]),
                  "options": {k: _json_value(v) for k, v in r["options"].items()}} for r in rows]
        print(json.dumps(clean, indent=2))
        return 0
    head = ("name", "order", "stochastic", "nfe/step", "default grid", "description")
    table = [head] + [
        (r["name"], str(r["order"]), "yes" if r["stochastic"] else "no", _fmt_nfe(r["nfe_per_step"]),
         r["default_schedule"], r["description"])
        for r in rows
    ]
    widths = [max(len(row[c]) for row in table) for c in range(len(head) - 1)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    ending = DEFAULT_ENDINGS.get(DEFAULT_SAMPLER, "t_min")
    print(f"\ndefault sampler: {DEFAULT_SAMPLER}, {DEFAULT_NFE} model calls, ending '{ending}' where the process reaches "
          "sigma = 0; the grid column is the fallback, per process see scorediff.samplers.default_schedule")
    _discrete_table()
    return 0


def _discrete_table() -> None:
    """The samplers of token runs (``scorediff.discrete.SAMPLERS``), after the continuous ones."""
    from ..discrete import samplers as ds

    head = ("name", "processes", "nfe/step", "options")
    table = [head] + [
        (name, "/".join(info.processes), str(info.calls_per_step),
         ", ".join(f"{k}={v}" for k, v in ds.options_of(name).items() if k not in ds.COMMON_OPTIONS) or "-")
        for name, info in ds.SAMPLERS.items()
    ]
    widths = [max(len(row[c]) for row in table) for c in range(len(head) - 1)]
    print("\ntoken runs (discrete diffusion; each also takes temperature and top_p):")
    for row in table:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    defaults = ", ".join(f"{p}: {n}, {k} steps" for p, (n, k) in ds.DEFAULTS.items())
    print(f"\ndefault per process: {defaults} (scorediff.discrete.samplers)")
