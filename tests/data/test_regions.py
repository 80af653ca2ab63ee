"""Named pixel regions: boxes, masks, opposites and bad names."""

import pytest
import torch

from poschan.data.regions import REGIONS, Box, check_region, opposite, region_box, region_mask
from poschan.errors import UserError


def test_halves_quadrants_and_center_partition_as_documented():
    side = 96
    masks = {name: region_mask(name, side) for name in REGIONS}
    assert torch.equal(masks["left"] ^ masks["right"], torch.ones(side, side, dtype=torch.bool))
    assert not (masks["left"] & masks["right"]).any() and not (masks["top"] & masks["bottom"]).any()
    assert torch.equal(masks["q1"] | masks["q2"] | masks["q3"] | masks["q4"], torch.ones(side, side, dtype=torch.bool))
    assert torch.equal(masks["q1"], masks["left"] & masks["top"]) and torch.equal(masks["q4"], masks["right"] & masks["bottom"])
    assert region_box("center", side) == Box(24, 72, 24, 72) and int(masks["center"].sum()) == 48 * 48
    assert masks["left"][:, :48].all() and not masks["left"][:, 48:].any()  # columns = x; rows = y grows downwards
    assert masks["top"][:48].all() and not masks["top"][48:].any()


def test_cells_tile_the_image_row_major():
    side, grid = 100, 3
    cells = torch.stack([region_mask(f"cell:{i}", side, grid) for i in range(grid * grid)])
    assert torch.equal(cells.sum(0), torch.ones(side, side, dtype=torch.long))
    assert cells[1, 0, 50] and cells[3, 50, 0] and cells[8, 99, 99]  # cell 1: top row, middle column


def test_opposites_mirror():
    assert [opposite(r) for r in ("left", "top", "q1", "q2", "center")] == ["right", "bottom", "q4", "q3", None]
    assert opposite("cell:0", 3) == "cell:8" and opposite("cell:5", 4) == "cell:10"
    assert opposite("cell:4", 3) is None and opposite("cell:12", 5) is None  # its own mirror: no control
    for r in ("left", "right", "q1", "q2", "q3", "q4", "top", "bottom"):
        assert torch.equal(region_mask(opposite(r), 64), region_mask(r, 64).flip(0, 1))


@pytest.mark.parametrize("name,message", [("cell:9", "outside the image"), ("cell:-1", "outside the image"),
                                          ("middle", "unknown region"), ("Left", "unknown region")])
def test_bad_names(name, message):
    with pytest.raises(UserError, match=message):
        check_region(name, 3)
