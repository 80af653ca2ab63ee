import json

import numpy as np
import pytest

from poschan.cli import main
from poschan.measure.budget_response import slope_weights
from poschan.report.claims import claims
from poschan.results import load_run

TINY = ["--preset", "smoke", "--budgets", "1,2", "--permutes", "per-batch", "--base-samples", "48", "--test-size", "24", "--width", "2",
        "--readout-train-size", "30", "--readout-test-size", "20", "--no-progress"]


def test_tiny_run_statistics_agree_with_their_cells(tmp_path):
    out = tmp_path / "b"
    assert main(["budget-response", *TINY, "--out", str(out)]) == 0
    m = json.loads((out / "results.json").read_text())["metrics"]
    cells = {c["cell"]: c for c in m["cells"]}
    assert [(c["multiple"], c["samples"]) for c in m["cells"]] == [(1, 48), (2, 96)]
    for s in m["scaling"]:  # each cell's statistic is its own GAP study's
        if s["metric"].startswith("accuracy"):
            row = next(r for r in cells[s["cell"]]["rows"] if (r["task"], r["permute"], r["where"]) ==
                       (s["task"], s["permute"], "pooled"))
            assert s["value"] == row["accuracy"]
    for t in m["trends"]:  # the slope of each seed is the slope through its cells' values (recomputed here)
        per_cell = [next(s for s in m["scaling"] if (s["metric"], s["task"], s["permute"], s["cell"]) ==
                         (t["metric"], t["task"], t["permute"], c)) for c in cells]
        if any(p["value"] is None for p in per_cell):
            continue
        values = np.array([p["value"]["values"] for p in per_cell])  # cells × seeds
        if t["metric"].startswith("share"):
            continue  # a share's per-seed values are ratios of each seed's own accuracies: checked by the unit tests
        assert t["slope_per_doubling"]["values"] == pytest.approx(slope_weights(t["samples"]) @ values)
    readouts = m["readouts"]
    assert {(r["trained"], r["permute"], r["target"], r["readout"]) for r in readouts if r["cell"] == "w2-x1"} == {
        (task, p, target, k) for task in ("location", "semantic") for p in ("none", "per-batch")
        for target in ("location", "semantic") for k in ("plain", "permuted_train", "sorted", "moments")}
    for r in readouts:
        assert r["chance"] == pytest.approx(1 / 9 if r["target"] == "location" else 0.1)
        assert 0 <= r["accuracy"]["ci95"][0] <= r["accuracy"]["mean"] <= r["accuracy"]["ci95"][1] <= 1
    for name in ("scaling.png", "backbone_readouts.png", "budget_curves.png", "trends.csv", "readouts.csv"):
        assert (out / name).stat().st_size > 0
    found = claims([load_run(out)])
    assert {c.run for c in found} == {"b", "b:w2-x1", "b:w2-x2"}
    assert sum(c.rule == "trend" for c in found) == len(m["trends"])
    assert all("96 training samples" in c.scope for c in found if c.run == "b:w2-x2")


@pytest.mark.parametrize("extra, match", [
    (["--budgets", "4"], "budgets"),
    (["--wide", "16x4"], "WIDTH@BUDGET"),
    (["--seeds", "0"], "two seeds"),
    (["--extra-seeds", "1"], "distinct"),
    (["--wide", "2@2"], "once"),
])
def test_bad_input(tmp_path, capsys, extra, match):
    assert main(["budget-response", *TINY, *extra, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()
