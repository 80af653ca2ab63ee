"""Named rectangular regions of a square image, in pixels.

left/right/top/bottom: halves; center: the middle half of both axes; q1..q4: quadrants top-left, top-right,
bottom-left, bottom-right; ``cell:I``: cell I (row-major) of a k×k grid. Image y grows downwards. A half of an
odd side gets the smaller part on the left / top (``side // 2``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from poschan.errors import UserError

REGIONS = ("left", "right", "top", "bottom", "center", "q1", "q2", "q3", "q4")
OPPOSITES = {"left": "right", "right": "left", "top": "bottom", "bottom": "top",
             "q1": "q4", "q4": "q1", "q2": "q3", "q3": "q2"}


class Box(NamedTuple):
    """Rows y0 <= y < y1, columns x0 <= x < x1."""

    y0: int
    y1: int
    x0: int
    x1: int


def check_region(name: str, grid: int = 3) -> str:
    """``name`` if it names a region of REGIONS or a cell ``cell:I`` with 0 <= I < grid², else UserError."""
    if name in REGIONS:
        return name
    if name.startswith("cell:"):
        index = name.removeprefix("cell:")
        if index.isdigit() and int(index) < grid * grid:
            return name
        raise UserError(f"region {name!r} lies outside the image: cells of a {grid}×{grid} grid are "
                        f"cell:0..cell:{grid * grid - 1}")
    raise UserError(f"unknown region {name!r}; allowed: {', '.join(REGIONS)}, cell:I")


def region_box(name: str, side: int, grid: int = 3) -> Box:
    """The pixel rectangle of region ``name`` on a ``side``×``side`` image."""
    check_region(name, grid)
    h = side // 2
    q = side // 4
    boxes = {"left": Box(0, side, 0, h), "right": Box(0, side, h, side), "top": Box(0, h, 0, side),
             "bottom": Box(h, side, 0, side), "center": Box(q, side - q, q, side - q),
             "q1": Box(0, h, 0, h), "q2": Box(0, h, h, side), "q3": Box(h, side, 0, h), "q4": Box(h, side, h, side)}
    if name in boxes:
        return boxes[name]
    row, col = divmod(int(name.removeprefix("cell:")), grid)
    edges = [round(i * side / grid) for i in range(grid + 1)]
    return Box(edges[row], edges[row + 1], edges[col], edges[col + 1])


def region_mask(name: str, side: int, grid: int = 3, device: torch.device | str | None = None) -> Tensor:
    """(side, side) bool mask of region ``name``."""
    y0, y1, x0, x1 = region_box(name, side, grid)
    mask = torch.zeros(side, side, dtype=torch.bool, device=device)
    mask[y0:y1, x0:x1] = True
    return mask


def opposite(name: str, grid: int = 3) -> str | None:
    """The point-mirrored region (left<->right, top<->bottom, q1<->q4, q2<->q3, cell:I<->cell:k²-1-I);
    None for a region that is its own mirror (center, the centre cell of an odd grid): it has no opposite to
    serve as a control."""
    check_region(name, grid)
    if name.startswith("cell:"):
        cell = int(name.removeprefix("cell:"))
        mirror = grid * grid - 1 - cell
        return None if mirror == cell else f"cell:{mirror}"
    return OPPOSITES.get(name)
