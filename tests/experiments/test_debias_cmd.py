"""`poschan debias`: the results contract on a planted classifier, its numbers recomputed, and bad input.

The model is tests/planted.py's (``--model tests/planted.py:planted_backbone``): its channel 5 is |x| times the column
coordinate (the x position of the image in the view). The saved head reads channel 5 alone (class 0 gets +6·p5, class 1 −6·p5 + 0.001), so
every prediction is made by position, and with channel 5 masked only the bias is left: class 1 for every image.
"""

import csv
import json
from pathlib import Path

import pytest
import torch
from tests.contract import violations
from tests.planted import PLANTED as THIS
from tests.planted import POSITION

from poschan.cli import main
from poschan.data.shift_pairs import ShiftPairTransform
from poschan.data.sources import load_dataset
from poschan.locate.ranking import ChannelRanking
from poschan.metrics.invariance import circular_consistency, consistency
from poschan.models.registry import build_model
from poschan.stats import proportion
from poschan.taps import mask_channels

RESULTS = Path(__file__).resolve().parents[2] / "results"


def planted_weights(folder: Path, classes: int = 10) -> Path:
    model = build_model(f"{THIS}:planted_backbone", classes, 1)
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.zero_()
        model.head.fc.weight[0, POSITION], model.head.fc.weight[1, POSITION] = 6.0, -6.0
        model.head.fc.bias[1] = 1e-3  # the tie breaker once channel 5 is masked
    path = folder / f"checkpoint{classes}.pt"
    torch.save({"model": model.state_dict(), "epoch": 1}, path)  # as `poschan train` writes it
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return planted_weights(tmp_path_factory.mktemp("weights"))


def planted_args(weights: Path) -> list[str]:
    return ["--model", f"{THIS}:planted_backbone", "--weights", str(weights), "--layer", "backbone"]


def test_smoke_run_recomputed(tmp_path, weights):
    out = tmp_path / "run"
    assert main(["debias", *planted_args(weights), "--preset", "smoke", "--no-progress", "--out", str(out),
                "--save", "10%"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert set(data) >= {"experiment", "config", "metrics", "seeds", "env", "elapsed_s"}
    assert data["experiment"] == "debias" and data["config"]["mode"] == "zero"
    m = data["metrics"]
    assert not violations(m)
    assert (m["layer"], m["channels"], m["counts"], m["score"], m["ranking"]) == ("backbone", 8, [1, 2], "accuracy",
                                                                                   "flip")
    assert (m["rank_split"], m["eval_split"], m["rank_images"], m["protocol"]["images"]) == ("train", "test", 12, 16)
    ranking = ChannelRanking.load(out / "ranking.json")
    assert ranking.order()[0] == POSITION and ranking.data["eval_split"] == "test"

    # recomputed independently: the model loaded from the same file, the public metrics, the same shifts (seed 0)
    model = build_model(f"{THIS}:planted_backbone", 10, 1, weights=str(weights)).eval()
    test = load_dataset("fashion-mnist", "test", limit=16)
    shift = ShiftPairTransform(28)
    clean = consistency(model, test.images, shift, passes=1, seed=0)
    assert m["unmasked"]["consistency"]["mean"] == pytest.approx(clean) and clean < 1
    ranked = next(r for r in m["rows"] if r["set"] == "ranked" and r["n"] == 1)
    assert ranked["channels"] == [[POSITION]]
    with mask_channels(model, "backbone", [POSITION]):
        assert consistency(model, test.images, shift, passes=1, seed=0) == 1.0
        assert circular_consistency(model, test.images, shift, passes=1, seed=0) == 1.0
    assert ranked["consistency"]["mean"] == 1.0 and ranked["consistency_gain"]["mean"] == pytest.approx(1 - clean)
    # masked, only the bias is left and every image is class 1: the accuracy is the share of class-1 images
    class1 = (test.labels == 1).double().numpy()
    assert ranked["accuracy"] == {**proportion([class1], unit="ranking seeds", item="images (centre crop)"),
                                  "method": ranked["accuracy"]["method"]}
    assert ranked["accuracy"]["mean"] == 0.25  # 4 of the first 16 test images are trousers

    with open(out / "table.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["n"]), r["set"]) for r in rows] == [(1, "ranked"), (1, "random"), (2, "ranked"), (2, "random")]
    assert float(rows[0]["consistency_gain"]) == pytest.approx(ranked["consistency_gain"]["mean"])
    assert rows[0]["consistency_gain_vs_random_p"] and not rows[1]["consistency_gain_vs_random_p"]
    with open(out / "comparisons.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 6 == len(m["comparisons"])
    assert (out / "tradeoff.png").is_file() and (out / "config.yaml").is_file()

    # the saved debiased model loads as a state dict and, with its sidecar, gives the masked outputs
    from poschan.control.debias import load_debiased

    assert m["saved"]["channels"] == [POSITION]
    assert set(torch.load(out / "debiased.pt", weights_only=True)) == set(model.state_dict())
    debiased = load_debiased(build_model(f"{THIS}:planted_backbone", 10, 1), out / "debiased.pt")
    with torch.no_grad(), mask_channels(model, "backbone", [POSITION]):
        assert torch.equal(debiased(test.images), model(test.images))


def test_given_ranking_and_fidelity(tmp_path, weights):
    first = tmp_path / "first"
    assert main(["debias", *planted_args(weights), "--preset", "smoke", "--no-progress", "--out", str(first)]) == 0
    out = tmp_path / "given"
    assert main(["debias", *planted_args(weights), "--preset", "smoke", "--no-progress", "--out", str(out),
                "--ranking", str(first / "ranking.json"), "--score", "fidelity", "--mode", "mean", "--n", "1"]) == 0
    m = json.loads((out / "results.json").read_text())["metrics"]
    assert (m["score"], m["mode"], m["rank_split"], m["ranking_source"]) == ("fidelity", "mean", None,
                                                                             str(first / "ranking.json"))
    assert m["unmasked"]["fidelity"]["mean"] == 1.0 and len(m["means"]) == 8 and not violations(m)


@pytest.mark.parametrize("extra, match", [
    (["--layer", "bakbone"], "closest: backbone"),
    (["--n", "200%"], "outside 1..8"),
    (["--mode", "middle"], "invalid choice: 'middle'"),
    (["--rank-split", "test"], "both 'test'"),
    (["--random-draws", "3"], "random_draws must be >= 5"),
    (["--save", "50%"], "--save 50% names an N that --n does not study"),
    (["--score", "accuracy", "--weights", "TWO_CLASSES", "--num-classes", "2"],
     "--score accuracy needs a classifier of the data's classes (10 of fashion-mnist; the model predicts 2)"),
    (["--method", "flop"], "unknown method 'flop'"),
    (["--rank-size", "2"], "at least 3 images"),
    (["--ranking", "OTHER_RANKING"], "is for 6 channels of layer 'backbone'"),
    (["--weights", "MISSING"], "cannot read weights file"),
    (["--retrained", "AUGSHIFT"], "measured data, crop, canvas, largest roll and score fashion-mnist, 32, 37, 5, "
                                  "accuracy; this run: fashion-mnist, 28, 32, 4, accuracy"),
    (["--retrained", "DEBIAS"], "is a debias run; it must be a `poschan augshift` run"),
    (["--retrained", "MISSING"], "is not a finished poschan run"),
])
def test_bad_input_exit_2_one_line_no_output(tmp_path, capsys, weights, extra, match):
    other = ChannelRanking(layer="backbone", method="flip", scores={"overall": torch.arange(6.0)})
    other.save(tmp_path / "other.json")
    given = {"OTHER_RANKING": str(tmp_path / "other.json"), "MISSING": str(tmp_path / "no.pt"),
             "AUGSHIFT": str(RESULTS / "augshift"), "DEBIAS": str(RESULTS / "debias-fmnist")}
    if "TWO_CLASSES" in extra:
        given["TWO_CLASSES"] = str(planted_weights(tmp_path, 2))
    extra = [given.get(e, e) for e in extra]
    out = tmp_path / "out"
    assert main(["debias", *planted_args(weights), "--preset", "smoke", "--no-progress", *extra, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("poschan: error:") and match in err, err
    assert not captured.out
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_retraining_points_of_an_augshift_run_join_the_trade_off(tmp_path, weights):
    """--retrained: each retraining method's gain and cost over plain training, read back against the AugShift
    run's own comparisons table (cost = baseline − method accuracy)."""
    out = tmp_path / "run"
    assert main(["debias", *planted_args(weights), "--preset", "smoke", "--no-progress", "--crop", "32",
                 "--retrained", str(RESULTS / "augshift"), "--out", str(out)]) == 0
    points = json.loads((out / "results.json").read_text())["metrics"]["retrained"]
    with (RESULTS / "augshift" / "comparisons.csv").open() as fh:
        table = {row["name"]: row for row in csv.DictReader(fh)}
    versus = sorted(name.removesuffix("_accuracy") for name in table if name.endswith("_vs_baseline_accuracy"))
    assert versus and sorted(f"{p['method']}_vs_baseline".replace("-", "_") for p in points) == versus
    for p in points:
        key = f"{p['method']}_vs_baseline_".replace("-", "_")
        accuracy, gain = table[key + "accuracy"], table[key + "consistency"]
        assert p["cost"]["mean"] == pytest.approx(-float(accuracy["difference"]))
        assert p["cost"]["ci95"] == pytest.approx([-float(accuracy["hi"]), -float(accuracy["lo"])])
        assert p["consistency_gain"]["mean"] == pytest.approx(float(gain["difference"]))
        assert p["cost"]["p_value"] == pytest.approx(float(accuracy["p_value"]))
    with (out / "retrained.csv").open() as fh:
        written = list(csv.DictReader(fh))
    assert [(r["method"], float(r["cost"])) for r in written] == [(p["method"], p["cost"]["mean"]) for p in points]
