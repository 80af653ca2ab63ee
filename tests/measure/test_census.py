"""``census`` on a planted model whose channel 5 alone encodes the x position of the item on the canvas.

The model is tests/planted.py's (a user-model file): its channel 5 is |x| times the column coordinate. On a mean-filled canvas
(0 after normalisation) channel 5's pooled value is the item's mass times its x position, so a location readout can
tell the column (not the row: at most 1/3 of the 9 cells), channel order carries it, and flip ranks channel 5 first.
"""

import numpy as np
import pytest
from tests.planted import PLANTED as THIS
from tests.planted import POSITION

from poschan.data.sources import load_dataset
from poschan.locate.channel_maps import channel_maps
from poschan.measure.census import CensusModel, census
from poschan.measure.probe_study import ProbeCanvases, probe_study
from poschan.models.registry import build_model

CANVASES = ProbeCanvases("location", 3, None, "mean", train_size=270, test_size=135, batch_size=135)


@pytest.fixture(scope="module")
def planted():
    model = build_model(f"{THIS}:planted_backbone", 9, 1).eval()
    train, test = (load_dataset("fashion-mnist", split, limit=200) for split in ("train", "test"))
    twin = CensusModel("twin", model, twin_of="planted")  # the same weights: the pairing must give 0 exactly
    result = census([CensusModel("planted", model), twin], train, test, CANVASES, seeds=(0, 1, 2),
                    rank_set=train.subset(24), flip_input="canvas", top_n=4)
    return model, train, test, result


def test_census_finds_the_planted_channel(planted):
    model, train, test, result = planted
    row = next(r for r in result.rows if r["model"] == "planted")
    assert (row["layer"], row["stage"], row["depth"], row["channels"]) == ("backbone", "backbone", 1.0, 8)
    assert row["top_flip"][0] == POSITION
    chance = 1 / 9
    assert row["chance"] == pytest.approx(chance) and row["accuracy"]["ci95"][0] > chance
    assert row["accuracy"]["mean"] < 0.45  # the column alone: at most a third of the cells
    assert row["position_dims"] > 0 and row["position_percent"]["mean"] > 0
    lost = next(d for d in result.comparisons if d["name"] == "planted:backbone:plain_vs_permuted_test")
    assert lost["ci95"][0] > 0 and lost["p_value"] < 0.05
    # the readouts are probe_study's, on the same canvases
    probed = probe_study(model, ["backbone"], train, test, CANVASES, seeds=(0, 1, 2),
                         readouts=("accuracy", "accuracy_permuted_test", "accuracy_sorted", "accuracy_moments"))
    assert row["accuracy"] == probed.rows[0]["accuracy"]
    assert row["accuracy_sorted"] == probed.rows[0]["accuracy_sorted"]


def test_twin_comparison_pairs_the_same_canvases(planted):
    *_, result = planted
    (d,) = [d for d in result.comparisons if d["name"].endswith("trained_vs_random_init")]
    assert d["name"] == "planted:backbone:trained_vs_random_init" and (d["a"], d["b"]) == ("planted", "twin")
    assert d["mean"] == 0.0 and "discordant shares (0 and 0 of 135 test canvases)" in d["method"]
    metrics = result.metrics()
    assert metrics["last_layer"]["planted"]["accuracy"] == result.rows[0]["accuracy"]


def test_the_picture_of_the_planted_channel_is_a_left_to_right_ramp(planted):
    model, train, _, result = planted
    maps = channel_maps(model, "backbone", train.subset(24), result.rankings["planted"]["backbone"], k=1)
    assert maps.channels == [POSITION]
    cells = maps.cell_means[0]
    assert np.allclose(cells, cells[:1])  # every row alike: no vertical position
    assert np.all(np.diff(cells[0]) > 0)  # rising from left to right
    assert maps.position_share[0] > maps.random_position_share[0]


def test_twin_of_a_missing_model_is_refused():
    model = build_model(f"{THIS}:planted_backbone", 9, 1).eval()
    train = load_dataset("fashion-mnist", "train", limit=20)
    with pytest.raises(ValueError, match="twin of 'absent'"):
        census([CensusModel("t", model, twin_of="absent")], train, train,
               ProbeCanvases(train_size=18, test_size=9, batch_size=9), seeds=(0,), flip_input="canvas")
