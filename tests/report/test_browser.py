"""The report in a real browser: headless Chromium (Debian's package) opens report.html from disk with no network,
every figure decodes (naturalWidth > 0), every table is there, nothing is logged as an error, and a screenshot is
taken."""

import json
import re
import shutil
import subprocess

import pytest
from PIL import Image
from tests.report.test_render import fake_run

from poschan.cli import main

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

