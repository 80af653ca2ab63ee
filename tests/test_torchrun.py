"""The CLI under ``torchrun --standalone --nproc_per_node=2`` (gloo on the CPU).

Known answer: two ranks give the results of one process. ``rank`` and ``ablate`` shard their passes and merge
float64 statistics and integer confusions, so their metrics agree to 1e-9 (relative); ``train`` splits every batch
across the ranks with synchronised BatchNorm, one process's steps up to fp32 rounding (that equivalence is tested
exactly, in float64, in test_engine_ddp.py), so its accuracies agree and its loss to the rounding Adam carries.
A bad input or a killed rank ends every rank and leaves no OUT; the interrupted run resumes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # torchrun's own default per rank; the one-process runs match it
SMOKE = ["--preset", "smoke", "--no-progress"]


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "poschan", *args]


def one_process(*args: str) -> list[str]:
    return [sys.executable, "-m", "poschan", *args]


def run_ok(argv: list[str]) -> None:
    proc = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def metrics(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["metrics"]


def leaves(value, path: str = ""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def differences(one: dict, two: dict) -> list[str]:
    a, b = dict(leaves(one)), dict(leaves(two))
    assert a.keys() == b.keys()
    return [f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if not same(a[k], b[k])]


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "train"
    run_ok(one_process("seg-train", *SMOKE, "--seeds", "0", "--out", str(out)))
    return out


@pytest.mark.timeout(600)
@pytest.mark.parametrize("command", ["rank", "ablate"])
def test_two_ranks_measure_what_one_process_measures(command, segmenter, tmp_path):
    args = [command, *SMOKE]
    if command == "ablate":  # batches of 4 of the 16 test scenes: each rank scores two of them
        args += ["--checkpoint", str(segmenter), "--batch-size", "4"]
    run_ok(one_process(*args, "--out", str(tmp_path / "one")))
    run_ok(torchrun(*args, "--out", str(tmp_path / "two")))
    assert differences(metrics(tmp_path / "one"), metrics(tmp_path / "two")) == []
    recorded = json.loads((tmp_path / "two" / "results.json").read_text())["config"]
    assert recorded["world_size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no partial directory left


@pytest.mark.timeout(600)
def test_two_ranks_train_as_one_process(tmp_path):
    run_ok(one_process("train", *SMOKE, "--out", str(tmp_path / "one")))
    run_ok(torchrun("train", *SMOKE, "--out", str(tmp_path / "two")))
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    losses = one.pop("train_loss_per_seed"), two.pop("train_loss_per_seed")
    assert differences(one, two) == []
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)  # the mean loss of the same steps, fp32 rounding apart
    assert (tmp_path / "two" / "seed0" / "checkpoint.pt").is_file()


@pytest.mark.timeout(300)
def test_a_bad_input_seen_by_rank_0_ends_every_rank_with_one_line_and_no_output(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    proc = subprocess.run(torchrun("train", *SMOKE, "--out", str(taken)), env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("poschan: error:")]
    # each rank that prints before torchrun ends it prints the same line (the first to exit may end the other)
    assert 1 <= len(errors) <= 2 and all("already exists and is not empty" in line for line in errors)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"] and (taken / "mine.txt").read_text() == "keep"


def _workers(launcher: int) -> dict[int, int]:
    """rank -> pid of the launcher's worker processes."""
    found = {}
    for pid in subprocess.run(["ps", "-o", "pid=", "--ppid", str(launcher)], capture_output=True,
                              text=True).stdout.split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        rank = next((int(e.split(b"=")[1]) for e in environ if e.startswith(b"RANK=")), None)
        if rank is not None:
            found[rank] = int(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state != "Z"


@pytest.mark.timeout(600)
def test_killing_one_rank_ends_the_others_without_out_and_the_run_resumes(tmp_path):
    config = tmp_path / "long.yaml"
    config.write_text("epochs: 4\ntrain_size: 2048\n")
    out = tmp_path / "run"
    args = ["train", *SMOKE, "--config", str(config), "--out", str(out)]
    launcher = subprocess.Popen(torchrun(*args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "run.partial" / "seed0" / "checkpoint.pt"
    deadline = time.monotonic() + 400
    while not checkpoint.is_file() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert checkpoint.is_file() and launcher.poll() is None, "the run never reached its first checkpoint"
    workers = _workers(launcher.pid)
    assert sorted(workers) == [0, 1]
    os.kill(workers[1], signal.SIGKILL)
    launcher.wait(timeout=60)  # a hang detector: the launcher ends the surviving rank and exits
    assert launcher.returncode != 0
    assert not _alive(workers[0])
    assert not out.exists() and checkpoint.is_file()  # no OUT; the partial run stays for --resume

    run_ok(torchrun(*args, "--resume"))
    history = (out / "seed0" / "metrics.csv").read_text().splitlines()
    assert len(history) == 1 + 4 and not (tmp_path / "run.partial").exists()
