"""Figure of the linear probe: readout accuracy per layer for the plain and channel-permuted variants."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from poschan.report.figures import save_figure


def probe_accuracy(rows: list[dict], labels: list[str], variants: dict[str, str], path: Path, *, chance: float,
                   title: str) -> None:
    """One group of bars per layer (``labels``), one bar per readout of ``variants`` (key in the rows -> label),
    95% CI error bars, and the chance line."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(rows) + 2), 3.8))
    width = 0.8 / len(variants)
    for i, (key, name) in enumerate(variants.items()):
        means = [r[key]["mean"] for r in rows]
        errs = [[m - r[key]["ci95"][0] for m, r in zip(means, rows)],
                [r[key]["ci95"][1] - m for m, r in zip(means, rows)]]
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(rows))]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=name)
    ax.axhline(chance, color="grey", linestyle="--", label=f"chance {chance:.3f}")
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    ax.set(ylim=(0, 1.02), ylabel="readout test accuracy (95% CI)", title=title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    save_figure(fig, path)
