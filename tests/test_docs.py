"""The documentation site: its pages build with no warning, its API reference covers every public name, every
page loads in headless Chromium with no console error and every image decodes, and every code block of the README
and the docs runs (Python) or parses (the command line). See tests/docs_examples.py for what runs how."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import zlib
from functools import partial
from pathlib import Path

import pytest

from scorediff.cli import build_parser
from tests.conftest import env_one_thread
from tests.docs_examples import ROOT, blocks, pages, shell_commands

mkdocs = pytest.importorskip("mkdocs") if not os.environ.get("CI") else __import__("mkdocs")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return out


def test_reference_pages_are_current():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import gen_reference
    finally:
        sys.path.pop(0)
    stale = [name for name, text in gen_reference.pages().items()
             if not (ROOT / "docs" / "reference" / name).is_file()
             or (ROOT / "docs" / "reference" / name).read_text() != text]
    assert not stale, f"run `python docs/gen_reference.py`: stale or missing {stale}"
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [name for name in gen_reference.pages() if f"reference/{name}" not in nav]
    assert not missing, f"API pages missing from the nav of mkdocs.yml: {missing}"


def _inventory(site: Path) -> set[str]:
    raw = (site / "objects.inv").read_bytes()
    body = raw.split(b"\n", 4)[4]  # four header lines, then zlib
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines()}


def test_site_builds_and_covers_every_public_name(site):
    import importlib

    names = _inventory(site)
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import gen_reference
    finally:
        sys.path.pop(0)
    missing = []
    for top in gen_reference.top_level():
        for mod in gen_reference.public_modules(f"scorediff.{top}"):
            m = importlib.import_module(mod)
            for name in getattr(m, "__all__", []):
                if f"{mod}.{name}" not in names:
                    missing.append(f"{mod}.{name}")
    assert not missing, f"public names without an API entry: {missing[:20]} ({len(missing)})"


def test_nav_finds_the_common_tasks_in_one_click():
    nav = (ROOT / "mkdocs.yml").read_text()
    for task in ("Train on your own data", "Samplers and how to pick one", "Guidance", "Training and the run folder"):
        assert task in nav
    text = (ROOT / "docs" / "guides" / "training.md").read_text()
    assert "--resume" in text


# One browser for the whole site: a harness page loads every page in turn in a same-origin iframe, waits for it,
# and records its title and how many of its images decoded; the browser's console log (stderr) carries every
# console message and uncaught error of every frame, with the frame's URL. One launch instead of one per page.
HARNESS = """<!doctype html><html><head><title>harness</title></head><body>
<iframe id="f" style="width:1200px;height:900px"></iframe><pre id="verdict"></pre>
<script>
const pages = %s, out = [], frame = document.getElementById('f');
function next(i) {
  if (i >= pages.length) { document.getElementById('verdict').textContent = JSON.stringify(out); return; }
  frame.onload = () => setTimeout(() => {
    const d = frame.contentDocument, imgs = [...d.images];
    out.push({page: pages[i], title: d.title, html: d.documentElement.outerHTML.includes('</body>'),
              images: imgs.length, decoded: imgs.filter(im => im.complete && im.naturalWidth > 0).length});
    next(i + 1);
  }, 300);
  frame.src = pages[i];
}
next(0);
</script></body></html>"""


@pytest.mark.slow
def test_every_page_loads_in_chromium(site):
    if CHROMIUM is None:
        pytest.skip("chromium not installed") if not os.environ.get("CI") else pytest.fail("chromium missing in CI")
    html_pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                        if "assets" not in p.parts and p.name != "404.html")
    assert len(html_pages) > 20
    (site / "_harness.html").write_text(HARNESS % json.dumps(["/" + p for p in html_pages]))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/_harness.html"
        res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                              "--v=0", f"--virtual-time-budget={3000 * len(html_pages)}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=600)
    finally:
        server.shutdown()
    assert res.returncode == 0, res.stderr[-1000:]
    console = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console[:10]
    verdicts = json.loads(res.stdout.split('<pre id="verdict">')[1].split("</pre>")[0].replace("&quot;", '"'))
    assert [v["page"] for v in verdicts] == ["/" + p for p in html_pages], "the harness did not visit every page"
    for v in verdicts:
        assert v["html"] and v["title"], v
        assert v["images"] == v["decoded"], v  # every image decodes
    assert sum(v["images"] for v in verdicts) > 0


# -- executed examples -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A working directory with the two small runs the examples name (runs/toy, runs/digits)."""
    from scorediff.training import config, train

    d = tmp_path_factory.mktemp("examples")
    train(config.load("toy2d", ["optim.steps=60", "log.progress=false", "sample.every=0", "threads=1"]),
          d / "runs" / "toy")
    train(config.load("digits", ["optim.steps=30", "log.progress=false", "sample.every=0", "sample.num=16",
                                 "threads=1"]), d / "runs" / "digits")
    return d


PY_PAGES = [p for p in pages() if blocks(p, "python")]


@pytest.mark.slow
@pytest.mark.parametrize("page", PY_PAGES, ids=[str(p.relative_to(ROOT)) for p in PY_PAGES])
def test_python_examples_run(page, workdir):
    code = "\n\n".join(blocks(page, "python"))
    script = workdir / f"example_{page.stem}.py"
    script.write_text("import matplotlib\nmatplotlib.use('Agg')\n" + code)
    env = {**env_one_thread(), "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, str(script)], cwd=workdir, capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, f"{page.relative_to(ROOT)}:\n{res.stderr[-3000:]}"


SH_PAGES = [p for p in pages() if any(shell_commands(b) for b in blocks(p, "bash"))]


@pytest.mark.parametrize("page", SH_PAGES, ids=[str(p.relative_to(ROOT)) for p in SH_PAGES])
def test_cli_examples_parse(page):
    parser = build_parser()
    for body in blocks(page, "bash"):
        for argv in shell_commands(body):
            try:
                parser.parse_args(argv)
            except SystemExit as e:
                pytest.fail(f"{page.relative_to(ROOT)}: `scorediff {' '.join(argv)}` does not parse (exit {e.code})")
