"""Resume after a kill reproduces the uninterrupted run bit for bit, for commands whose models draw random
numbers while training (channel permutations, dropout, random shifts); resume with a changed setting is refused."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import poschan.engine as engine
from poschan.cli import main
from poschan.results import atomic_torch_save

SMOKE = ["--preset", "smoke", "--no-progress", "--epochs", "2"]
COMMANDS = {
    "train-permute-pooled": ["train", "--permute", "pooled", "--seeds", "0,1", "--train-size", "96"],
    "gap-study": ["gap-study", "--tasks", "location", "--paddings", "zeros", "--grids", "3"],  # + its permutations
    "augshift": ["augshift", "--methods", "augshift,shift-aug"],
    "seg-train-dropout": ["seg-train", "--layout-prior", "0.9"],
}


def killed_after_first_epoch(argv: list[str], out: Path) -> None:
    """Run ``argv`` and kill it right after the first end-of-epoch-1 checkpoint is on disk."""

    def save_then_die(obj, path):
        atomic_torch_save(obj, path)
        if obj["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "atomic_torch_save", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            main([*argv, "--out", str(out)])
    assert not out.exists() and Path(f"{out}.partial").is_dir()


def outcome(out: Path) -> dict:
    """What a run reports and the final weights it trained (everything but timings and the environment)."""
    data = json.loads((out / "results.json").read_text())
    weights = {str(p.relative_to(out)): torch.load(p, weights_only=True)["model"] for p in out.rglob("checkpoint.pt")}
    return {"reported": {k: data[k] for k in ("experiment", "config", "metrics", "seeds")}, "weights": weights}


def assert_same(a: dict, b: dict) -> None:
    assert a["reported"] == b["reported"]
    assert a["weights"].keys() == b["weights"].keys() and a["weights"]
    for name, state in a["weights"].items():
        for key, tensor in state.items():
            assert torch.equal(tensor, b["weights"][name][key]), (name, key)


@pytest.mark.parametrize("name", COMMANDS)
def test_resume_after_kill_is_bit_identical(tmp_path, name):
    argv = [*COMMANDS[name], *SMOKE]
    assert main([*argv, "--out", str(tmp_path / "full")]) == 0
    killed_after_first_epoch(argv, tmp_path / "cut")
    assert main([*argv, "--out", str(tmp_path / "cut")]) == 2  # refuses to start over without --resume
    assert main([*argv, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    assert_same(outcome(tmp_path / "full"), outcome(tmp_path / "cut"))


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> tuple[list[str], Path]:
    """A `train --permute pooled` run killed after its first epoch: (its arguments, its OUT)."""
    argv = [*COMMANDS["train-permute-pooled"], *SMOKE]
    out = tmp_path_factory.mktemp("resume") / "cut"
    killed_after_first_epoch(argv, out)
    return argv, out


@pytest.mark.parametrize("changed, key", [(["--lr", "0.5"], "lr"), (["--width", "4"], "width"),
                                          (["--seeds", "0"], "seeds")])
def test_resume_with_a_changed_setting_exits_2_and_keeps_the_run(interrupted, changed, key):
    argv, out = interrupted
    before = {p: p.read_bytes() for p in Path(f"{out}.partial").rglob("*") if p.is_file()}
    proc = subprocess.run([sys.executable, "-m", "poschan.cli", *argv, *changed, "--out", str(out), "--resume"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and f"changed settings: {key} " in lines[0], proc.stderr
    assert {p: p.read_bytes() for p in Path(f"{out}.partial").rglob("*") if p.is_file()} == before
    assert not out.exists()
