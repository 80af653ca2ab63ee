"""The README's findings and docs/results.md are the report of the committed results/, and stay so."""

import json
import re
import shlex
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


def _absolute_paths(run: Path) -> list[str]:
    """The absolute paths a committed run records in its command line and config (a clone's paths differ)."""
    record = json.loads((run / "results.json").read_text())
    words = [*shlex.split(record.get("command", "")), *(str(value) for value in record.get("config", {}).values())]
    words += [line.split(":", 1)[1].strip() for line in (run / "config.yaml").read_text().splitlines() if ":" in line]
    return [word for word in words if word.startswith("/")]


def test_committed_runs_record_only_relative_paths():
    runs = sorted(path.parent for path in (ROOT / "results").glob("*/results.json"))
    assert runs and {run.name: _absolute_paths(run) for run in runs if _absolute_paths(run)} == {}


def test_an_absolute_path_in_a_run_is_caught(tmp_path):
    run = tmp_path / "debias"
    shutil.copytree(ROOT / "results" / "debias-fmnist", run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("weights: ", "weights: /abs/"))
    assert _absolute_paths(run) == ["/abs/runs/study-quick/train-fmnist/seed0/checkpoint.pt"]


def _edited(text: str, begin: int) -> str:
    """``text`` with the first digit before a decimal point after ``begin`` changed."""
    digit = next(i for i in range(begin, len(text)) if text[i].isdigit() and text[i + 1] == ".")
    return text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1:]


def test_an_edited_number_is_caught(tmp_path):
    shutil.copytree(ROOT / "results", tmp_path / "results")
    (tmp_path / "docs").mkdir()
    shutil.copy2(ROOT / "docs" / "results.md", tmp_path / "docs" / "results.md")
    readme = (ROOT / "README.md").read_text()
    (tmp_path / "README.md").write_text(_edited(readme, readme.index("<!-- findings: generated")))
    proc = check(tmp_path)
    assert proc.returncode == 1 and "README.md differ" in proc.stderr
    (tmp_path / "README.md").write_text(readme)
    assert check(tmp_path).returncode == 0
    results = (ROOT / "docs" / "results.md").read_text()
    (tmp_path / "docs" / "results.md").write_text(_edited(results, results.index("## Findings")))
    proc = check(tmp_path)
    assert proc.returncode == 1 and "docs/results.md differ" in proc.stderr


def test_collect_replaces_finished_steps_keeps_the_others_and_drops_renamed_conditions(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_results", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    results, study = tmp_path / "results", tmp_path / "study"
    for name, text in (("gap-study", "old"), ("augshift", "old"), ("seg-train-tb-p0", "old"), ("gap-long", "long")):
        (results / name).mkdir(parents=True)
        (results / name / "results.json").write_text(text)
    (results / "gap-study" / "stale.csv").write_text("from the old run")
    for name in ("gap-study", "seg-train-p0"):
        (study / name).mkdir(parents=True)
        (study / name / "results.json").write_text("new")
        (study / name / "model.safetensors").write_text("a checkpoint: never collected")
    (study / "rank.partial").mkdir()  # unfinished: not collected
    script.collect(study, tmp_path)
    assert sorted(p.name for p in results.iterdir()) == ["augshift", "gap-long", "gap-study", "seg-train-p0"]
    assert (results / "gap-study" / "results.json").read_text() == "new"
    assert sorted(p.name for p in (results / "gap-study").iterdir()) == ["results.json"]
    assert (results / "augshift" / "results.json").read_text() == "old"  # not re-run yet: kept


def test_collect_from_a_missing_study_changes_nothing(tmp_path):
    (tmp_path / "results" / "gap-study").mkdir(parents=True)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--collect", str(tmp_path / "nowhere"), "--root",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "no such study folder" in proc.stderr
    assert (tmp_path / "results" / "gap-study").is_dir()


def _measured(node: object) -> list[float]:
    """Every float a run measured, in order (paths, names and counts left out)."""
    if isinstance(node, dict):
        return [x for key, value in node.items() if key != "checkpoints" for x in _measured(value)]
    if isinstance(node, list):
        return [x for value in node for x in _measured(value)]
    return [node] if isinstance(node, float) else []


def test_no_two_committed_runs_hold_the_same_measurements():
    seen: dict[tuple, str] = {}
    for path in sorted((ROOT / "results").glob("*/results.json")):
        measured = tuple(_measured(json.loads(path.read_text())["metrics"]))
        assert measured not in seen, f"{path.parent.name} repeats {seen.get(measured)}"
        seen[measured] = path.parent.name


def test_no_zero_printed_as_0_000_anywhere_a_reader_looks():
    """A p-value (or any number) never prints as a bare 0.000: p < 1e-16, a floor as a bound, 3 significant
    figures otherwise."""
    pattern = re.compile(r"(?<![0-9.])0\.000(?![0-9])")
    for page in ("README.md", "docs/results.md", "docs/report.html"):
        assert not pattern.findall((ROOT / page).read_text()), page
    assert pattern.findall("p = 0.000 |") and not pattern.findall("0.00030 10.000")  # the pattern itself
