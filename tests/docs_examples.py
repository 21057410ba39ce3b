"""Extract the code blocks of the README and the documentation pages, for tests/test_docs.py.

Python blocks (```python) of one page run in order, in one namespace, in a fresh working directory that holds
two small trained runs (``runs/toy`` and ``runs/digits``) so that examples that load a run work as written.
Shell blocks (```bash) are checked line by line: every ``scorediff ...`` command is parsed by the real
command-line parser, so a renamed flag or command fails the build. Blocks fenced as ```text or ```console are
shown, not run (output, install commands).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(page: Path, lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(page.read_text()) if kind == lang]


def shell_commands(body: str) -> list[list[str]]:
    """The ``scorediff`` commands of a shell block, as argv lists (continuations joined, comments dropped)."""
    text = body.replace("\\\n", " ")
    cmds = []
    for line in text.splitlines():
        for part in re.split(r"&&|;|\|\|", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                continue
            while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
                words = words[1:]
            if words and words[0] in ("scorediff", "python3 -m scorediff"):
                cmds.append(words[1:])
            elif words[:3] in (["python", "-m", "scorediff"], ["python3", "-m", "scorediff"]):
                cmds.append(words[3:])
    return cmds
