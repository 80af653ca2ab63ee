"""The figure of ``channel_maps``: cell heat maps and activation maps of the top channels beside random ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from poschan.locate.channel_maps import ChannelMaps
from poschan.report.figures import plt, save_figure


def _shown(photo: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A (C, H, W) photo as imshow takes it, stretched to [0, 1] (grey: (H, W) with a grey colour map)."""
    low, high = photo.min(), photo.max()
    x = (photo - low) / (high - low) if high > low else np.zeros_like(photo)
    return (x[0], "gray") if len(x) == 1 else (x[:3].transpose(1, 2, 0), None)


def _label(ax: plt.Axes, text: str) -> None:
    ax.set_axis_off()
    ax.text(0.95, 0.5, text, ha="right", va="center", fontsize=8, transform=ax.transAxes)


def channel_figure(maps: ChannelMaps, path: Path) -> None:
    """One PNG: a row of cell heat maps of the top channels, the same for the random channels (the control), then
    per photo the photo beside each top channel's activation map on it, and a row of the random channels' maps.
    Heat maps have a colour scale per channel; a channel's activation maps share one scale across the photos."""
    groups = [("top channels", maps.channels, maps.cell_means, maps.photo_maps)]
    if maps.random_channels:
        groups.append(("random channels (control)", maps.random_channels, maps.random_cell_means,
                       maps.random_photo_maps))
    cols = 1 + max(len(channels) for _, channels, _, _ in groups)
    rows = len(groups) * (1 + len(maps.photos))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 0.8, 1.3 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.set_axis_off()
    for g, (name, channels, cells, photo_maps) in enumerate(groups):
        _label(axes[g, 0], f"{name}:\nmean pooled\nresponse per cell")
        for j, ch in enumerate(channels):
            ax = axes[g, 1 + j]
            ax.set_axis_on()
            ax.imshow(cells[j], cmap="viridis", interpolation="nearest")
            ax.set_title(f"ch {ch}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        scales = [(m.min(), m.max()) for m in photo_maps.transpose(1, 0, 2, 3)]
        for p, photo in enumerate(maps.photos):
            row = len(groups) + p * len(groups) + g
            if g == 0:
                image, cmap = _shown(photo)
                axes[row, 0].imshow(image, cmap=cmap)
                axes[row, 0].set_title(f"photo {p + 1}", fontsize=8)
            else:
                _label(axes[row, 0], "random\nchannels")
            for j, ch in enumerate(channels):
                axes[row, 1 + j].imshow(photo_maps[p, j], cmap="magma", vmin=scales[j][0], vmax=scales[j][1])
                axes[row, 1 + j].set_title(f"ch {ch}", fontsize=7)
    fig.suptitle(f"position channels of {maps.layer}: {maps.grid}×{maps.grid} cell means over {maps.n_images} "
                 "images, and activation maps", fontsize=10)
    save_figure(fig, Path(path))
