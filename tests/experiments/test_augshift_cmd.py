import dataclasses
import json

import pytest
import torch

from poschan.cli import main
from poschan.config import build_config
from poschan.experiments import augshift
from poschan.experiments.augshift import METHODS, METRICS, Config

KEYS = set(METRICS)


def _check_stat(s):
    assert s["n"] == len(s["values"]) >= 1 and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    assert all(0.0 <= v <= 2.0 for v in s["values"])


def test_smoke_run_of_all_five_methods_meets_the_results_contract(tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["augshift", "--preset", "smoke", "--no-progress", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert {"experiment", "config", "metrics", "seeds", "env", "elapsed_s"} <= set(data)
    methods = data["metrics"]["methods"]
    assert set(methods) == set(METHODS)
    for stats in methods.values():
        assert set(stats) == KEYS
        for s in stats.values():
            _check_stat(s)
    curve = data["metrics"]["shift_curve"]
    assert curve["offset"] == [0, 1, 2, 3, 4, 5] and set(curve["accuracy"]) == set(METHODS)
    assert data["metrics"]["budget"]["views_per_step"] == {"baseline": 16, "shift-aug": 32, "augshift": 32,
                                                          "blurpool": 16, "augshift+blurpool": 32}
    for name in ("table.csv", "runs.csv", "shift_curve.csv", "methods.png", "accuracy_vs_shift.png"):
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
        assert set(r) == KEYS | {"lambda"}
        for s in (v for k, v in r.items() if k != "lambda"):
            _check_stat(s)
    assert rows[1] == {"lambda": 1.0, **metrics["methods"]["augshift"]}  # lambda 1: the same run, trained once
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["augshift_lam0", "augshift_lam1"]
    assert (out / "lambda_sweep.csv").is_file() and (out / "lambda_sweep.png").is_file()


def test_augshift_with_lambda_zero_is_shift_aug_and_blur_methods_are_blurred():
    c = Config(lam=0.0, latent="normalized-mse")
    assert repr(augshift.recipe(c, "augshift")) == repr(augshift.recipe(c, "shift-aug"))  # the loss settings
    assert repr(augshift.recipe(c, "augshift", 1.0)) != repr(augshift.recipe(c, "shift-aug"))
    assert augshift.recipe(c, "baseline").loss is None and not augshift.recipe(c, "baseline").blur
    assert augshift.recipe(c, "augshift+blurpool").blur and augshift.recipe(c, "augshift+blurpool").loss.lam == 0


def test_resumed_training_equals_an_uninterrupted_one(tmp_path):
    c = build_config(Config, "augshift", "smoke", overrides={"methods": ["augshift"], "epochs": 2, "test_size": 16})
    plan = augshift.prepare(c)
    first_epoch = dataclasses.replace(plan, config=dataclasses.replace(c, epochs=1))
    r = plan.methods["augshift"]
    augshift.train_run(first_epoch, r, 0, tmp_path / "resumed", progress=False)  # "interrupted" after epoch 1
    resumed, _ = augshift.train_run(plan, r, 0, tmp_path / "resumed", progress=False)
    fresh, _ = augshift.train_run(plan, r, 0, tmp_path / "fresh", progress=False)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert augshift.score(plan, resumed, 0) == augshift.score(plan, fresh, 0)


@pytest.mark.parametrize("flags, message", [
    (["--methods", "baseline,mixup"], "unknown method 'mixup'"),
    (["--lambda", "-1"], "lambda must be"),
    (["--seeds", ""], "at least one seed"),
    (["--methods", ""], "at least one method"),
    (["--crop", "40", "--canvas", "36"], "canvas"),
])
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, capsys, flags, message):
    out = tmp_path / "x"
    assert main(["augshift", "--preset", "smoke", "--no-progress", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("poschan: error:") and message in err[0]
    assert not out.exists() and not (tmp_path / "x.partial").exists()
