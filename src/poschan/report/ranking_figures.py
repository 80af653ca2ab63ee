"""Figures of a channel ranking: sorted scores against the shuffled null, and a cell × channel selectivity map."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
from torch import Tensor

from poschan.report.figures import save_figure


def sorted_scores(keys: dict[str, tuple[Tensor, Tensor]], path: Path, *, title: str) -> None:
    """One panel per key: its channel scores and its null scores, each sorted in descending order."""
    cols = min(len(keys), 5)
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (key, (real, null)) in zip(axes.flat, keys.items()):
        ax.plot(real.sort(descending=True).values.numpy(), label="real pairs")
        ax.plot(null.sort(descending=True).values.numpy(), linestyle="--", color="grey", label="shuffled null")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("channel rank", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("score", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(hspace=0.45, wspace=0.3)
    save_figure(fig, path)


def cell_heatmap(cell_scores: Tensor, channels: list[int], grid: int, path: Path, *, title: str) -> None:
    """Selectivity (Cohen's d) of ``channels`` (columns) for content in each cell (rows, row-major)."""
    values = cell_scores[:, channels].numpy()
    bound = float(abs(values).max()) or 1.0
    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(channels) + 2), max(3.0, 0.3 * len(cell_scores) + 1.5)))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(channels)), [str(ch) for ch in channels], rotation=90, fontsize=7)
    ax.set_yticks(range(len(cell_scores)), [f"{j} (r{j // grid} c{j % grid})" for j in range(len(cell_scores))],
                  fontsize=7)
    ax.set(xlabel="channel (top of 'overall')", ylabel="cell of the content", title=title)
    ax.title.set_fontsize(8)
    fig.colorbar(image, ax=ax, label="selectivity d")
    save_figure(fig, path)
