"""Figures of the GAP study: accuracy by padding, the permutation comparison, learning curves."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt

from poschan.report.figures import save_figure
from poschan.stats import summarize


def _bars(ax: plt.Axes, labels: list[str], stats: list[dict], chance: float, title: str) -> None:
    means = [s["mean"] for s in stats]
    errs = [[m - s["ci95"][0] for m, s in zip(means, stats)], [s["ci95"][1] - m for m, s in zip(means, stats)]]
    ax.bar(range(len(labels)), means, yerr=errs, capsize=3, color="tab:blue", alpha=0.8)
    ax.axhline(chance, color="grey", linestyle="--", label=f"chance {chance:.3f}")
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
    ax.set(ylim=(0, 1.02), ylabel="test accuracy (95% CI)", title=title)
    ax.legend(fontsize=8)


def gap_figures(rows: list[dict], curves: list[dict], out: Path) -> None:
    """accuracy_by_padding.png, permutation.png and learning_curves.png from the study's rows and curves."""
    grid = min(r["grid"] for r in rows)
    padding_rows = [r for r in rows if r["task"] == "location" and r["head"] == "gap-fc" and r["grid"] == grid
                    and r["permute"] == "none"]
    if padding_rows:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        _bars(ax, [r["padding"] for r in padding_rows], [r["accuracy"] for r in padding_rows],
              padding_rows[0]["chance"], f"location {grid}×{grid}, gap-fc, by padding")
        save_figure(fig, out / "accuracy_by_padding.png")

    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        chosen = [r for r in rows if r["task"] == task and r["head"] == "gap-fc" and r["padding"] == "zeros"
                  and r["grid"] == grid]
        if chosen:
            _bars(ax, [r["permute"] if r["permute"] == "none" else f"{r['permute']}@{r['where']}" for r in chosen],
                  [r["accuracy"] for r in chosen], chosen[0]["chance"], f"{task}: channel permutation (zeros)")
    save_figure(fig, out / "permutation.png")

    lines: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in curves:
        lines[f"{c['variant']} [{c['eval']}]"][c["epoch"]].append(c["accuracy"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for label, points in sorted(lines.items()):
            if not label.startswith(f"{task}_"):
                continue
            epochs = sorted(points)
            band = [summarize(points[e], bounds=(0.0, 1.0)) for e in epochs]
            (line,) = ax.plot(epochs, [b["mean"] for b in band], marker="o", markersize=3,
                              label=label.removeprefix(f"{task}_"))
            banded = [(e, b["ci95"]) for e, b in zip(epochs, band) if b["ci95"] is not None]  # no variation: no band
            if banded:
                ax.fill_between([e for e, _ in banded], [ci[0] for _, ci in banded], [ci[1] for _, ci in banded],
                                color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set(xlabel="epoch", ylabel="test accuracy (mean over seeds)", ylim=(0, 1.02),
               title=f"{task}: learning curves (bands: 95% t-interval over seeds; none where seeds agree)")
        ax.legend(fontsize=5, loc="lower right")
    save_figure(fig, out / "learning_curves.png")
