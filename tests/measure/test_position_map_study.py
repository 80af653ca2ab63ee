"""position_map_study, the notebook way: one backbone per padding with the same weights, the typed result, the
shuffled-features control and the unit of its intervals."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import poschan
from poschan.data.sources import ImageSet
from poschan.errors import UserError
from poschan.measure.position_map_study import MapReadoutDesign, check_backbones, padding_variants

DESIGN = MapReadoutDesign(targets=("horizontal", "gaussian"), feature_size=8, image_size=24, train_images=8,
                                  test_images=4, steps=20, batch_pixels=64, lr=1e-2)


class Coord(nn.Module):
    """An x-coordinate channel beside a conv of the image (padding set by ``padding_mode``)."""

    def __init__(self, padding_mode: str = "zeros"):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode=padding_mode)
        self.out = nn.Identity()

    def forward(self, x):
        b, _, h, w = x.shape
        xs = torch.linspace(-1, 1, w).expand(b, 1, h, w)
        return self.out(torch.cat([torch.relu(self.conv(x)), xs], dim=1))


def photos(n: int) -> ImageSet:
    """``n`` smooth random "photos" (mean 0, std about 1 per channel)."""
    x = F.avg_pool2d(torch.randn(n, 3, 52, 52, generator=torch.Generator().manual_seed(0)), 5, 1) * 5
    return ImageSet(x, torch.arange(n), tuple("abcde"[:n]), (0.0,) * 3, (1.0,) * 3, "noise", "all")


def test_fixed_backbones_give_rows_controls_and_comparisons_with_intervals():
    backbones = padding_variants(Coord, ["zeros", "circular"], seed=0)
    assert torch.equal(backbones["zeros"].conv.weight, backbones["circular"].conv.weight)
    result = poschan.position_map_study(backbones, ["out"], photos(5), [1, 3], DESIGN, seeds=(0, 1))
    cells = {(r["padding"], r["target"]) for r in result.rows}
    assert cells == {(p, t) for p in ("zeros", "circular") for t in DESIGN.targets}
    assert {r["control"] for r in result.controls} == {"shuffled features"}
    for row in [*result.rows, *result.controls]:
        assert row["spc"]["n"] == 2 and "backbone init" not in row["spc"]["method"]
    assert len(result.comparisons) == 2 * 2 * 2 + 2  # readout - shuffled (SPC, MAE); circular - zeros (SPC)
    assert next(r for r in result.rows if r["target"] == "horizontal")["spc"]["mean"] > 0.8  # the coordinate channel
    assert result.maps.shape == (2, 6, 6) and result.readout_size == 6 and set(result.example_maps) == set(backbones)
    shown = result.example_image
    assert shown.shape == (3, 24, 24) and 0 <= shown.min() <= shown.max() <= 1
    assert set(result.mae_best_constant) == set(DESIGN.targets)
    assert set(result.metrics()) == {"rows", "controls", "comparisons", "mae_best_constant", "layers",
                                     "readout_size", "sigma"}


def test_backbones_of_the_seed_say_so_in_the_unit():
    seen = []

    def backbones(seed):
        seen.append(seed)
        return padding_variants(Coord, ["zeros"], seed)

    design = MapReadoutDesign(targets=("vertical",), feature_size=6, image_size=16, train_images=4,
                                      test_images=4, steps=2, batch_pixels=16)
    result = poschan.position_map_study(backbones, ["out"], photos(4), [0], design, seeds=(3, 4))
    assert seen == [3, 4] and "backbone init" in result.rows[0]["spc"]["method"]


def test_bad_designs_and_backbones_are_one_line_errors():
    with pytest.raises(UserError, match="unknown target 'diagonal'"):
        MapReadoutDesign(targets=("diagonal",)).validate()
    with pytest.raises(UserError, match="feature_size must be >= 4"):
        MapReadoutDesign(feature_size=3).validate()
    with pytest.raises(UserError, match="some but not all of the 4 photos"):
        poschan.position_map_study({}, ["out"], photos(4), [0, 1, 2, 3])
    with pytest.raises(UserError, match="cannot take 1px inputs"):
        check_backbones({"zeros": nn.Sequential(nn.Conv2d(3, 2, 3), nn.Identity())}, ["1"], 1, name="the net")
