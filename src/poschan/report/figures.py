"""Matplotlib figures of results (headless, written atomically as PNG)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import matplotlib

from poschan.distributed import is_main
from poschan.results import temporary_beside

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Write ``fig`` as PNG atomically (rank 0 only under torchrun) and close it."""
    if not is_main():
        plt.close(fig)
        return
    fd, tmp = temporary_beside(path, ".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def learning_curves(rows: list[dict], path: Path, *, chance: float, title: str,
                    metric: str = "test_accuracy") -> None:
    """``metric`` per epoch, one line per seed, with the chance level."""
    by_seed: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        by_seed[row["seed"]].append((row["epoch"], row[metric]))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for seed, points in sorted(by_seed.items()):
        epochs, values = zip(*sorted(points))
        ax.plot(epochs, values, marker="o", label=f"seed {seed}")
    ax.axhline(chance, color="grey", linestyle="--", label=f"chance {chance:.3f}")
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=title, ylim=(0, 1.02))
    ax.legend(fontsize=8)
    save_figure(fig, path)
