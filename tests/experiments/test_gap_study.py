import json

import pytest

from poschan.cli import main
from poschan.config import build_config
from poschan.experiments.gap_study import Config
from poschan.measure.gap_study import evaluators, variants


def test_smoke_run_has_a_row_for_every_combination(tmp_path):
    assert main(["gap-study", "--preset", "smoke", "--no-progress", "--out", str(tmp_path / "g")]) == 0
    data = json.loads((tmp_path / "g" / "results.json").read_text())
    c = build_config(Config, "gap-study", "smoke")
    expected = set()
    for v in variants(c):
        for name in evaluators(c, v):
            perm, where = (v.permute, v.where) if name == "accuracy" else name.split("@")
            expected.add((v.task, v.head, perm, where if perm != "none" else "-", v.padding, v.grid))
    rows = data["metrics"]["rows"]
    assert {(r["task"], r["head"], r["permute"], r["where"], r["padding"], r["grid"]) for r in rows} == expected
    for r in rows:
        s = r["accuracy"]
        assert s["n"] == len(s["values"]) and 0 <= s["ci95"][0] <= s["mean"] <= s["ci95"][1] <= 1
        assert s["ci95"][0] < s["ci95"][1] and "test canvases" in s["method"]
        assert 0 < r["vs_chance"]["p_value"] <= 1
        assert r["chance"] == pytest.approx(1 / r["grid"] ** 2 if r["task"] == "location" else 0.1)
    by_key = {(r["task"], r["head"], r["permute"], r["where"], r["padding"], r["grid"]): r for r in rows}
    assert len(by_key) == len(rows)
    paired = data["metrics"]["comparisons"]
    key = ("task", "head", "permute", "where", "padding", "grid")
    assert {tuple(p[k] for k in key) for p in paired} == {k for k in by_key if k[2] != "none"}
    for p in paired:
        permuted = by_key[tuple(p[k] for k in key)]["accuracy"]
        plain = by_key[p["task"], p["head"], "none", "-", p["padding"], p["grid"]]["accuracy"]
        assert p["values"] == pytest.approx([a - b for a, b in zip(permuted["values"], plain["values"])])
        assert -1 <= p["ci95"][0] <= p["mean"] <= p["ci95"][1] <= 1 and p["ci95"][0] < p["ci95"][1]
        assert 0 < p["p_value"] <= 1 and p["method"]
    assert data["metrics"]["plateaus"] == []  # one epoch: no curve to judge
    for name in ("table.csv", "comparisons.csv", "curves.csv", "accuracy_by_padding.png", "permutation.png",
                 "learning_curves.png"):
        assert (tmp_path / "g" / name).exists()
    assert set(data["metrics"]["permute_meanings"]) == {"none", "test-only", "per-batch", "per-sample"}


@pytest.mark.parametrize("extra, match", [
    (["--paddings", "zeros,mirror"], "padding"),
    (["--seeds", ""], "seed"),
    (["--stage", "stage9"], "stage"),
    (["--permutes", "sometimes"], "permutation"),
    (["--design", "half"], "design"),
])
def test_bad_input(tmp_path, capsys, extra, match):
    assert main(["gap-study", "--preset", "smoke", *extra, "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err
    assert not (tmp_path / "g").exists() and not (tmp_path / "g.partial").exists()
