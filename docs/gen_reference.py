"""Write the API reference pages (docs/reference/) from the package itself: one page per public top-level
module or subpackage, listing it and each public submodule for mkdocstrings, and the command-line reference from
the argparse parsers. Run it after adding a module (`python docs/gen_reference.py`); tests/test_docs.py fails
while a page is missing or stale."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "reference"
SKIP = {"cli"}  # documented by its --help texts (cli.md), not by docstrings


def public_modules(name: str) -> list[str]:
    """``name`` and every module below it whose own name does not start with an underscore, sorted."""
    mod = importlib.import_module(name)
    found = [name]
    if hasattr(mod, "__path__"):
        for m in sorted(pkgutil.iter_modules(mod.__path__), key=lambda m: m.name):
            if not m.name.startswith("_"):
                found += public_modules(f"{name}.{m.name}")
    return found


def top_level() -> list[str]:
    import scorediff

    return sorted(m.name for m in pkgutil.iter_modules(scorediff.__path__)
                  if not m.name.startswith("_") and m.name not in SKIP)


def module_page(top: str) -> str:
    mods = public_modules(f"scorediff.{top}")
    lines = [f"# `scorediff.{top}`", ""]
    for m in mods:
        if m != mods[0]:
            lines += [f"## `{m}`", ""]
        lines += [f"::: {m}", "    options:", "      show_root_heading: false", "      heading_level: 3", ""]
    return "\n".join(lines)


def cli_page() -> str:
    import os

    from scorediff.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal's width: fix it
    parser = build_parser()
    lines = ["# Command line", "", "`scorediff COMMAND --help` prints each of these.", "", "```text",
             parser.format_help().rstrip(), "```", ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        lines += [f"## `scorediff {name}`", "", "```text", p.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def pages() -> dict[str, str]:
    out = {f"{top}.md": module_page(top) for top in top_level()}
    out["cli.md"] = cli_page()
    index = ["# API reference", "", "Generated from the docstrings (`python docs/gen_reference.py`).", "",
             "- [Command line](cli.md)"]
    index += [f"- [`scorediff.{t}`]({t}.md)" for t in top_level()]
    out["index.md"] = "\n".join(index) + "\n"
    return out


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    want = pages()
    for stale in OUT.glob("*.md"):
        if stale.name not in want:
            stale.unlink()
    for name, text in want.items():
        (OUT / name).write_text(text)
    print(f"wrote {len(want)} pages to {OUT}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
