import csv
import json

import numpy as np
import pytest

from poschan.cli import main
from poschan.control.augshift_study import METHODS, METRICS, run_name

KEYS = set(METRICS)


def _check_stat(s, lo=0.0, hi=1.0):
    """The results contract: n values, their mean, a non-empty interval inside [lo, hi] around it, a method."""
    assert s["n"] == len(s["values"]) >= 1 and s["mean"] == pytest.approx(np.mean(s["values"]))
    assert lo <= s["ci95"][0] <= s["mean"] <= s["ci95"][1] <= hi and s["ci95"][0] < s["ci95"][1]
    assert all(lo <= v <= hi for v in s["values"]) and "test images" in s["method"]


def _check_metrics(stats):
    assert set(stats) == KEYS
    for key, s in stats.items():
        _check_stat(s, 0.0, 4.0 if key == "latent_distance" else 1.0)


def _test_accuracy(path):
    """The centre-crop test accuracy that training logged (poschan.metrics.classification, another code path)."""
    with open(path) as fh:
        return float(list(csv.DictReader(fh))[-1]["test_accuracy"])


def test_smoke_run_of_all_five_methods_meets_the_results_contract(tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["augshift", "--preset", "smoke", "--no-progress", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert {"experiment", "config", "metrics", "seeds", "env", "elapsed_s"} <= set(data)
    methods = data["metrics"]["methods"]
    assert set(methods) == set(METHODS)
    for m, stats in methods.items():
        _check_metrics(stats)
        run = run_name(m, 1.0)
        assert stats["accuracy"]["values"] == pytest.approx([_test_accuracy(out / run / "seed0" / "metrics.csv")])
    curve = data["metrics"]["shift_curve"]
    assert curve["offset"] == [0, 1, 2, 3, 4, 5] and set(curve["accuracy"]) == set(METHODS)
    for m, points in curve["accuracy"].items():
        for s in points:
            _check_stat(s)
        assert points[curve["centre_offset"]] == methods[m]["accuracy"]  # the same outcomes, the same interval
    pairs = [("augshift", "shift_aug")] + [(a, "baseline") for a in ("augshift", "shift_aug", "blurpool",
                                                                      "augshift+blurpool")]
    assert {c["name"] for c in data["metrics"]["comparisons"]} == {f"{a}_vs_{b}_{k}" for a, b in pairs for k in METRICS}
    assert data["metrics"]["budget"]["views_per_step"] == {"baseline": 16, "shift-aug": 32, "augshift": 32,
                                                          "blurpool": 16, "augshift+blurpool": 32}
    for name in ("table.csv", "runs.csv", "shift_curve.csv", "comparisons.csv", "methods.png", "accuracy_vs_shift.png"):
        assert (out / name).is_file()
    assert (out / "augshift+blurpool_lam1" / "seed0" / "checkpoint.pt").is_file()
    assert "augshift+blurpool" in capsys.readouterr().out


def test_lambda_sweep_reuses_equal_runs(tmp_path):
    out = tmp_path / "s"
    assert main(["augshift", "--preset", "smoke", "--no-progress", "--methods", "augshift", "--lambda", "1",
                 "--lambdas", "0,1", "--out", str(out)]) == 0
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    rows = metrics["lambda_sweep"]
    assert [r["lambda"] for r in rows] == [0.0, 1.0]
    for r in rows:
        _check_metrics({k: v for k, v in r.items() if k != "lambda"})
    assert rows[1] == {"lambda": 1.0, **metrics["methods"]["augshift"]}  # lambda 1: the same run, trained once
    assert all(s["n"] == 1 for s in metrics["methods"]["augshift"].values())  # and counted once (one seed)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["augshift_lam0", "augshift_lam1"]
    assert metrics["comparisons"] == [] and not (out / "comparisons.csv").exists()  # nothing to compare with
    assert (out / "lambda_sweep.csv").is_file() and (out / "lambda_sweep.png").is_file()


def test_comparisons_are_paired_differences_of_the_methods(tmp_path):
    out = tmp_path / "c"
    assert main(["augshift", "--preset", "smoke", "--no-progress", "--methods", "baseline,shift-aug,augshift",
                 "--seeds", "0,1", "--out", str(out)]) == 0
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    methods, comparisons = metrics["methods"], metrics["comparisons"]
    assert len(comparisons) == 3 * len(METRICS)  # augshift − shift-aug, augshift − baseline, shift-aug − baseline
    for cmp in comparisons:
        assert {"name", "a", "b", "question", "mean", "ci95", "n", "values", "method", "p_value", "test"} <= set(cmp)
        key = cmp["name"].split(f"_vs_{cmp['b'].replace('-', '_')}_")[1]
        a, b = methods[cmp["a"]][key], methods[cmp["b"]][key]
        assert cmp["values"] == pytest.approx([x - y for x, y in zip(a["values"], b["values"])])  # seed by seed
        assert cmp["mean"] == pytest.approx(a["mean"] - b["mean"]) and cmp["n"] == 2
        span = 4.0 if key == "latent_distance" else 1.0
        assert -span <= cmp["ci95"][0] <= cmp["mean"] <= cmp["ci95"][1] <= span
        assert cmp["ci95"][0] < cmp["ci95"][1] and 0 <= cmp["p_value"] <= 1


@pytest.mark.parametrize("flags, message", [
    (["--methods", "baseline,mixup"], "unknown method 'mixup'"),
    (["--lambda", "-1"], "lambda must be"),
    (["--seeds", ""], "seeds must be"),
    (["--methods", ""], "at least one method"),
    (["--crop", "40", "--canvas", "36"], "canvas"),
])
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, capsys, flags, message):
    out = tmp_path / "x"
    assert main(["augshift", "--preset", "smoke", "--no-progress", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("poschan: error:") and message in err[0]
    assert not out.exists() and not (tmp_path / "x.partial").exists()
