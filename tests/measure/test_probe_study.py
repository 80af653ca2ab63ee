"""probe_study, the notebook way: the three readouts per test row, known answers and the typed result."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import poschan
from poschan.data.stream import TEST_SEED_OFFSET
from poschan.errors import UserError
from poschan.measure.probe_study import READOUTS, ProbeCanvases, draw, probe_layer
from poschan.measure.readout import fit_readout, permute_features
from poschan.runtime import seeded_generator


class Centroid(nn.Module):
    """A (B, 3, 1, 1) map: the |intensity|-weighted mean column and row of each canvas, and its mean |intensity|."""

    def __init__(self):
        super().__init__()
        self.out = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        w = x.abs().sum(1, keepdim=True)
        h, wd = x.shape[-2:]
        total = w.sum((2, 3), keepdim=True).clamp_min(1e-8)
        cols = (w * (torch.arange(wd, dtype=x.dtype) / wd).view(1, 1, 1, wd)).sum((2, 3), keepdim=True) / total
        rows = (w * (torch.arange(h, dtype=x.dtype) / h).view(1, 1, h, 1)).sum((2, 3), keepdim=True) / total
        return self.out(torch.cat([cols, rows, x.abs().mean((1, 2, 3), keepdim=True)], dim=1))


def test_probe_layer_outcomes_are_per_test_row_and_recomputed_by_hand():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(3, (90,), generator=g)
    x = torch.randn(90, 6, generator=g)
    x[:, 0] += 4 * y  # the class in channel 0 only
    out = probe_layer(x[:60], y[:60], x[60:], y[60:], seed=0, c=1.0, generator=seeded_generator(0, "layer"))
    plain = fit_readout(x[:60], y[:60], seed=0)
    by_hand = (plain.predict(x[60:].double().numpy()) == y[60:].numpy()).astype(float)
    assert np.array_equal(out["accuracy"], by_hand) and out["accuracy"].mean() > 0.9
    permuted = permute_features(x[60:], seeded_generator(0, "layer"))  # the generator's first draw: the test rows
    assert np.array_equal(out["accuracy_permuted_test"],
                          (plain.predict(permuted.double().numpy()) == y[60:].numpy()).astype(float))
    assert {v.shape for v in out.values()} == {(30,)} and set(np.unique(np.concatenate(list(out.values())))) <= {0, 1}


def test_coordinate_channels_read_location_and_lose_it_when_permuted():
    train, test = (poschan.load_dataset("fashion-mnist", split, limit=20) for split in ("train", "test"))
    canvases = ProbeCanvases(grid=2, train_size=120, test_size=60, batch_size=60)
    result = poschan.probe_study(Centroid(), ["out"], train, test, canvases, seeds=(0, 1))
    (row,) = result.rows
    assert row["layer"] == "out" and row["channels"] == 3 and row["chance"] == 1 / 4
    assert row["accuracy"]["mean"] > 0.95 and row["accuracy"]["n"] == 2 and "test canvases" in row["accuracy"]["method"]
    assert set(READOUTS) <= set(row)
    assert 0 <= row["vs_chance"]["p_value"] <= 1
    assert [c["name"] for c in result.comparisons] == ["out:plain_vs_permuted_test", "out:plain_vs_permuted_train",
                                                       "out:plain_vs_sorted", "out:plain_vs_moments"]
    assert [(r["seed"], r["layer"]) for r in result.per_seed] == [(0, "out"), (1, "out")]
    assert result.metrics() == {"layers": result.rows, "comparisons": result.comparisons, "n_train": 120,
                                "n_test": 60}


def test_bad_sizes_are_one_line_errors():
    images = poschan.load_dataset("fashion-mnist", "test", limit=4)
    with pytest.raises(UserError, match="test_size must be >= 1"):
        poschan.probe_study(Centroid(), ["out"], images, images, ProbeCanvases(test_size=0))


class PlantedCode(nn.Module):
    """A (B, C, 1, 1) map that finds the brightest cell of a ``grid``×``grid`` canvas and plants it in the pooled
    vector: ``order``, as the one channel that is 1 (every vector holds the same values: position lives only in
    channel order); ``sum``, as the level of all channels, their order random (position lives only in the sum)."""

    def __init__(self, grid: int, code: str):
        super().__init__()
        self.grid, self.code, self.out = grid, code, nn.Identity()
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, x: Tensor) -> Tensor:
        cell = F.adaptive_avg_pool2d(x.abs().sum(1, keepdim=True), self.grid).flatten(1).argmax(1)
        cells = self.grid * self.grid
        if self.code == "order":
            return self.out(F.one_hot(cell, cells).to(x.dtype)[:, :, None, None])
        spread = torch.rand(len(x), cells, generator=self.generator) * 0.1  # random values, hence a random order
        return self.out(((cell[:, None] + 1).to(x.dtype) + spread)[:, :, None, None])


@pytest.mark.parametrize("code", ["order", "sum"])
def test_order_free_readouts_read_position_kept_in_the_sum_and_not_position_kept_in_channel_order(code):
    train, test = (poschan.load_dataset("fashion-mnist", split, limit=30) for split in ("train", "test"))
    canvases = ProbeCanvases(grid=2, train_size=160, test_size=80, batch_size=80)
    readouts = ("accuracy", "accuracy_sorted", "accuracy_moments")
    result = poschan.probe_study(PlantedCode(2, code), ["out"], train, test, canvases, seeds=(0, 1),
                                 readouts=readouts)
    (row,) = result.rows
    assert row["accuracy"]["mean"] > 0.9  # the plain readout reads either code
    if code == "sum":
        assert row["accuracy_sorted"]["ci95"][0] > 0.9 and row["accuracy_moments"]["ci95"][0] > 0.9
    else:  # every sorted vector (and its moments) is the same: the readout predicts one class, its share of the test
        seeds = [s + TEST_SEED_OFFSET for s in (0, 1)]  # the test canvases probe_study draws, recomputed here
        labels = [torch.cat([y for _, y in canvases.stream(draw(test, 80, s), s).epoch(0)]) for s in seeds]
        for key in readouts[1:]:
            per_seed = [r[key] for r in result.per_seed]
            assert all(any(abs(a - float((y == k).double().mean())) < 1e-12 for k in range(4))
                       for a, y in zip(per_seed, labels)), key
            assert row[key]["ci95"][0] <= row["chance"] <= row[key]["ci95"][1]
    assert [c["name"] for c in result.comparisons] == ["out:plain_vs_sorted", "out:plain_vs_moments"]


def test_order_free_codes_ignore_channel_order_and_unknown_readouts_are_refused():
    from poschan.measure.readout import order_free_code

    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    shuffled = x[:, torch.randperm(7, generator=torch.Generator().manual_seed(1))]
    assert torch.equal(order_free_code(x, "sorted"), order_free_code(shuffled, "sorted"))
    moments = order_free_code(x, "moments")
    assert torch.allclose(moments, order_free_code(shuffled, "moments"))
    assert torch.allclose(moments[:, 0], x.double().mean(1)) and torch.allclose(moments[:, 5], x.double().max(1).values)
    with pytest.raises(UserError, match="unknown order-free code 'median'"):
        order_free_code(x, "median")
    with pytest.raises(UserError, match="including 'accuracy'"):
        poschan.probe_study(PlantedCode(2, "sum"), ["out"], None, None, readouts=("accuracy_sorted",))
