"""The AugShift comparison as a library call: its recipes, resumed training, per-image outcomes with their
intervals, and the same numbers as the command line."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import poschan
from poschan.cli import main
from poschan.config import build_config
from poschan.control import augshift_study as study
from poschan.experiments.augshift import Config
from poschan.metrics.invariance import latent_ratio
from poschan.stats import estimate, proportion


def test_augshift_with_lambda_zero_is_shift_aug_and_blur_methods_are_blurred():
    c = Config(lam=0.0, latent="normalized-mse")
    assert study.recipe(c, "augshift") == study.recipe(c, "shift-aug")  # one recipe: trained once
    assert study.recipe(c, "augshift", 1.0) != study.recipe(c, "shift-aug")
    assert study.recipe(c, "baseline").loss is None and not study.recipe(c, "baseline").blur
    assert study.recipe(c, "augshift+blurpool").blur and study.recipe(c, "augshift+blurpool").loss.lam == 0


def test_resumed_training_equals_an_uninterrupted_one(tmp_path):
    c = build_config(Config, "augshift", "smoke", overrides={"methods": ["augshift"], "epochs": 2, "test_size": 16})
    plan = study.plan_augshift(c)
    first_epoch = study.plan_augshift(dataclasses.replace(c, epochs=1))
    r = plan.methods["augshift"]
    study.train_run(first_epoch, r, 0, tmp_path / "resumed", progress=False)  # "interrupted" after epoch 1
    resumed, history = study.train_run(plan, r, 0, tmp_path / "resumed", progress=False)
    fresh, _ = study.train_run(plan, r, 0, tmp_path / "fresh", progress=False)
    assert [h["epoch"] for h in history] == [1, 2]
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    a, b = study.score(plan, resumed, 0), study.score(plan, fresh, 0)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_per_image_outcomes_recomputed_and_their_intervals():
    c = build_config(Config, "augshift", "smoke", overrides={"methods": ["baseline"], "test_size": 24})
    plan = study.plan_augshift(c)
    torch.manual_seed(0)
    model = plan.make_model(False).eval()
    outcomes = study.score(plan, model, 0)
    test, shift = plan.data.test_set, plan.shift
    with torch.no_grad():  # the centre crop, classified here independently of poschan.metrics
        centre = shift.view(shift.place(test.images), shift.centre(len(test)))
        hits = (model(centre).argmax(1) == test.labels).double().numpy()
    assert np.array_equal(outcomes["accuracy"], hits) and outcomes["diagonal_accuracy"].shape == (24, 6)
    for key in ("consistency", "circular_consistency", "fidelity"):  # shares of each image's test_passes pairs
        assert np.allclose(outcomes[key] * c.test_passes, np.round(outcomes[key] * c.test_passes))
    assert np.all(outcomes["fidelity"] <= outcomes["consistency"])
    two = [outcomes, study.score(plan, model, 1)]  # two "seeds"
    s = study.metric_estimate("accuracy", [o["accuracy"] for o in two], c.test_passes)
    assert s == proportion([o["accuracy"] for o in two], unit="training seeds", item="test images")
    assert s["values"] == pytest.approx([o["accuracy"].mean() for o in two])
    rows = [o["latent_distance"] for o in two]
    d = study.metric_estimate("latent_distance", rows, c.test_passes)
    assert d["values"] == pytest.approx([r[:, 0].sum() / r[:, 1].sum() for r in rows])  # a ratio of sums
    assert d == estimate(rows, latent_ratio, bounds=(0, 4), unit="training seeds",
                         item="test images (each over its 1 shift pair)")
    assert 0 <= d["ci95"][0] <= d["mean"] <= d["ci95"][1] <= 4 and d["ci95"][0] < d["ci95"][1]


def test_library_call_gives_the_numbers_of_the_command(tmp_path):
    """`poschan.augshift_comparison(config, work)` in a notebook and `poschan augshift` agree on every metric."""
    methods = "baseline,shift-aug,augshift"
    c = build_config(Config, "augshift", "smoke", overrides={"methods": methods, "lambdas": "0,1"})
    result = poschan.augshift_comparison(c, tmp_path / "lib")
    argv = ["--methods", methods, "--lambdas", "0,1"]
    assert main(["augshift", "--preset", "smoke", "--no-progress", *argv, "--out", str(tmp_path / "cli")]) == 0
    metrics = json.loads((tmp_path / "cli" / "results.json").read_text())["metrics"]
    assert json.loads(json.dumps(result.metrics())) == metrics
    assert result.comparisons and [r["lambda"] for r in result.lambda_sweep] == [0.0, 1.0]
