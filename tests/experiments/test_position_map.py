"""`poschan position-map`: known answers of the readout, the CLI smoke run and its bad-input contract."""

import csv
import json
import re

import pytest
import torch
import torch.nn.functional as F
from tests.contract import statistic_ok

from poschan.cli import main
from poschan.data.canvas import photo_crops
from poschan.measure.map_readout import (
    MapReadout,
    fit_map_readout,
    image_scores,
    resized_feature_maps,
    score,
    shuffle_positions,
)
from poschan.measure.position_maps import TARGETS, mae, position_maps, spc
from poschan.models.registry import build_model

NETS = '''
import torch
from torch import nn


class Coord(nn.Module):
    """CoordConv: an x-coordinate input channel, then a circular conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, padding_mode="circular")

    def forward(self, x):
        b, _, h, w = x.shape
        xs = torch.linspace(-1, 1, w, device=x.device).expand(b, 1, h, w)
        return torch.relu(self.conv(torch.cat([x, xs], dim=1)))


def coord():
    return Coord()


def plain():  # circular padding, stride 1: exactly equivariant to circular shifts
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, padding_mode="circular"), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular"), nn.ReLU())
'''


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    path = tmp_path_factory.mktemp("nets") / "nets.py"
    path.write_text(NETS)
    return str(path)


def all_circular_shifts(image: torch.Tensor) -> torch.Tensor:
    return torch.stack([image.roll(s, dims=-1) for s in range(image.shape[-1])])


def horizontal_spc(nets: str, factory: str) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Test SPC of a readout for the horizontal gradient, trained on all circular shifts of one image and tested
    on all shifts of another (28 px inputs and feature maps, circular padding)."""
    torch.manual_seed(0)
    model = build_model(f"{nets}:{factory}", 1, 3, padding="circular").eval()
    images = F.avg_pool2d(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), 5, 1)
    train_f, test_f = (resized_feature_maps(model, all_circular_shifts(im), ["backbone"], 28) for im in images)
    maps = position_maps(["horizontal"], 26, 26)
    readout = fit_map_readout(train_f, maps, steps=200, batch_pixels=256, lr=1e-2,
                              generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ((value, _),) = score(readout(test_f), maps)
    return value, train_f


def test_equivariant_backbone_gives_no_position(nets):
    value, features = horizontal_spc(nets, "plain")
    assert torch.allclose(features[5], features[0].roll(5, dims=-1), atol=1e-5)  # exactly equivariant
    assert abs(value) < 0.1


def test_coordinate_channel_gives_position(nets):
    value, _ = horizontal_spc(nets, "coord")
    assert value > 0.9


def test_patch_training_path_equals_the_conv():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(2, 5, 6, 7, generator=g)
    readout = MapReadout(features.mean(dim=(0, 2, 3)), features.std(dim=(0, 2, 3)), 3, g)
    full = readout(features)  # (2, 3, 4, 5)
    z = readout.standardise(features)
    patches = torch.stack([z[n, :, y:y + 3, x:x + 3].permute(1, 2, 0)
                           for n in range(2) for y in range(4) for x in range(5)])
    assert torch.allclose(readout.forward_patches(patches), full.permute(0, 2, 3, 1).reshape(-1, 3), atol=1e-5)


def test_readout_learns_a_gradient_that_is_in_the_features():
    maps = position_maps(TARGETS, 8, 8)
    features = F.pad(maps, (1, 1, 1, 1), mode="replicate").expand(6, -1, -1, -1)  # the targets themselves
    readout = fit_map_readout(features, maps, steps=300, batch_pixels=128, lr=3e-2,
                              generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for spc_value, mae_value in score(readout(features), maps):
            assert spc_value > 0.95 and mae_value < 0.1


def test_image_scores_are_spc_and_mae_per_image_and_average_to_score():
    maps = position_maps(TARGETS, 6, 6)
    g = torch.Generator().manual_seed(0)
    pred = torch.cat([maps[None], 1 - maps[None], torch.rand(2, 3, 6, 6, generator=g)])  # 4 images, 3 targets
    rows = image_scores(pred, maps)
    assert rows.shape == (3, 4, 2)  # (target, image, SPC/MAE)
    assert rows[:, 0, 0].tolist() == pytest.approx([1.0, 1.0, 1.0]) and rows[:, 0, 1].tolist() == [0.0, 0.0, 0.0]
    assert rows[:, 1, 0].tolist() == pytest.approx([-1.0, -1.0, -1.0])  # 1 - map reverses every ranking
    for t in range(3):
        assert rows[t, :, 0].tolist() == pytest.approx(spc(pred[:, t], maps[t]).tolist())
        assert rows[t, :, 1].tolist() == pytest.approx(mae(pred[:, t], maps[t]).tolist())
    means = [v for t in range(3) for v in (spc(pred[:, t], maps[t]).mean(), mae(pred[:, t], maps[t]).mean())]
    assert [v for pair in score(pred, maps) for v in pair] == pytest.approx([float(v) for v in means])


def test_shuffle_positions_permutes_pixels_per_image():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 16, dtype=torch.float32).view(2, 3, 4, 4)
    y = shuffle_positions(x, g)
    assert not torch.equal(x, y)
    assert torch.equal(x.flatten(2).sort(dim=2).values, y.flatten(2).sort(dim=2).values)
    assert torch.equal(y[:, 1] - y[:, 0], torch.full((2, 4, 4), 16.0))  # all channels moved alike
    assert not torch.equal(y[1, 0] - 48, y[0, 0])  # a different permutation per image


def test_photo_crops_are_seeded_and_come_from_the_given_photos():
    photos = torch.stack([torch.full((3, 16, 16), 2.0), torch.full((3, 16, 16), 5.0)])
    a = photo_crops(photos, 6, 8, generator=torch.Generator().manual_seed(3))
    b = photo_crops(photos, 6, 8, generator=torch.Generator().manual_seed(3))
    assert a.shape == (6, 3, 8, 8) and torch.equal(a, b)
    near = [torch.allclose(crop, torch.full_like(crop, v), atol=1e-5) for crop in a for v in (2.0, 5.0)]
    assert sum(near) == 6 and any(near[0::2]) and any(near[1::2])  # each crop from one photo, both photos used
    only_first = photo_crops(photos[:1], 4, 8, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(only_first, torch.full_like(only_first, 2.0), atol=1e-5)


def test_cli_smoke_results_contract(nets, tmp_path, capsys):
    out = tmp_path / "x"
    args = ["position-map", "--model", f"{nets}:coord", "--layers", "backbone", "--image-size", "32",
            "--preset", "smoke", "--no-progress", "--out", str(out)]
    assert main([*args, "--seeds", "0,1"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["experiment"] == "position-map" and data["config"]["preset"] == "smoke"
    metrics = data["metrics"]
    for key in ("rows", "controls"):
        cells = {(r["padding"], r["target"]) for r in metrics[key]}
        assert cells == {(p, t) for p in ("zeros", "circular") for t in TARGETS}
        for row in metrics[key]:
            assert statistic_ok(row["spc"], -1, 1, "test crops") and statistic_ok(row["mae"], 0, 1, "test crops")
            assert row["spc"]["n"] == 2 and "2 seeds" in row["spc"]["method"]
    with open(out / "table.csv") as fh:
        table = {(r["features"], r["padding"], r["target"]): r for r in csv.DictReader(fh)}
    assert float(table["readout", "zeros", "gaussian"]["mae_lo"]) == next(
        r["mae"]["ci95"][0] for r in metrics["rows"] if (r["padding"], r["target"]) == ("zeros", "gaussian"))
    side = {(r.get("control", "readout features").split()[0], r["padding"], r["target"]): r
            for r in [*metrics["rows"], *metrics["controls"]]}
    comparisons = {c["name"]: c for c in metrics["comparisons"]}
    assert len(comparisons) == 2 * 3 * 2 + 3  # (readout - shuffled) x (padding, target, SPC/MAE); circular - zeros
    for name, cmp in comparisons.items():
        if "readout_vs_shuffled" in name:
            padding, target, m = name.split(":")
            m = m.split("_")[0]
            a, b = side["readout", padding, target][m], side["shuffled", padding, target][m]
        else:
            target, m = name.split(":")
            a, b = side["readout", "circular", target]["spc"], side["readout", "zeros", target]["spc"]
        assert cmp["values"] == pytest.approx([x - y for x, y in zip(a["values"], b["values"])])  # seed by seed
        span = 2.0 if "spc" in name else 1.0
        assert -span <= cmp["ci95"][0] <= cmp["mean"] <= cmp["ci95"][1] <= span and cmp["ci95"][0] < cmp["ci95"][1]
        assert cmp["question"] and 0 <= cmp["p_value"] <= 1
    assert comparisons["zeros:horizontal:spc_readout_vs_shuffled"]["ci95"][0] > 0.5  # the coordinate channel
    by_cell = {(r["padding"], r["target"]): r["spc"]["mean"] for r in metrics["rows"]}
    assert by_cell["zeros", "horizontal"] > 0.9 and by_cell["circular", "horizontal"] > 0.9  # coordinate channel
    assert all(abs(r["spc"]["mean"]) < 0.3 for r in metrics["controls"])
    for name in ("table.csv", "comparisons.csv", "position_maps.png", "spc.png", "config.yaml"):
        assert (out / name).exists(), name
    assert "shuffled features" in capsys.readouterr().out


@pytest.mark.parametrize("extra, match", [
    (["--layers", "backbone,nope"], "unknown layer"),
    (["--layers", "head.fc"], "not a \\(B, C, H, W\\) feature map"),
    (["--paddings", "zeros,mirror"], "padding"),
    (["--targets", "horizontal,diagonal"], "target"),
    (["--seeds", ""], "seeds"),
    (["--test-photos", "astronaut,nope"], "photo"),
    (["--data-root", "somewhere"], "data-root"),
])
def test_bad_input_exits_2_before_any_output(nets, tmp_path, capsys, extra, match):
    out = tmp_path / "x"
    base = ["position-map", "--model", f"{nets}:coord", "--layers", "backbone", "--image-size", "32",
            "--preset", "smoke", "--no-progress", "--out", str(out)]
    assert main([*base, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("poschan: error:")
    assert re.search(match, err[0]), err[0]
    assert not out.exists() and not (tmp_path / "x.partial").exists()
