"""End-to-end runs of the CLI (smoke preset) and its bad-input contract."""

import gzip
import json
import subprocess
import sys

import pytest
import torch
from tests.contract import statistic_ok

import poschan.engine as engine
from poschan.cli import _print_metrics, main
from poschan.data.sources import find_fashion_mnist
from poschan.execution import cpu_capability, resolve_precision
from poschan.results import atomic_torch_save

SMOKE = ["train", "--task", "location", "--grid", "3", "--padding", "zeros", "--head", "gap-fc",
         "--preset", "smoke", "--no-progress"]


def test_train_smoke_subprocess_contract(tmp_path):
    out = tmp_path / "D"
    proc = subprocess.run([sys.executable, "-m", "poschan.cli", *SMOKE, "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"results: {out}/results.json"
    data = json.loads((out / "results.json").read_text())
    assert set(data) >= {"experiment", "config", "metrics", "seeds", "env", "elapsed_s"}
    assert data["metrics"]["chance"] == pytest.approx(1 / 9)
    assert statistic_ok(data["metrics"]["test_accuracy"])
    assert data["config"]["grid"] == 3 and data["config"]["preset"] == "smoke"
    # what ran, as this CPU decides it: the precision auto resolved to here, and the CPU's native instructions
    assert data["env"]["cpu"] == cpu_capability()
    assert data["env"]["training_precision"] == resolve_precision(data["config"]["precision"], torch.device("cpu"))
    for name in ("config.yaml", "curves.csv", "learning_curve.png", "seed0/checkpoint.pt", "seed0/metrics.csv"):
        assert (out / name).exists(), name
    assert not (tmp_path / "D.partial").exists()


def test_resume_after_kill_gives_same_metrics(tmp_path, monkeypatch, capsys):
    args = [*SMOKE, "--epochs", "2", "--seeds", "0,1"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0

    def save_then_die(obj, path):
        atomic_torch_save(obj, path)
        if obj["epoch"] == 1 and "seed1" in str(path):
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--out", str(tmp_path / "cut")])
    monkeypatch.undo()
    assert not (tmp_path / "cut").exists() and (tmp_path / "cut.partial").exists()
    assert main([*args, "--out", str(tmp_path / "cut")]) == 2  # refuses without --resume
    assert main([*args, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    full = json.loads((tmp_path / "full" / "results.json").read_text())["metrics"]
    cut = json.loads((tmp_path / "cut" / "results.json").read_text())["metrics"]
    assert full == cut


def truncated_root(tmp_path):
    src = find_fashion_mnist(None)
    root = tmp_path / "fm"
    root.mkdir()
    for f in src.glob("*.gz"):
        (root / f.name).write_bytes(f.read_bytes())
    raw = gzip.decompress((src / "t10k-images-idx3-ubyte.gz").read_bytes())
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return root


@pytest.mark.parametrize("extra, match", [
    (["--model", "resnet19-paper"], "resnet18-paper"),
    (["--permute", "stage9"], "stage"),
    (["--padding", "mirror"], "padding"),
    (["--grid", "4", "--canvas", "84"], "canvas"),
    (["--data-root", "{tmp}/nowhere"], "data-root"),
    (["--data-root", "TRUNCATED"], "t10k-images"),
    (["--config", "{tmp}/bad.yaml"], "unknown config key"),
    (["--seeds", ""], "seed"),
])
def test_bad_input_exit_2_one_line_no_output(tmp_path, capsys, extra, match):
    (tmp_path / "bad.yaml").write_text("epochz: 3\n")
    extra = [truncated_root(tmp_path).as_posix() if e == "TRUNCATED" else e.format(tmp=tmp_path) for e in extra]
    out = tmp_path / "out"
    assert main([*SMOKE, *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("poschan: error:")
    assert match in err
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_unwritable_out(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main([*SMOKE, "--out", str(tmp_path / "file" / "out")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_pretrained_efficientnet_trains_offline(tmp_path):
    assert main([*SMOKE, "--model", "efficientnet-lite0", "--pretrained", "--out", str(tmp_path / "e")]) == 0
    data = json.loads((tmp_path / "e" / "results.json").read_text())
    assert data["config"]["model"] == "efficientnet-lite0" and data["config"]["pretrained"] is True


def test_models_and_layers(capsys):
    assert main(["models"]) == 0
    assert "resnet18-paper" in capsys.readouterr().out
    assert main(["layers", "resnet18-paper", "--width", "8"]) == 0
    text = capsys.readouterr().out
    assert "backbone.layer4" in text and "(1, 64, 6, 6)" in text
    assert main(["layers", "no-such-model"]) == 2


def test_a_commands_console_summary_prints_p_values_by_the_one_rule(capsys):
    _print_metrics({"test_accuracy_vs_chance": {"chance": 0.1, "p_value": 0.0, "test": "exact binomial test"},
                    "gain": {"mean": 0.5, "ci95": [0.4, 0.6], "n": 3, "p_value": 2 / 4001, "p_bound": True}})
    assert capsys.readouterr().out.splitlines() == ["test_accuracy_vs_chance: p < 1e-16  exact binomial test",
                                                    "            gain: 0.500 [0.400, 0.600]  p ≤ 0.0005 (floor)  n=3"]


def test_python_dash_m_poschan_runs_the_command_line():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "poschan", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "gap-study" in proc.stdout and "rank" in proc.stdout


def test_every_public_name_resolves_and_nothing_else_is_exported():
    import poschan

    # about 20 tools plus one function per study: a notebook's whole vocabulary, not every type it meets
    assert 15 <= len(poschan.__all__) <= 35
    for name in poschan.__all__:
        assert getattr(poschan, name) is not None, name
    with pytest.raises(AttributeError):
        poschan.no_such_name  # noqa: B018


def test_layers_of_a_segmentation_network_are_those_ablate_masks(tmp_path, capsys):
    from poschan.cli import main

    assert main(["layers", "tv:lraspp_mobilenet_v3_large", "--num-classes", "11", "--input-size", "64"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["backbone.16"].strip() == "(1, 960, 4, 4)"  # lraspp's default ablate/attack layer
    (tmp_path / "net.py").write_text("from torch import nn\n\n\ndef make():\n"
                                     "    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 11, 1))\n")
    assert main(["layers", f"{tmp_path / 'net.py'}:make", "--segmenter", "--input-size", "8"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["0"].strip() == "(1, 4, 8, 8)" and lines["1"].strip() == "(1, 11, 8, 8)"


def test_run_and_executor_flags_are_those_their_settings_declare():
    import dataclasses

    from poschan.cli import build_parser
    from poschan.experiments.settings import ExecutorSettings, PlaceSettings, RunSettings

    commands = build_parser()._subparsers._group_actions[0].choices
    for command, concerns in (("reproduce", (PlaceSettings, ExecutorSettings)), ("gap-study", (RunSettings,)),
                              ("ablate", (RunSettings,))):
        actions = {a.dest: a for a in commands[command]._actions}
        for field in (f for cls in concerns for f in dataclasses.fields(cls) if f.metadata["cli"]):
            assert actions[field.name].help == field.metadata["help"], (command, field.name)
            assert actions[field.name].default is None, (command, field.name)  # absent: the preset's (or default)
