"""``channel_maps``: what the top position channels of a layer look like, beside random channels as the control.

Per channel, two pictures: its **cell means**, the globally average-pooled activation averaged over images pasted
in each cell of a ``grid``×``grid`` canvas (every image in every cell, so the cells differ in position alone),
and its **activation maps**, the un-pooled feature map upsampled bilinearly to a few photos' size. The control is
as many channels drawn at random (seeded) from the channels outside the top list.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poschan.data.canvas import canvas_side, make_background, paste_in_grid
from poschan.data.sources import ImageSet, as_image_set, model_input
from poschan.errors import UserError
from poschan.locate.ranking import ChannelRanking
from poschan.models.weights import weights_fingerprint
from poschan.runtime import eval_mode, seeded_generator
from poschan.taps import capture, pooled_features, resolve_layers


@dataclass
class ChannelMaps:
    """The pictures of ``channels`` (the top list) and ``random_channels`` (the control) of ``layer``.

    ``cell_means`` / ``random_cell_means``: (n, grid, grid) mean pooled activation per cell (row-major, row 0 at the
    top) over ``n_images`` images; ``position_share`` / ``random_position_share``: per channel the share of its
    pooled variance over all canvases that the cell explains (between-cell variance / total variance, in [0, 1]).
    ``photos``: (P, C, H, W) photos with their normalisation undone; ``photo_maps`` / ``random_photo_maps``:
    (P, n, H, W) each channel's feature map on each photo, upsampled to H×W."""

    layer: str
    grid: int
    n_images: int
    channels: list[int]
    random_channels: list[int]
    cell_means: np.ndarray
    random_cell_means: np.ndarray
    position_share: np.ndarray
    random_position_share: np.ndarray
    photos: np.ndarray
    photo_maps: np.ndarray
    random_photo_maps: np.ndarray

    def metrics(self) -> dict:
        """The heat maps and position shares as plain lists, for results.json (the photo maps are left out)."""
        return {"layer": self.layer, "grid": self.grid, "n_images": self.n_images, "channels": self.channels,
                "random_channels": self.random_channels, "cell_means": self.cell_means.tolist(),
                "random_cell_means": self.random_cell_means.tolist(),
                "position_share": self.position_share.tolist(),
                "random_position_share": self.random_position_share.tolist()}


def _top_channels(channels: Sequence[int] | Tensor | ChannelRanking, k: int, key: str) -> list[int]:
    if isinstance(channels, ChannelRanking):
        return channels.top(key, k).tolist()
    values = channels.tolist() if isinstance(channels, Tensor) else list(channels)
    try:
        chosen = [operator.index(c) for c in values]
    except TypeError:
        raise UserError(f"channels must be channel indices (ints) or a ChannelRanking, got {values!r}") from None
    if not chosen or len(set(chosen)) != len(chosen):
        raise UserError(f"channels must name at least one channel, each once, got {chosen}")
    return chosen


def _check_channels(chosen: list[int], count: int, layer: str) -> None:
    outside = [c for c in chosen if not 0 <= c < count]
    if outside:
        raise UserError(f"channel {outside[0]} out of range for layer {layer!r} with {count} channels "
                        f"(0..{count - 1})")


def random_channels(count: int, exclude: Sequence[int], n: int, seed: int) -> list[int]:
    """``n`` distinct channels of ``count`` outside ``exclude``, drawn with ``seed`` (sorted)."""
    pool = [c for c in range(count) if c not in set(exclude)]
    if not 0 <= n <= len(pool):
        raise UserError(f"random must be in 0..{len(pool)} (the channels outside the top list), got {n}")
    order = torch.randperm(len(pool), generator=seeded_generator(seed, "random channels"))
    return sorted(pool[i] for i in order[:n].tolist())


@torch.no_grad()
def _feature_maps(model: nn.Module, layer: str, x: Tensor, batch_size: int, device: torch.device | str) -> Tensor:
    """(N, C, h, w) un-pooled output of ``layer`` for ``x`` (the forward stops at the layer), on the CPU."""
    maps = []
    for batch in x.split(batch_size):
        with capture(model, [layer]) as store:
            pooled_features(model, batch.to(device), [layer])  # refuses a layer that is no (B, C, H, W) map
        maps.append(store[layer].float().cpu())
    return torch.cat(maps)


@torch.no_grad()
def _canvas_features(model: nn.Module, layer: str, items: ImageSet, to_model: Callable[[Tensor], Tensor],
                     background: Tensor, grid: int, chosen: list[int], batch_size: int,
                     device: torch.device | str) -> Tensor:
    """(N, grid², n) float64 pooled ``chosen`` channels of every item pasted in every cell of the grid
    (``to_model`` converts a batch of items to the model's input, ``background`` is the empty canvas)."""
    cells = grid * grid
    out = []
    for pair in torch.arange(len(items) * cells).split(batch_size):  # pair p: item p // grid², cell p % grid²
        canvases = paste_in_grid(to_model(items.images[pair // cells]).to(device), pair % cells, grid, background)
        out.append(pooled_features(model, canvases, [layer])[layer][:, chosen].double().cpu())
    return torch.cat(out).view(len(items), cells, len(chosen))


def _position_share(features: Tensor) -> Tensor:
    """(n,) between-cell variance / total variance of (N, cells, n) features (0 for a constant channel)."""
    total = features.flatten(0, 1).var(0, unbiased=False)
    between = features.mean(0).var(0, unbiased=False)
    return torch.where(total > 0, between / total.clamp_min(1e-300), torch.zeros_like(total)).clamp(0, 1)


def channel_maps(model: nn.Module, layer: str, images: object,
                 channels: Sequence[int] | Tensor | ChannelRanking, *, k: int = 8, key: str = "overall",
                 grid: int = 3, background: str = "mean", photos: object | None = None, n_photos: int = 4,
                 random: int | None = None, seed: int = 0, batch_size: int = 64,
                 device: torch.device | str = "cpu") -> ChannelMaps:
    """The cell means and activation maps of the top ``channels`` of ``layer`` and of as many random ones.

    ``images`` (an ImageSet, or what ``as_image_set`` takes) are pasted in every cell of a ``grid``×``grid``
    canvas on a ``background`` (see ``make_background``); ``photos`` (default: the first images) show the maps,
    ``n_photos`` of them. ``channels``: channel indices, or a ChannelRanking (its top ``k`` by ``key``, checked
    against this layer and these weights). ``random``: the number of control channels (default: as many as the
    top list, at most all the others), drawn with ``seed``. Both sets are re-normalised for the model's
    ``in_chans`` / ``input_norm`` where it has them; the model runs in eval mode on ``device``."""
    if n_photos < 1 or batch_size < 1:
        raise UserError(f"n_photos and batch_size must be >= 1, got {n_photos} and {batch_size}")
    (layer,) = resolve_layers(model, [layer])
    items = as_image_set(images)
    shown = items.subset(n_photos) if photos is None else as_image_set(photos).subset(n_photos)
    in_chans, input_norm = getattr(model, "in_chans", items.channels), getattr(model, "input_norm", None)
    top = _top_channels(channels, k, key)
    ref = items.subset(1).for_model(in_chans, input_norm)  # the model's normalisation, for the empty canvas
    side = canvas_side(grid, max(items.images.shape[-2:]))
    empty = make_background(background, 1, in_chans, side, mean=ref.mean, std=ref.std, device=device)

    def to_model(x: Tensor) -> Tensor:
        return model_input(x, items.mean, items.std, in_chans, input_norm)

    with eval_mode(model):
        photo_x = shown.for_model(in_chans, input_norm).images
        fmaps = _feature_maps(model, layer, photo_x, batch_size, device)
        count = fmaps.shape[1]
        if isinstance(channels, ChannelRanking):
            channels.check_for(layer, count, weights=weights_fingerprint(model))
        _check_channels(top, count, layer)
        control = random_channels(count, top, min(len(top), count - len(top)) if random is None else random, seed)
        chosen = top + control
        features = _canvas_features(model, layer, items, to_model, empty, grid, chosen, batch_size, device)
    upsampled = F.interpolate(fmaps[:, chosen], size=photo_x.shape[-2:], mode="bilinear", align_corners=False)
    cell_means = features.mean(0).T.reshape(len(chosen), grid, grid).numpy()
    share = _position_share(features).numpy()
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (shown.mean, shown.std))
    n = len(top)
    return ChannelMaps(layer=layer, grid=grid, n_images=len(items), channels=top, random_channels=control,
                       cell_means=cell_means[:n], random_cell_means=cell_means[n:], position_share=share[:n],
                       random_position_share=share[n:], photos=(shown.images * std + mean).numpy(),
                       photo_maps=upsampled[:, :n].numpy(), random_photo_maps=upsampled[:, n:].numpy())
