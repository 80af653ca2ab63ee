"""`make docs`: one offline site, the API reference built from the docstrings (pdoc, public names and packages
included) and a landing page whose every link resolves: the API reference and the results pages that exist."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_make_docs_builds_a_site_whose_links_resolve(tmp_path):
    out, pages = tmp_path / "site", tmp_path / "pages"
    pages.mkdir()
    (pages / "report.html").write_text("<html></html>")  # results.md not generated yet
    recipe = subprocess.run(["make", "-n", "docs", f"DOCS={out}"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    (command,) = [line for line in recipe.splitlines() if "docs_site.py" in line]  # what `make docs` runs
    subprocess.run(f"{command} --pages {pages}", shell=True, cwd=ROOT, check=True, capture_output=True)
    index = (out / "index.html").read_text()
    links = re.findall(r'href="([^"]+)"', index)
    assert {"api/poschan.html", "api/index.html", "../pages/report.html"} == set(links)
    assert all((out / link).is_file() for link in links)
    assert "results.md: not generated yet" in index and 'href="http' not in index
    api = (out / "api" / "poschan.html").read_text()
    for name in ("gap_study", "rank_channels", "ChannelRanking", "ablation_curve", "region_attack", "AugShiftLoss",
                 "load_run"):
        assert f'id="{name}"' in api, name
    assert "Rank the channels of" in api  # rank_channels' docstring, rendered
    assert (out / "api" / "poschan" / "locate" / "ranking.html").is_file()
