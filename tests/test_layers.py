"""The import direction of DESIGN.md, read from the source: no import cycle, and no reader of a run folder that
depends on the training loop. Every import counts, at module level or inside a function (a function-local import
only delays a cycle, it does not remove it); imports under ``if TYPE_CHECKING:`` do not run and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "scorediff"

# A package's __init__ and one of its own modules importing each other through a function-local import: each
# module needs a builder its package defines (nets.make, samplers.sample). Known, and the only ones allowed.
# the network builder (nets.make) builds the inner networks of the autoencoder and the masked-conditional net
ALLOWED_CYCLES = [{"scorediff.nets", "scorediff.nets.autoencoder", "scorediff.nets.masked"}, {"scorediff.samplers", "scorediff.samplers.parallel"}]
# The commands that train (they sit above the training loop by design).
TRAINING_COMMANDS = {"scorediff.cli.train", "scorediff.cli.distill", "scorediff.cli.train_classifier"}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the scorediff modules it imports (a name imported from a package counts as that package's
    submodule when one exists by that name)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                for n in ast.walk(node)}
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        out = graph.setdefault(name, set())
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = node.module
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                if not base or not base.startswith("scorediff"):
                    continue
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("scorediff")]
            for target in targets:
                while target not in mods and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != name:
                    out.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_graph_is_read_correctly():
    g = import_graph()
    # a module-level import, a function-local one and one under TYPE_CHECKING (which must not count)
    assert "scorediff.runs.build" in g["scorediff.runs.run"]
    assert "scorediff.samplers" in g["scorediff.samplers.parallel"]
    assert "scorediff.runs.run" not in g["scorediff.runs.fitted"]
    assert any(c == {"a", "b"} for c in cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}))


def test_no_import_cycle():
    found = [sorted(c) for c in cycles(import_graph()) if c not in ALLOWED_CYCLES]
    assert not found, f"import cycles: {found}"


@pytest.mark.parametrize("reader", ["scorediff.runs", "scorediff.report", "scorediff.generate", "scorediff.eval", "scorediff.guidance",
                                    "scorediff.likelihood", "scorediff.cascade", "scorediff.latent",
                                    "scorediff.interop"])
def test_readers_of_run_folders_never_need_the_training_loop(reader):
    g = import_graph()
    for name in [m for m in g if m == reader or m.startswith(reader + ".")]:
        bad = sorted(m for m in reachable(g, name) if m.startswith("scorediff.training"))
        assert not bad, f"{name} imports the training package: {bad}"


def test_cli_commands_other_than_training_never_import_the_training_loop():
    g = import_graph()
    for name in sorted(m for m in g if m.startswith("scorediff.cli.") and m not in TRAINING_COMMANDS):
        bad = sorted(m for m in reachable(g, name) if m.startswith("scorediff.training"))
        assert not bad, f"{name} imports the training package: {bad}"


def test_layers_below_run_folders_never_import_them():
    """DESIGN.md: utils <- processes <- parameterizations <- {losses, samplers, ...} <- {inverse, likelihood, few_step,
    latent, eval} <- runs <- training <- cli."""
    g = import_graph()
    above = ("scorediff.runs", "scorediff.training", "scorediff.cli", "scorediff.report", "scorediff.generate")
    for name in sorted(m for m in g if not m.startswith(above) and m not in ("scorediff", "scorediff.__main__")):
        bad = sorted(m for m in g[name] if m.startswith(above))
        assert not bad, f"{name} (below the run-folder layer) imports {bad}"
