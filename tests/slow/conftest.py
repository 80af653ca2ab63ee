"""Helpers of the slow tests: run the real `poschan` command line in a subprocess and read its results."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run_poschan(command: str, out: Path, *args: str) -> dict:
    """``poschan COMMAND --out OUT ARGS`` in a fresh interpreter (the installed CLI's main); its results.json."""
    argv = [sys.executable, "-m", "poschan.cli", command, "--no-progress", "--out", str(out), *args]
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(argv[2:])} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == command
    print(proc.stdout)  # the command's own summary table, shown by pytest -rA / on failure
    return results


def row_of(rows: list[dict], **match) -> dict:
    """The one row whose fields equal ``match``."""
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one row with {match}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="session")
def slow_out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slow-runs")
