"""The report in a real browser: headless Chromium (Debian's package) opens report.html from disk with no network,
every figure decodes (naturalWidth > 0), every table is there, nothing is logged as an error, and a screenshot is
taken."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.report.test_render import fake_run

from poschan.cli import main

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]

# Recorded from the first script on (errors of any resource or script, console.error) and, after load, written into
# the page for --dump-dom to return.
PROBE = """<script>
const poschanErrors = [];
window.addEventListener("error", e => poschanErrors.push(String(e.message || (e.target && e.target.src))), true);
const poschanConsoleError = console.error;
console.error = (...a) => { poschanErrors.push(a.join(" ")); poschanConsoleError(...a); };
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({alt: i.alt, width: i.naturalWidth, complete: i.complete}));
  const tables = [...document.querySelectorAll("table")].map(t => t.dataset.name);
  const out = document.createElement("pre");
  out.id = "poschan-probe";
  out.textContent = JSON.stringify({images, tables, errors: poschanErrors});
  document.body.appendChild(out);
});
</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=120)


def test_report_opens_offline_with_every_figure_and_table(tmp_path):
    run = fake_run(tmp_path)
    report = tmp_path / "report.html"
    assert main(["report", str(run), str(run), "--out", str(report)]) == 0
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("<head>", "<head>" + PROBE, 1))
    proc = chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="poschan-probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stderr[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert [i["alt"] for i in probe["images"]] == ["curve.png", "curve.png"]
    assert all(i["complete"] and i["width"] > 0 for i in probe["images"]), probe["images"]
    assert probe["tables"] == ["summary", "table"] * 2 and probe["errors"] == []

    shot = tmp_path / "report.png"
    chromium("--window-size=1200,1600", f"--screenshot={shot}", report.as_uri())
    pixels = Image.open(shot).convert("L")
    assert pixels.size == (1200, 1600)
    low, high = pixels.getextrema()
    assert high - low > 100  # text and figures drawn, not a blank page


def test_a_broken_figure_is_caught(tmp_path):
    """The probe itself can fail: a figure that does not decode has naturalWidth 0 and logs an error."""
    page = tmp_path / "broken.html"
    page.write_text(f"<html><head>{PROBE}</head><body><img alt='x' src='data:image/png;base64,AAAA'></body></html>")
    proc = chromium("--virtual-time-budget=3000", "--dump-dom", page.as_uri())
    probe = json.loads(re.search(r'<pre id="poschan-probe">(.*?)</pre>', proc.stdout, re.S).group(1)
                       .replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["images"][0]["width"] == 0 and probe["errors"]



# Opens every <details>, then reports where the findings sit in a 1280×800 window, whether each opened <details>
# shows content, and each figure's decoded width.
LAYOUT_PROBE = """<script>
window.addEventListener("load", () => {
  const findings = document.getElementById("findings");
  const first = findings.querySelector("li").getBoundingClientRect();
  const details = [...document.querySelectorAll("details")];
  details.forEach(d => { d.open = true; });
  const opened = details.map(d => d.getBoundingClientRect().height - d.querySelector("summary").offsetHeight);
  const images = [...document.images].map(i => ({alt: i.alt, width: i.naturalWidth, complete: i.complete}));
  const out = document.createElement("pre");
  out.id = "poschan-probe";
  out.textContent = JSON.stringify({heading: findings.querySelector("h2").getBoundingClientRect().top,
                                    first: first.bottom, opened, images,
                                    lines: findings.querySelectorAll(":scope > ul > li").length});
  document.body.appendChild(out);
});
</script>"""


def test_the_results_report_opens_on_its_findings_and_every_fold_and_figure_works(tmp_path):
    """docs/report.html as `make readme` writes it from the committed results/ (figures linked beside it): the
    findings in the first 1280×800 screen, every <details> opens onto content, every figure (the report's own and
    the runs') decodes."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from readme_results import REPORT_HTML, main, report

    shutil.copytree(ROOT / "results", tmp_path / "results")
    (tmp_path / "docs").mkdir()
    shutil.copy2(ROOT / "README.md", tmp_path / "README.md")
    assert main(["--root", str(tmp_path)]) == 0
    built = report(tmp_path)
    page = tmp_path / REPORT_HTML
    probed = page.with_name("probed.html")  # beside the page: its figure links hold
    probed.write_text(page.read_text().replace("<head>", "<head>" + LAYOUT_PROBE, 1))
    proc = chromium("--window-size=1280,800", "--virtual-time-budget=20000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="poschan-probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stderr[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["lines"] == len(built.findings) > 0
    assert 0 <= probe["heading"] < probe["first"] <= 800  # the findings begin in the first screen's 800 px
    assert probe["opened"] and min(probe["opened"]) > 0  # every fold opens onto something
    assert {"headline", "gap-study", "segmentation-sweep", "region-attack"} <= {i["alt"] for i in probe["images"]}
    assert all(i["complete"] and i["width"] > 0 for i in probe["images"]), probe["images"]

    shot = tmp_path / "first-screen.png"
    chromium("--window-size=1280,800", f"--screenshot={shot}", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (800, 1280)
    inked = float((pixels < 128).mean())
    assert inked > 0.01  # text drawn on the first screen, not a blank page
