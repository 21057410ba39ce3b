"""The run report, tested the way a person sees it: rendered in headless Chromium.

The page must load with no console message (it has no script; a blocked external resource or a bad
image would log one), every image must decode, and nothing may be fetched (its Content-Security-Policy
allows data: images only, so any fetch is a logged violation). A checking script is added to a copy
of the page only. The sampler comparison is checked against closed-form truth on the analytic ring.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scorediff import analytic, processes, report
from scorediff.cli import main
from scorediff.eval import bench

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="chromium not installed (CI installs it: .ci/run)"
)

FAST = ["--set", "optim.steps=6", "--set", "log.progress=false", "--set", "log.every=2", "--set", "sample.num=64",
        "--set", "sample.steps=4", "--set", "sample.every=3", "--set", "data.options.n=400"]

# Added to a copy of the page: record resource errors and policy violations from the start, then after
# load check that every <img> decoded, and write the verdict into the DOM for --dump-dom.
CHECKER = """<script>
window.__errors = [];
addEventListener("error", e => __errors.push("error: " + (e.message || (e.target && e.target.outerHTML || "").slice(0, 80))), true);
addEventListener("securitypolicyviolation", e => __errors.push("csp: " + e.blockedURI));
addEventListener("load", () => {
  // synchronous, so that --dump-dom cannot overtake it: after "load" every image has loaded or failed;
  // drawing it into a canvas decodes all of its pixels
  const imgs = [...document.images];
  let decoded = 0;
  for (const img of imgs) {
    if (!img.complete || !img.naturalWidth || !img.naturalHeight) continue;
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(0, 0, c.width, c.height).data;
    let opaque = 0;
    for (let k = 3; k < px.length; k += 4) opaque += px[k] > 0;
    if (opaque > 0) decoded += 1;
  }
  const pre = document.createElement("pre");
  pre.id = "verdict";
  pre.textContent = JSON.stringify({images: imgs.length, decoded: decoded, errors: __errors});
  document.body.appendChild(pre);
});
</script>"""


def folder_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "toy"
    assert main(["train", "toy2d", "--out", str(out), *FAST]) == 0
    # an evaluation logged during training (as `scorediff train` evaluations are) and a likelihood result
    with open(out / "metrics.jsonl", "a") as f:
        for step, fid in ((3, 2.5), (6, 1.25)):
            f.write(json.dumps({"step": step, "sliced_w2_eval": fid}) + "\n")
    assert main(["likelihood", str(out), "--num", "8", "--rtol", "1e-3", "--atol", "1e-3", "--no-progress",
                 "--json", str(out / "likelihood.json")]) == 0
    return out


def verdict(res: subprocess.CompletedProcess) -> dict:
    """The checker's JSON from a --dump-dom run."""
    parts = res.stdout.split('<pre id="verdict">')
    assert len(parts) == 2, f"no verdict in the dumped page (rc {res.returncode}): {res.stdout[-300:]!r} {res.stderr[-1000:]}"
    return json.loads(html.unescape(parts[1].split("</pre>")[0]))


def chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@needs_chromium
@pytest.mark.slow  # a subprocess or a training run: minutes under load
def test_report_renders_in_chromium(toy_run, tmp_path, capsys):
    before = folder_digest(toy_run)
    out = tmp_path / "report.html"
    results = tmp_path / "eval_toy.json"  # a results file kept outside the run, as `scorediff eval --out` writes
    results.write_text(json.dumps({"fid": 1.5, "kid": 0.01, "num": 64, "per_class": [1, 2]}))
    assert main(["report", str(toy_run), "--out", str(out), "--compare", "euler,ddim", "--nfe", "2,4",
                 "--num", "64", "--schedule", "karras", "--results", str(results)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert folder_digest(toy_run) == before  # a reader: the run folder is untouched

    page = out.read_text()
    for heading in ("Training", "Evaluation during training", "Samples across training", "Sampler comparison",
                    "Likelihood", "Config", "Environment"):
        assert f"<h2>{heading}</h2>" in page
    assert "time grid: karras" in page
    assert "<h2>Results: eval_toy.json</h2>" in page and "<td>fid</td><td>1.5</td>" in page
    assert "per_class" not in page  # only scalars are tabulated
    assert "<script" not in page and "http://" not in page.replace("http-equiv", "")
    assert "https://" not in page

    # the page as shipped: no console message at all
    shot = tmp_path / "report.png"
    res = chromium("--enable-logging=stderr", "--v=0", "--window-size=1200,2400", f"--screenshot={shot}", out.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    assert "CONSOLE" not in res.stderr, [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln]
    with Image.open(shot) as im:
        assert im.size == (1200, 2400)
        assert len(np.unique(np.asarray(im.convert("L")))) > 10  # not a blank page

    # a copy with the checker: every image decodes, no resource error or policy violation
    probe = tmp_path / "probe.html"
    csp = report.CSP + "; script-src 'unsafe-inline'"
    probe.write_text(page.replace(report.CSP, csp).replace("<head>", "<head>" + CHECKER, 1))
    res = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    v = verdict(res)
    grids = len(list((toy_run / "samples").glob("step_*.png")))
    assert v["images"] == page.count("<img ") == grids + 3  # training, evaluation, comparison plots
    assert v["decoded"] == v["images"]
    assert v["errors"] == []


def test_checker_sees_a_broken_image(tmp_path):
    # the harness must be able to fail: a page with an undecodable image and an external fetch
    if CHROMIUM is None:
        pytest.skip("chromium not installed") if not os.environ.get("CI") else pytest.fail("chromium missing in CI")
    page = report.render([("Broken", '<img src="data:image/png;base64,AAAA"><img src="https://example.com/x.png">')], "t")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace(report.CSP, report.CSP + "; script-src 'unsafe-inline'").replace("<head>", "<head>" + CHECKER, 1))
    res = chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    v = verdict(res)
    assert v["images"] == 2 and v["decoded"] == 0
    assert any(e.startswith("csp: https://example.com") for e in v["errors"])


def test_comparison_against_the_exact_ring():
    # with the exact denoiser, a fine solve reaches the noise floor of sliced W2 between two true sample sets
    mix, p = analytic.ring2d(), processes.make("vp")
    g = torch.Generator().manual_seed(0)
    truth, other = mix.sample(800, g).float(), mix.sample(800, g).float()
    floor = float(analytic.sliced_wasserstein(other, truth, 256, torch.Generator().manual_seed(0)))
    rows = bench.compare_samplers(mix.denoiser(p), p, truth, ["heun", "ddim"], [3, 40], seed=0)
    by = {(r["sampler"], r["budget"]): r for r in rows}
    # vp's grid ends at t_min (no final denoise to zero): every Heun step costs 2 evaluations
    assert by[("ddim", 40)]["nfe"] == 40 and by[("heun", 40)]["nfe"] == 40 and by[("heun", 40)]["steps"] == 20
    assert by[("heun", 40)]["sliced_w2"] < 2 * floor
    assert by[("ddim", 40)]["sliced_w2"] < 2 * floor
    assert by[("heun", 3)]["sliced_w2"] > 3 * by[("heun", 40)]["sliced_w2"]  # a coarse solve is visibly worse


def test_bad_inputs_are_one_line_errors(toy_run, tmp_path, capsys):
    assert main(["report", str(toy_run), "--out", str(toy_run / "r.html")]) == 2
    assert "inside the run folder" in capsys.readouterr().err
    assert not (toy_run / "r.html").exists()
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert main(["report", str(toy_run), "--out", str(tmp_path / "a.html"), "--compare", "nope"]) == 2
    assert "sampler 'nope' unknown" in capsys.readouterr().err
    assert main(["report", str(toy_run), "--out", str(tmp_path / "a.html"), "--results", str(tmp_path / "none.json")]) == 2
    assert "results file" in capsys.readouterr().err
    bad = tmp_path / "bad"
    shutil.copytree(toy_run, bad)
    with open(bad / "metrics.jsonl", "a") as f:
        f.write("{not json\n")
    # a damaged line of the log is not essential to the page: skipped, with one warning naming the file and line
    assert main(["report", str(bad), "--out", str(tmp_path / "b.html")]) == 0
    err = capsys.readouterr().err
    assert "metrics.jsonl" in err and "line 6" in err and len(err.strip().splitlines()) == 1
