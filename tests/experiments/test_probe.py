"""`poschan probe`: known answers of the pooled-feature readout, the CLI contract and its bad input.

This file doubles as the user-model file (``--model THIS_FILE.py:FACTORY``) of the known-answer nets below.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.contract import statistic_ok
from torch import Tensor, nn

from poschan.cli import main
from poschan.data.canvas import paste_in_grid
from poschan.data.sources import load_dataset
from poschan.experiments.probe import Config, split_sets
from poschan.models.registry import build_model
from poschan.stats import proportion
from poschan.taps import pooled_features, resolve_layers

THIS = Path(__file__).as_posix()
CHANCE = 1 / 9  # grid 3
SEEDS = ["--seeds", "0,1,2"]


def shift_free_net() -> nn.Module:
    """Stride-1 convs: with circular padding the pooled features cannot depend on where the image is."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())


def _centroid(x: Tensor) -> tuple[Tensor, Tensor]:
    """The |intensity|-weighted mean column and row of each canvas, in [0, 1), shapes (B, 1, 1, 1)."""
    w = x.abs().sum(1, keepdim=True)
    h, wd = x.shape[-2:]
    rows = (torch.arange(h, dtype=x.dtype) / h).view(1, 1, h, 1)
    cols = (torch.arange(wd, dtype=x.dtype) / wd).view(1, 1, 1, wd)
    total = w.sum((2, 3), keepdim=True).clamp_min(1e-8)
    return (w * cols).sum((2, 3), keepdim=True) / total, (w * rows).sum((2, 3), keepdim=True) / total


class CoordinateNet(nn.Module):
    """A (B, 3, 1, 1) map: pooled features = (|intensity|-weighted mean x, mean y, mean |intensity|)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([*_centroid(x), x.abs().mean((1, 2, 3), keepdim=True)], dim=1)


def coordinate_net() -> nn.Module:
    return CoordinateNet()


class OneChannelNet(nn.Module):
    """A (B, 64, 1, 1) map: channel 0 = the 2x2-grid cell of the canvas' intensity centroid (one scalar, 4 levels);
    channels 1..63 = a linear mix of position-free pooled content (stride-1 convs, circular padding once built
    with --padding circular)."""

    def __init__(self):
        super().__init__()
        self.content = shift_free_net()
        self.mix = nn.Conv2d(8, 63, 1)

    def forward(self, x: Tensor) -> Tensor:
        cx, cy = _centroid(x)
        cell = 2 * torch.floor(cy * 2) + torch.floor(cx * 2)
        return torch.cat([cell, self.mix(self.content(x).mean((2, 3), keepdim=True))], dim=1)


def one_channel_net() -> nn.Module:
    return OneChannelNet()


def probe(tmp_path: Path, name: str, *args: str) -> dict:
    out = tmp_path / name
    assert main(["probe", "--preset", "smoke", "--no-progress", "--out", str(out), *args]) == 0
    return json.loads((out / "results.json").read_text())


def test_circular_stride1_net_has_identical_pooled_features_in_every_cell():
    image = load_dataset("fashion-mnist", "test", limit=1).images  # (1, 1, 28, 28)
    canvases = paste_in_grid(image.expand(9, -1, -1, -1), torch.arange(9), 3, torch.zeros(9, 1, 84, 84))
    for padding, equal in (("circular", True), ("zeros", False)):
        model = build_model(f"{THIS}:shift_free_net", 9, 1, padding=padding).eval()
        f = pooled_features(model, canvases, ["backbone"])["backbone"]
        assert torch.allclose(f, f[:1].expand_as(f), atol=1e-5) is equal, padding


def test_circular_stride1_net_reads_location_at_chance_and_zero_padding_does_not(tmp_path):
    args = ["--model", f"{THIS}:shift_free_net", "--layers", "backbone", "--background", "mean", "--grid", "3",
            "--train-size", "270", "--test-size", "270", *SEEDS]
    circular = probe(tmp_path, "circ", *args, "--padding", "circular")["metrics"]["layers"][0]["accuracy"]
    lo, hi = circular["ci95"]
    assert circular["n"] == 3 and lo <= CHANCE <= hi, circular
    zeros = probe(tmp_path, "zeros", *args, "--padding", "zeros")["metrics"]["layers"][0]["accuracy"]
    assert zeros["ci95"][0] > 2 * CHANCE, zeros  # the same net sees position through its zero padding


def test_explicit_coordinate_channels_read_location_perfectly(tmp_path):
    m = probe(tmp_path, "coord", "--model", f"{THIS}:coordinate_net", "--layers", "backbone", "--grid", "3",
              "--train-size", "200", "--test-size", "200", *SEEDS)["metrics"]
    assert min(m["layers"][0]["accuracy"]["values"]) >= 0.99


def test_position_in_one_channel_is_destroyed_by_permuting_the_test_channels(tmp_path):
    # grid 2: a linear readout of ONE scalar separates 4 ordered levels well (9 would need huge weights)
    m = probe(tmp_path, "one", "--model", f"{THIS}:one_channel_net", "--padding", "circular", "--layers", "backbone",
              "--grid", "2", "--train-size", "300", "--test-size", "300", *SEEDS)["metrics"]
    row = m["layers"][0]
    assert row["channels"] == 64 and row["chance"] == 1 / 4
    assert row["accuracy"]["mean"] >= 0.95, row["accuracy"]
    assert abs(row["accuracy_permuted_test"]["mean"] - 1 / 4) < 0.05, row["accuracy_permuted_test"]
    (cmp,) = [d for d in m["comparisons"] if d["name"] == "backbone:plain_vs_permuted_test"]
    assert cmp["ci95"][0] > 0.5 and cmp["p_value"] < 0.05  # the loss of the permutation excludes 0 by far


def test_the_order_free_readouts_run_from_the_command_line_with_their_comparisons(tmp_path):
    m = probe(tmp_path, "free", "--model", f"{THIS}:coordinate_net", "--layers", "backbone", "--grid", "3",
              "--train-size", "200", "--test-size", "200", "--readouts", "plain,sorted,moments", *SEEDS)["metrics"]
    (row,) = m["layers"]
    assert {"accuracy", "accuracy_sorted", "accuracy_moments"} <= set(row) and "accuracy_permuted_test" not in row
    assert [c["name"] for c in m["comparisons"]] == ["backbone:plain_vs_sorted", "backbone:plain_vs_moments"]
    for key in ("accuracy_sorted", "accuracy_moments"):  # recomputed: plain minus order-free, on the same canvases
        (cmp,) = [c for c in m["comparisons"] if c["name"].endswith(key.removeprefix("accuracy_"))]
        assert cmp["mean"] == pytest.approx(row["accuracy"]["mean"] - row[key]["mean"])
    assert (tmp_path / "free" / "probe.png").is_file()


def test_smoke_efficientnet_lite0_pretrained_contract(tmp_path):
    layers = ["stage2", "backbone.net._blocks.10", "backbone"]
    data = probe(tmp_path, "lite0", "--model", "efficientnet-lite0", "--pretrained", "--task", "location",
                 "--layers", ",".join(layers))
    assert set(data) >= {"experiment", "config", "metrics", "seeds", "env", "elapsed_s"}
    assert data["experiment"] == "probe" and data["config"]["pretrained"] is True
    m = data["metrics"]
    assert [r["layer"] for r in m["layers"]] == ["backbone.net._blocks.4", "backbone.net._blocks.10", "backbone"]
    assert m["n_train"] == data["config"]["train_size"] and m["n_test"] == data["config"]["test_size"]
    with open(tmp_path / "lite0" / "per_seed.csv") as fh:
        per_seed = {r["layer"]: r for r in csv.DictReader(fh)}
    n = m["n_test"]
    for row in m["layers"]:
        assert row["chance"] == pytest.approx(CHANCE)
        for key in ("accuracy", "accuracy_permuted_test", "accuracy_permuted_train", "accuracy_sorted",
                    "accuracy_moments"):
            stat = row[key]
            assert statistic_ok(stat, 0, 1, "test canvases") and stat["values"] == [pytest.approx(float(per_seed[row["layer"]][key]))]
            hits = round(stat["mean"] * n)  # one seed: the interval is Wilson's on its count of right canvases
            assert stat["ci95"] == pytest.approx(proportion([np.r_[np.ones(hits), np.zeros(n - hits)]])["ci95"])
        assert 0 <= row["vs_chance"]["p_value"] <= 1 and row["vs_chance"]["chance"] == row["chance"]
    assert len(m["comparisons"]) == 4 * len(layers)
    for cmp in m["comparisons"]:
        layer, variant = cmp["name"].split(":plain_vs_")
        (row,) = [r for r in m["layers"] if r["layer"] == layer]
        other = row[f"accuracy_{variant}"]
        assert cmp["mean"] == pytest.approx(row["accuracy"]["mean"] - other["mean"]) and cmp["a"] == "plain"
        assert -1 <= cmp["ci95"][0] <= cmp["mean"] <= cmp["ci95"][1] <= 1 and cmp["ci95"][0] < cmp["ci95"][1]
        assert cmp["question"] and 0 <= cmp["p_value"] <= 1
    for name in ("table.csv", "per_seed.csv", "comparisons.csv", "probe.png", "config.yaml"):
        assert (tmp_path / "lite0" / name).is_file(), name
    assert len((tmp_path / "lite0" / "table.csv").read_text().strip().splitlines()) == 1 + len(layers)


@pytest.mark.parametrize("extra, match", [
    (["--layers", "bakbone"], "closest: backbone"),
    (["--layers", "head.fc"], "not a (B, C, H, W) feature map"),
    (["--grid", "4", "--canvas", "84"], "canvas"),
    (["--seeds", ""], "seed"),
    (["--data", "photos", "--task", "semantic"], "photos"),
    (["--readouts", "plain,median"], "unknown readout 'median'; allowed: plain, permuted-test"),
    (["--readouts", "sorted,moments"], "plain among them"),
    (["--readouts", "plain,plain"], "each readout once"),
])
def test_bad_input_exit_2_one_line_no_output(tmp_path, capsys, extra, match):
    out = tmp_path / "out"
    args = ["probe", "--model", f"{THIS}:shift_free_net", "--preset", "smoke", "--no-progress", *extra]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("poschan: error:") and match in err, err
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_photos_split_into_disjoint_train_and_test_photos():
    train, test = split_sets(Config(data="photos"))
    assert (len(train), len(test)) == (11, 6) and train.split == "train" and test.split == "test"
    assert test.labels.tolist() == [0, 3, 6, 9, 12, 15]
    assert sorted(train.labels.tolist() + test.labels.tolist()) == list(range(17))


def test_stage_names_resolve_to_dotted_layers_without_duplicates():
    model = build_model("resnet18-paper", 9, 1, width=8)
    assert resolve_layers(model, ["stage4", " backbone.layer4", "backbone"]) == ["backbone.layer4", "backbone"]
