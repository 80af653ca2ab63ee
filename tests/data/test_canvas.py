"""Canvas operations: known placements, equality with per-sample torch ops, seeded backgrounds."""

import pytest
import torch

from poschan.data.canvas import (
    BACKGROUNDS,
    canvas_side,
    crop,
    hflip,
    make_background,
    paste_at,
    paste_in_grid,
    random_cells,
    roll,
    vflip,
)
from poschan.data.sources import CIFAR10_MEAN, CIFAR10_STD
from poschan.errors import UserError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_canvas_side():
    assert canvas_side(3, 28) == 84
    assert canvas_side(3, 28, 100) == 100
    with pytest.raises(UserError, match="grid 5 x 28 px = 140 px does not fit a 84 px canvas"):
        canvas_side(5, 28, 84)
    with pytest.raises(UserError, match="grid"):
        canvas_side(0, 28)


def test_paste_in_grid_puts_each_image_in_its_labelled_cell():
    grid, side, h = 3, 30, 8  # cells of 10 px, images centred 1 px from the cell edge
    cells = torch.cat([torch.arange(9), random_cells(7, grid, _gen(0))])
    images = (torch.arange(len(cells), dtype=torch.float32) + 1).view(-1, 1, 1, 1).expand(-1, 2, h, h)
    background = make_background("noise", len(cells), 2, side, mean=(0.5,), std=(0.2,), generator=_gen(1))
    out = paste_in_grid(images, cells, grid, background)
    assert out.shape == (len(cells), 2, side, side)
    for b, cell in enumerate(cells.tolist()):
        row, col = divmod(cell, grid)
        inside = torch.zeros(side, side, dtype=torch.bool)
        inside[row * 10 + 1:row * 10 + 1 + h, col * 10 + 1:col * 10 + 1 + h] = True
        assert (out[b][:, inside] == b + 1).all()
        assert torch.equal(out[b][:, ~inside], background[b][:, ~inside])
    assert torch.equal(background, make_background("noise", len(cells), 2, side, mean=(0.5,), std=(0.2,),
                                                   generator=_gen(1)))  # input untouched


def test_paste_in_grid_rejects_a_canvas_too_small():
    with pytest.raises(UserError, match="does not fit"):
        paste_in_grid(torch.ones(1, 1, 28, 28), torch.tensor([0]), 3, torch.zeros(1, 1, 80, 80))
    with pytest.raises(UserError, match="grid"):
        paste_in_grid(torch.ones(1, 1, 28, 28), torch.tensor([0]), 0, torch.zeros(1, 1, 80, 80))


def test_paste_at_places_at_offsets_and_broadcasts_background():
    images = torch.randn(3, 2, 4, 5, generator=_gen(2))
    offsets = torch.tensor([[0, 0], [6, 7], [3, 1]])
    background = torch.full((1, 2, 10, 12), -1.0)
    out = paste_at(images, offsets, background)
    for b, (top, left) in enumerate(offsets.tolist()):
        expected = torch.full((2, 10, 12), -1.0)
        expected[:, top:top + 4, left:left + 5] = images[b]
        assert torch.equal(out[b], expected)
    assert (background == -1).all()
    with pytest.raises(UserError, match="out of range"):
        paste_at(images, torch.tensor([[0, 0], [7, 0], [0, 0]]), background)
    with pytest.raises(UserError, match="out of range"):
        paste_at(images, torch.tensor([[0, -1], [0, 0], [0, 0]]), background)


def test_roll_equals_torch_roll_per_sample():
    x = torch.randn(5, 3, 7, 9, generator=_gen(3))
    shifts = torch.tensor([[0, 0], [1, -2], [-8, 20], [7, 9], [3, 4]])
    out = roll(x, shifts)
    for b, (dy, dx) in enumerate(shifts.tolist()):
        assert torch.equal(out[b], torch.roll(x[b], (dy, dx), dims=(-2, -1)))


def test_crop_equals_slicing_per_sample():
    x = torch.randn(4, 2, 10, 11, generator=_gen(4))
    offsets = torch.tensor([[0, 0], [4, 5], [2, 0], [0, 5]])
    out = crop(x, offsets, 6)
    assert out.shape == (4, 2, 6, 6) and out.is_contiguous()
    for b, (top, left) in enumerate(offsets.tolist()):
        assert torch.equal(out[b], x[b, :, top:top + 6, left:left + 6])
    with pytest.raises(UserError, match="out of range"):
        crop(x, torch.tensor([[5, 0]] * 4), 6)
    with pytest.raises(UserError, match=r"\(B, 2\)"):
        crop(x, torch.tensor([1, 2]), 6)


def test_flips():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)
    assert torch.equal(hflip(x)[0, 0, 0], torch.tensor([3.0, 2.0, 1.0, 0.0]))
    assert torch.equal(vflip(x)[0, 0, :, 0], torch.tensor([8.0, 4.0, 0.0]))


def test_random_cells_uniform_range_and_seeded():
    cells = random_cells(9000, 3, _gen(5))
    assert cells.dtype == torch.int64 and cells.min() == 0 and cells.max() == 8
    counts = torch.bincount(cells, minlength=9)
    assert (counts - 1000).abs().max() < 150
    assert torch.equal(cells, random_cells(9000, 3, _gen(5)))


def test_mean_and_black_backgrounds():
    kw = dict(mean=CIFAR10_MEAN, std=CIFAR10_STD)
    assert torch.equal(make_background("mean", 2, 3, 8, **kw), torch.zeros(2, 3, 8, 8))
    black = make_background("black", 2, 3, 8, **kw)
    for c in range(3):
        assert torch.allclose(black[:, c], torch.tensor(-CIFAR10_MEAN[c] / CIFAR10_STD[c]))
    grey = make_background("black", 2, 3, 8, mean=(0.25,), std=(0.5,))
    assert torch.allclose(grey, torch.tensor(-0.5))


@pytest.mark.parametrize("kind", ["noise", "photo"])
@pytest.mark.parametrize("channels", [1, 3])
def test_random_backgrounds_are_seeded(kind, channels):
    kw = dict(mean=(0.5,) * channels, std=(0.25,) * channels)
    a = make_background(kind, 6, channels, 40, generator=_gen(7), **kw)
    b = make_background(kind, 6, channels, 40, generator=_gen(7), **kw)
    c = make_background(kind, 6, channels, 40, generator=_gen(8), **kw)
    assert a.shape == (6, channels, 40, 40)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # each sample draws its own background


def test_photo_background_is_a_real_image():
    x = make_background("photo", 16, 3, 32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), generator=_gen(9))
    pixels = x * 0.25 + 0.5
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    # natural images are smooth: neighbouring pixels differ far less than independent noise would
    assert (pixels[..., 1:] - pixels[..., :-1]).abs().mean() < 0.1


def test_background_errors():
    with pytest.raises(UserError, match="unknown background"):
        make_background("white", 1, 1, 8, mean=(0.5,), std=(0.5,))
    with pytest.raises(UserError, match="mean/std"):
        make_background("black", 1, 3, 8, mean=(0.5, 0.5), std=(0.5, 0.5))
    with pytest.raises(UserError, match="photo"):
        make_background("photo", 1, 2, 8, mean=(0.5,), std=(0.5,))
    assert set(BACKGROUNDS) == {"mean", "black", "noise", "photo"}
