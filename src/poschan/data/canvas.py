"""Batched, seeded canvas operations on (B, C, h, w) tensors: grid placement, shifts, rolls, crops."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2.functional import resized_crop, rgb_to_grayscale

from poschan.data.sources import photo_bank
from poschan.errors import UserError

BACKGROUNDS = ("mean", "black", "noise", "photo")
_PHOTO_MIN_ZOOM = 0.25  # smallest crop of a background photo, as a fraction of its side


def canvas_side(grid: int, image_side: int, canvas: int | None = None) -> int:
    """The canvas side in pixels: `canvas`, or grid * image_side by default; it must fit the grid."""
    _check_grid(grid)
    if image_side < 1:
        raise UserError(f"image side must be >= 1 px, got {image_side}")
    need = grid * image_side
    if canvas is None:
        return need
    if canvas < need:
        raise UserError(f"grid {grid} x {image_side} px = {need} px does not fit a {canvas} px canvas; "
                        f"use a canvas of at least {need} px")
    return canvas


def make_background(kind: str, batch: int, channels: int, side: int, *, mean: Sequence[float],
                    std: Sequence[float], generator: torch.Generator | None = None,
                    device: torch.device | str | None = None) -> Tensor:
    """(batch, channels, side, side) backgrounds in normalised units (see BACKGROUNDS).

    "mean": 0, the dataset mean colour (as in the paper); "black": (0 - mean) / std; "noise": N(0, 1);
    "photo": a random crop of a real scikit-image photo, grey or RGB, normalised with mean/std.
    Random draws use `generator` on its own device, so a CPU generator gives the same canvases on any device.
    """
    if len(mean) not in (1, channels) or len(std) != len(mean):
        raise UserError(f"mean/std need 1 or {channels} values each, got {len(mean)} and {len(std)}")
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    shape = (batch, channels, side, side)
    if kind == "mean":
        return torch.zeros(shape, device=device)
    if kind == "black":
        return ((0 - m) / s).expand(shape).contiguous()
    if kind == "noise":
        return torch.randn(shape, generator=generator, device=_draw_device(generator)).to(device)
    if kind == "photo":
        if channels not in (1, 3):
            raise UserError(f"photo backgrounds have 1 or 3 channels, not {channels}")
        x = _random_photo_crops(batch, side, generator, device)
        x = rgb_to_grayscale(x) if channels == 1 else x
        return (x - m) / s
    raise UserError(f"unknown background {kind!r}; allowed: {', '.join(BACKGROUNDS)}")


def _check_grid(grid: int) -> None:
    if grid < 1:
        raise UserError(f"grid must be >= 1, got {grid}")


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _random_photo_crops(batch: int, side: int, generator: torch.Generator | None,
                        device: torch.device | str | None) -> Tensor:
    """(batch, 3, side, side) in [0, 1]: per sample a random photo, zoom and position (one grid_sample)."""
    bank = photo_bank(side).to(device)
    at = _draw_device(generator)
    which = torch.randint(len(bank), (batch,), generator=generator, device=at)
    zoom = _PHOTO_MIN_ZOOM + (1 - _PHOTO_MIN_ZOOM) * torch.rand(batch, generator=generator, device=at)
    centre = (torch.rand(batch, 2, generator=generator, device=at) * 2 - 1) * (1 - zoom)[:, None]
    theta = torch.zeros(batch, 2, 3, device=at)
    theta[:, 0, 0] = zoom
    theta[:, 1, 1] = zoom
    theta[:, :, 2] = centre
    theta, which = theta.to(bank.device), which.to(bank.device)
    grid = F.affine_grid(theta, [batch, 3, side, side], align_corners=False)
    return F.grid_sample(bank[which], grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_cells(n: int, grid: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """`n` cell indices drawn uniformly from [0, grid * grid)."""
    _check_grid(grid)
    return torch.randint(grid * grid, (n,), generator=generator, device=_draw_device(generator)).to(device)


def paste_in_grid(images: Tensor, cells: Tensor, grid: int, background: Tensor) -> Tensor:
    """Paste each image centred in its cell of a grid x grid canvas (row-major: row, col = divmod(cell, grid))."""
    _check_grid(grid)
    side = background.shape[-1]
    cell = side // grid
    h, w = images.shape[-2:]
    if cell < max(h, w):
        raise UserError(f"grid {grid} x {max(h, w)} px = {grid * max(h, w)} px does not fit a {side} px canvas")
    cells = cells.to(images.device, torch.int64)
    row, col = cells // grid, cells % grid
    offsets = torch.stack([row * cell + (cell - h) // 2, col * cell + (cell - w) // 2], dim=1)
    return paste_at(images, offsets, background)


def paste_at(images: Tensor, offsets: Tensor, background: Tensor) -> Tensor:
    """A new canvas: `background` (broadcast to the batch) with image b pasted at offsets[b] = (top, left)."""
    b, c, h, w = images.shape
    big_h, big_w = background.shape[-2:]
    offsets = offsets.to(images.device, torch.int64)
    _check_window(offsets, h, w, big_h, big_w, "paste")
    out = background.expand(b, c, big_h, big_w).clone()
    out[_window_index(offsets, c, h, w)] = images
    return out


def crop(x: Tensor, offsets: Tensor, size: int) -> Tensor:
    """Per-sample square crops x[b, :, top:top+size, left:left+size] with offsets[b] = (top, left)."""
    offsets = offsets.to(x.device, torch.int64)
    _check_window(offsets, size, size, x.shape[-2], x.shape[-1], "crop")
    return x[_window_index(offsets, x.shape[1], size, size)]


def roll(x: Tensor, shifts: Tensor) -> Tensor:
    """Per-sample circular roll, as torch.roll(x[b], shifts[b] = (dy, dx), dims=(-2, -1)) for every b."""
    b, c, h, w = x.shape
    shifts = shifts.to(x.device, torch.int64)
    rows = (torch.arange(h, device=x.device) - shifts[:, :1]) % h
    cols = (torch.arange(w, device=x.device) - shifts[:, 1:]) % w
    return x[_index(rows, cols, c)]


def hflip(x: Tensor) -> Tensor:
    """Mirror left-right."""
    return x.flip(-1)


def vflip(x: Tensor) -> Tensor:
    """Mirror top-bottom."""
    return x.flip(-2)


def _check_window(offsets: Tensor, h: int, w: int, big_h: int, big_w: int, what: str) -> None:
    if offsets.ndim != 2 or offsets.shape[1] != 2:
        raise UserError(f"{what} offsets must have shape (B, 2) = (top, left), got {tuple(offsets.shape)}")
    top, left = offsets[:, 0], offsets[:, 1]
    if bool(((top < 0) | (left < 0) | (top + h > big_h) | (left + w > big_w)).any()):
        raise UserError(f"{what} offsets out of range: a {h}x{w} window needs top in 0..{big_h - h} "
                        f"and left in 0..{big_w - w}")


def _window_index(offsets: Tensor, c: int, h: int, w: int) -> tuple[Tensor, ...]:
    """Advanced index selecting the (c, h, w) window at offsets[b] of every sample b."""
    rows = offsets[:, :1] + torch.arange(h, device=offsets.device)
    cols = offsets[:, 1:] + torch.arange(w, device=offsets.device)
    return _index(rows, cols, c)


def _index(rows: Tensor, cols: Tensor, c: int) -> tuple[Tensor, ...]:
    """Advanced index for out[b, k, i, j] = x[b, k, rows[b, i], cols[b, j]], shaped (B, c, h, w)."""
    b = rows.shape[0]
    batch = torch.arange(b, device=rows.device).view(b, 1, 1, 1)
    chan = torch.arange(c, device=rows.device).view(1, c, 1, 1)
    return batch, chan, rows[:, None, :, None], cols[:, None, None, :]


def photo_crops(photos: Tensor, n: int, side: int, *, generator: torch.Generator,
                min_zoom: float = 0.25) -> Tensor:
    """(n, C, side, side): per sample a random photo of ``photos`` (P, C, S, S), a random square crop of
    side zoom·S (zoom uniform in [min_zoom, 1]) at a random place, resized, and random left-right and
    top-bottom flips (so that the photos' content carries no position on average)."""
    size = photos.shape[-1]
    which = torch.randint(len(photos), (n,), generator=generator)
    zoom = min_zoom + (1 - min_zoom) * torch.rand(n, generator=generator)
    corner = torch.rand(n, 2, generator=generator)
    flips = torch.rand(n, 2, generator=generator) < 0.5
    crops = []
    for i in range(n):
        k = max(1, round(float(zoom[i]) * size))
        top, left = (int(c * (size - k + 1)) for c in corner[i])  # torch.rand is < 1
        x = resized_crop(photos[which[i]], top, left, k, k, [side, side], antialias=True)
        x = x.flip(-1) if flips[i, 0] else x
        crops.append(x.flip(-2) if flips[i, 1] else x)
    return torch.stack(crops)
