"""Figures of `poschan position-map`: target vs predicted position maps, and SPC per padding and target."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from poschan.report.figures import plt, save_figure


def position_map_figure(image: Tensor, maps: Tensor, targets: Sequence[str], predicted: dict[str, Tensor],
                        path: Path, *, title: str) -> None:
    """Top row: the target maps; one row per padding: the test ``image`` (3, H, W) in [0, 1] and its predicted
    maps (T, h, w) for each target (all maps on the same 0..1 colour scale)."""
    rows, cols = 1 + len(predicted), 1 + len(targets)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_axis_off()
    for t, name in enumerate(targets):
        axes[0, 1 + t].imshow(maps[t].cpu().numpy(), cmap="viridis", vmin=0, vmax=1)
        axes[0, 1 + t].set_title(f"target: {name}", fontsize=9)
    for r, (padding, pred) in enumerate(predicted.items(), start=1):
        axes[r, 0].imshow(image.permute(1, 2, 0).cpu().numpy())
        axes[r, 0].set_ylabel(f"padding {padding}", fontsize=9)
        for t in range(len(targets)):
            axes[r, 1 + t].imshow(pred[t].cpu().numpy(), cmap="viridis", vmin=0, vmax=1)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def spc_bars(rows: list[dict], controls: list[dict], path: Path, *, title: str) -> None:
    """Mean SPC with 95% CI per (padding, target), beside the shuffled-features control."""
    targets = list(dict.fromkeys(r["target"] for r in rows))
    paddings = list(dict.fromkeys(r["padding"] for r in rows))
    groups = [(padding, kind, {r["target"]: r for r in source if r["padding"] == padding})
              for kind, source in (("readout", rows), ("shuffled", controls)) for padding in paddings]
    fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(targets) * len(groups) / 2, 3.5))
    width = 0.8 / len(groups)
    x = np.arange(len(targets))
    for g, (padding, kind, by_target) in enumerate(groups):
        means = np.array([by_target[t]["spc"]["mean"] for t in targets])
        lo = np.array([by_target[t]["spc"]["ci95"][0] for t in targets])
        hi = np.array([by_target[t]["spc"]["ci95"][1] for t in targets])
        ax.bar(x + (g - (len(groups) - 1) / 2) * width, means, width, yerr=[means - lo, hi - means], capsize=3,
               label=f"{padding}{' (shuffled control)' if kind == 'shuffled' else ''}",
               hatch="//" if kind == "shuffled" else None, alpha=0.6 if kind == "shuffled" else 1.0)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(x, targets)
    ax.set(ylabel="SPC (Spearman, test images)", ylim=(-1.02, 1.02), title=title)
    ax.legend(fontsize=7)
    save_figure(fig, path)
