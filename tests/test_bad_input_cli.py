"""Bad input end to end: every command, run as a user runs it (a subprocess), exits 2 with exactly one line on
stderr, nothing on stdout, and leaves neither OUT nor OUT.partial behind."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

SMOKE = ["--preset", "smoke", "--no-progress"]


def poschan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poschan.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def pickled(tmp_path_factory) -> Path:
    """A weights file holding a pickled module (code), as ``torch.save(model)`` writes it."""
    path = tmp_path_factory.mktemp("w") / "pickled.pt"
    torch.save(nn.Conv2d(1, 4, 3), path)
    return path


CASES = {
    "train-nan-lr": (["train", *SMOKE, "--lr", "nan"], "finite"),
    "train-argparse": (["train", *SMOKE, "--epochs", "two"], "invalid int value"),
    "train-diverges-during-run": (["train", *SMOKE, "--lr", "1e10"], "diverged"),
    "train-pickled-weights": (["train", *SMOKE, "--weights", "{pickled}"], "pickled Python objects"),
    "position-map-inf-sigma": (["position-map", *SMOKE, "--sigma", "inf"], "finite"),
    "gap-study-padding": (["gap-study", *SMOKE, "--paddings", "zeros,mirror"], "padding"),
    "probe-layer": (["probe", *SMOKE, "--layers", "no.such.layer"], "no.such.layer"),
    "rank-method": (["rank", *SMOKE, "--method", "psychic"], "psychic"),
    "augshift-nan-lambda": (["augshift", *SMOKE, "--lambda", "nan"], "finite"),
    "seg-train-pickled-weights": (["seg-train", *SMOKE, "--epochs", "0", "--weights", "{pickled}"],
                                  "pickled Python objects"),
    "ablate-missing-checkpoint": (["ablate", *SMOKE, "--checkpoint", "{tmp}/none.pt"], "none.pt"),
    "ablate-run-without-networks": (["ablate", *SMOKE, "--checkpoint", "{tmp}"], "without seed<S>/checkpoint.pt"),
    "ablate-unknown-ranking": (["ablate", *SMOKE, "--checkpoint", "{tmp}/none.pt", "--rankings", "flip,psychic"],
                               "psychic"),
    "ablate-no-matched-draws": (["ablate", *SMOKE, "--checkpoint", "{tmp}/none.pt", "--matched-draws", "0"],
                                "matched_draws"),
    "seg-train-flip": (["seg-train", *SMOKE, "--flip", "sometimes"], "allowed: auto, on, off"),
    "attack-inf-eps": (["attack", *SMOKE, "--checkpoint", "{tmp}/none.pt", "--eps", "inf"], "finite"),
}


@pytest.mark.parametrize("name", CASES)
def test_experiment_bad_input(tmp_path, pickled, name):
    argv, match = CASES[name]
    out = tmp_path / "out"
    proc = poschan(*[a.format(tmp=tmp_path, pickled=pickled) for a in argv], "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("poschan") and match in lines[0], proc.stderr
    assert "weights_only" not in proc.stderr  # never torch's advice to load a file unsafely
    assert not out.exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("argv, match", [
    ([], "command"),
    (["nosuch"], "nosuch"),
    (["models", "--bogus"], "--bogus"),
    (["layers", "no-such-model"], "no-such-model"),
    (["train", *SMOKE], "--out"),
])
def test_command_bad_input(argv, match):
    proc = poschan(*argv)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and match in lines[0], proc.stderr
