"""`make carry` / `make uncarry`: an interrupted step's finished-job records travel, its checkpoints do not, and
nothing already on the next machine is overwritten."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _make(target: str, runs: Path, carry: Path) -> str:
    return subprocess.run(["make", "-s", "-C", str(ROOT), target, f"RUNS={runs}", f"CARRY={carry}"], check=True,
                          capture_output=True, text=True).stdout


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_carry_keeps_records_and_settings_and_uncarry_never_overwrites(tmp_path):
    job = tmp_path / "runs" / "study-quick" / "budget-response.partial" / "w8-x1" / "v" / "seed0"
    job.mkdir(parents=True)
    (job.parents[2] / "config.yaml").write_text("width: 8\n")
    (job / "outcomes.json").write_text('{"history": []}\n')
    (job / "checkpoint.pt").write_text("weights")
    (tmp_path / "runs" / "study-quick" / "probe.partial").mkdir()  # nothing finished: nothing carried
    (tmp_path / "runs" / "study-quick" / "probe.partial" / "config.yaml").write_text("x: 1\n")
    carry = tmp_path / "carry"
    _make("carry", tmp_path / "runs", carry)
    assert _files(carry) == {"study-quick/budget-response/config.yaml": "width: 8\n",
                             "study-quick/budget-response/w8-x1/v/seed0/outcomes.json": '{"history": []}\n'}
    there = tmp_path / "next" / "study-quick" / "budget-response.partial"
    (there / "w8-x1" / "v" / "seed0").mkdir(parents=True)
    (there / "w8-x1" / "v" / "seed0" / "outcomes.json").write_text("newer\n")
    _make("uncarry", tmp_path / "next", carry)
    assert _files(there) == {"config.yaml": "width: 8\n", "w8-x1/v/seed0/outcomes.json": "newer\n"}
