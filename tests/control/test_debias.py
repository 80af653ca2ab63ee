"""debias_study, save_debiased / load_debiased: known answers on a PLANTED classifier.

The planted model (no learned weights in its features): 12-px images hold one 2×2 blob of a positive (class 1) or a
negative (class 0) value on a zero background. Its layer ``features`` has 8 channels: 0-2 relu(x) and 3, 4, 6 relu(-x)
(the class evidence: their pooled means do not change when the blob moves inside the crop), 5 |x| times the column
coordinate in [-1, 1] (the x position of the blob), 7 |x| (read by nobody). The head reads
logit(1) - logit(0) = (p0 + p1 + p2) - (p3 + p4 + p6) + 6·p5 from the pooled features p, so a blob far enough left
(positive) or right (negative) in the crop flips the prediction: a shifted crop can change the class. Masking channel
5 leaves the class evidence alone: every crop and roll of an image is classified alike (consistency 1) and correctly
(accuracy 1); masking any other channel does not remove the position term.
"""

import json

import numpy as np
import pytest
import torch
from tests.contract import statistic_ok, violations
from tests.planted import POSITION, PlantedFeatures
from torch import nn

from poschan.control.debias import (
    Debiased,
    DebiasResult,
    debias_study,
    load_debiased,
    save_debiased,
    sidecar_path,
)
from poschan.data.shift_pairs import ShiftPairTransform
from poschan.errors import UserError
from poschan.locate.rank import rank_channels
from poschan.locate.ranking import ChannelRanking
from poschan.metrics.invariance import consistency
from poschan.taps import capture, mask_channels, pooled_features

SIDE, BLOB = 12, 2
SHIFT = ShiftPairTransform(SIDE, 16)  # shifts of -2..2 px: the blob (2 px from every edge) stays in the crop


class Planted(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = PlantedFeatures()
        self.head = nn.Linear(8, 2)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[1, [0, 1, 2]] = 1.0
            self.head.weight[0, [3, 4, 6]] = 1.0
            self.head.weight[1, POSITION] = 6.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def planted_data(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.zeros(n, 1, SIDE, SIDE)
    at = torch.randint(2, SIDE - BLOB - 1, (n, 2), generator=g)  # rows and columns 2..8: 2 px from every edge
    value = 0.5 + torch.rand(n, generator=g)
    for i in range(n):
        r, c = at[i].tolist()
        images[i, 0, r:r + BLOB, c:c + BLOB] = value[i] * (1 if labels[i] else -1)
    return images, labels


def planted_ranking() -> ChannelRanking:
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 9.0, 0.6, 0.7])
    return ChannelRanking(layer="features", method="planted", scores={"overall": scores})


@pytest.fixture(scope="module")
def setup():
    model = Planted().eval()
    images, labels = planted_data()
    return model, images, labels


@pytest.fixture(scope="module")
def labelled(setup) -> DebiasResult:
    model, images, labels = setup
    return debias_study(model, "features", images, labels, ranking=planted_ranking(), fractions=[1, 2], shift=SHIFT,
                        random_draws=8, passes=4, seed=0)


def row(result: DebiasResult, n: int, name: str) -> dict:
    return next(r for r in result.rows if r["n"] == n and r["set"] == name)


def test_the_planted_model_is_what_the_test_needs(setup):
    model, images, labels = setup
    with torch.no_grad():
        centre = model(SHIFT.view(SHIFT.place(images), SHIFT.centre(len(images)))).argmax(1)
    assert 0.7 < float((centre == labels).float().mean()) < 1.0  # some centre crops are read by position
    assert consistency(model, images, SHIFT, passes=4) < 0.97  # and some shifted crops change their class
    with mask_channels(model, "features", [POSITION]):
        assert consistency(model, images, SHIFT, passes=4) == 1.0


def test_masking_the_position_channel_makes_the_classifier_shift_invariant(labelled, setup):
    model, images, labels = setup
    ranked, random = row(labelled, 1, "ranked"), row(labelled, 1, "random")
    assert ranked["channels"] == [[POSITION]]
    assert ranked["consistency"]["mean"] == 1.0 and ranked["circular_consistency"]["mean"] == 1.0
    assert ranked["accuracy"]["mean"] == 1.0
    # the gain is the unmasked shortfall, recomputed here from the public metric with the same shifts
    clean = consistency(model, images, SHIFT, passes=4, seed=0)
    assert labelled.unmasked["consistency"]["mean"] == pytest.approx(clean)
    assert ranked["consistency_gain"]["mean"] == pytest.approx(1.0 - clean)
    assert ranked["consistency_gain"]["ci95"][0] > 0 and ranked["circular_consistency_gain"]["ci95"][0] > 0
    # random channels do not buy it: their gain is smaller, and ranked - random excludes 0
    assert random["consistency_gain"]["mean"] < ranked["consistency_gain"]["mean"]
    assert random["consistency_gain"]["ci95"][0] <= 0 or random["consistency_gain"]["ci95"][1] < ranked[
        "consistency_gain"]["mean"]
    versus = ranked["consistency_gain_vs_random"]
    assert versus["ci95"][0] > 0 and versus["p_value"] < 0.05 and versus["n"] == 8
    assert "random draws" in versus["method"] and versus in labelled.comparisons
    # accuracy: removing the position term repairs the position-read images (a negative cost); random channels
    # remove class evidence instead (at N = 2 their cost exceeds the ranked channels')
    assert ranked["cost"]["mean"] == pytest.approx(labelled.unmasked["accuracy"]["mean"] - 1.0)
    assert ranked["cost"]["ci95"][1] < 0
    assert row(labelled, 2, "random")["cost"]["mean"] > 0 > row(labelled, 2, "ranked")["cost"]["mean"]
    assert row(labelled, 2, "ranked")["cost_vs_random"]["ci95"][1] < 0


def test_every_statistic_keeps_the_contract(labelled):
    metrics = labelled.metrics()
    assert json.loads(json.dumps(metrics)) == metrics
    assert not violations(metrics)
    assert labelled.counts == [1, 2] and len(labelled.rows) == 4 and len(labelled.comparisons) == 6
    for r in labelled.rows:
        assert len(r["channels"]) == (1 if r["set"] == "ranked" else 8) and all(len(c) == r["n"] for c in r["channels"])
        assert statistic_ok(r["consistency"], 0, 1) and statistic_ok(r["consistency_gain"], -1, 1)
        assert "one trained model" in r["cost"]["method"]
    assert len({tuple(c) for c in row(labelled, 2, "random")["channels"]}) > 1  # the draws differ
    assert row(labelled, 2, "ranked")["channels"] == [[5, 7]]


def test_fidelity_without_labels_counts_the_changed_predictions(setup, labelled):
    model, images, _ = setup
    result = debias_study(model, "features", images, ranking=planted_ranking(), fractions=[1], shift=SHIFT,
                          random_draws=5, passes=4)
    ranked = row(result, 1, "ranked")
    assert result.score == "fidelity" and result.unmasked["fidelity"]["mean"] == 1.0
    # masked, every image is classified by its class: the prediction survives exactly where the unmasked one was right
    assert ranked["fidelity"]["mean"] == pytest.approx(labelled.unmasked["accuracy"]["mean"])
    assert ranked["cost"]["mean"] == pytest.approx(1 - labelled.unmasked["accuracy"]["mean"])
    assert ranked["consistency"] == row(labelled, 1, "ranked")["consistency"]  # the same shifts, labels unused


def test_the_flip_ranking_finds_the_planted_channel_and_feeds_the_study(setup):
    model, images, labels = setup
    ranking = rank_channels(model, "features", images, "flip")
    assert ranking.order()[0] == POSITION
    result = debias_study(model, "features", images, labels, ranking=ranking, fractions=(0.125,), shift=SHIFT,
                          random_draws=5, passes=2)
    assert result.ranking == "flip" and row(result, 1, "ranked")["channels"] == [[POSITION]]
    assert row(result, 1, "ranked")["consistency"]["mean"] == 1.0


def test_mean_mode_fills_the_recorded_means(setup):
    model, images, labels = setup
    result = debias_study(model, "features", images, labels, ranking=planted_ranking(), fractions=[1], mode="mean",
                          shift=SHIFT, random_draws=5, passes=2)
    centre = SHIFT.view(SHIFT.place(images), SHIFT.centre(len(images)))
    expected = model.features(centre).mean(dim=(0, 2, 3))  # recomputed by hand, not through the taps
    assert torch.allclose(result.means, expected, atol=1e-6)
    assert result.metrics()["means"] == pytest.approx(expected.tolist(), abs=1e-6)
    with mask_channels(model, "features", [POSITION], mode="mean", means=result.means), \
            capture(model, ["features"]) as seen:
        model(centre[:4])
    assert torch.equal(seen["features"][:, POSITION], torch.full_like(seen["features"][:, POSITION],
                                                                      float(result.means[POSITION])))
    assert torch.equal(seen["features"][:, 0], model.features(centre[:4])[:, 0])
    # a constant channel reads no position either: the same invariance as zeroing it
    assert row(result, 1, "ranked")["consistency"]["mean"] == 1.0


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_a_saved_debiased_model_reproduces_the_masked_outputs(tmp_path, setup, mode):
    model, images, _ = setup
    means = pooled_features(model, images, ["features"])["features"].mean(0) if mode == "mean" else None
    path = save_debiased(model, "features", [POSITION, 7], mode, means, tmp_path / "debiased.pt")
    side = json.loads(sidecar_path(path).read_text())
    assert (side["layer"], side["channels"], side["mode"]) == ("features", [5, 7], mode)
    state = torch.load(path, weights_only=True)  # a plain state dict of tensors
    assert set(state) == set(model.state_dict())
    fresh = Planted()
    with torch.no_grad():
        fresh.head.weight.normal_()  # other weights until loaded
    debiased = load_debiased(fresh, path)
    assert isinstance(debiased, Debiased)
    with torch.no_grad(), mask_channels(model, "features", [POSITION, 7], mode=mode, means=means):
        expected = model(images)
    with torch.no_grad():
        assert torch.equal(debiased(images), expected)
        assert not torch.equal(fresh(images), expected)  # the mask lives in the wrapper, not in the model


def test_bad_input_is_one_line(setup, tmp_path):
    model, images, labels = setup
    with pytest.raises(UserError, match="closest"):
        debias_study(model, "featurez", images, labels, ranking=planted_ranking(), fractions=[1])
    with pytest.raises(UserError, match="6 channels of layer .features.; this model.s .features. has 8"):
        debias_study(model, "features", images, labels, ranking=ChannelRanking(
            layer="features", method="x", scores={"overall": torch.ones(6)}), fractions=[1])
    with pytest.raises(UserError, match="outside 1..8"):
        debias_study(model, "features", images, labels, ranking=planted_ranking(), fractions=[9])
    with pytest.raises(UserError, match="each of the 8 channels"):
        debias_study(model, "features", images, labels, ranking=[5, 5, 1, 2, 3, 4, 6, 7], fractions=[1])
    with pytest.raises(UserError, match="needs the per-channel means"):
        save_debiased(model, "features", [5], "mean", None, tmp_path / "m.pt")
    save_debiased(model, "features", [5], "zero", None, tmp_path / "m.pt")
    sidecar_path(tmp_path / "m.pt").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(UserError, match="not a poschan debias sidecar"):
        load_debiased(Planted(), tmp_path / "m.pt")
    with pytest.raises(UserError, match="cannot read the debias sidecar"):
        load_debiased(Planted(), tmp_path / "missing.pt")
    np.testing.assert_array_equal(labels.numpy(), setup[2].numpy())  # inputs untouched
