"""The README's results section is `poschan report --format md results/*` (headings one level down)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.contract import violations

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "readme_results.py"


def check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--check", "--root", str(root)], capture_output=True,
                          text=True, timeout=300)


def test_readme_results_are_the_report_of_the_committed_results():
    proc = check(ROOT)
    assert proc.returncode == 0, proc.stderr


def test_committed_results_keep_the_contract():
    runs = sorted((ROOT / "results").glob("*/results.json"))
    assert runs
    for path in runs:
        assert violations(json.loads(path.read_text())["metrics"]) == [], path.parent.name


def test_an_edited_number_is_caught(tmp_path):
    shutil.copytree(ROOT / "results", tmp_path / "results")
    readme = (ROOT / "README.md").read_text()
    begin = readme.index("<!-- results: generated")
    digit = next(i for i in range(begin, len(readme)) if readme[i].isdigit() and readme[i + 1] == ".")
    (tmp_path / "README.md").write_text(readme[:digit] + str((int(readme[digit]) + 1) % 10) + readme[digit + 1:])
    proc = check(tmp_path)
    assert proc.returncode == 1 and "differ" in proc.stderr
