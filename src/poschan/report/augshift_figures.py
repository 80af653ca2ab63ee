"""Figures of the AugShift experiment: metrics per method, accuracy along the diagonal shift, the lambda sweep."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from poschan.report.figures import save_figure

PANELS = {"accuracy": "accuracy (centre crop)", "consistency": "consistency (crops)",
          "circular_consistency": "circular consistency", "fidelity": "fidelity (both crops right)",
          "latent_distance": "latent distance"}


def _errors(stats: list[dict]) -> list[list[float]]:
    return [[s["mean"] - s["ci95"][0] for s in stats], [s["ci95"][1] - s["mean"] for s in stats]]


def _panels(labels: list[str], rows: list[dict], title: str, path: Path, xlabel: str = "") -> None:
    """One panel per metric of PANELS: a bar per label with its 95% CI."""
    fig, axes = plt.subplots(1, len(PANELS), figsize=(3.2 * len(PANELS), 3.6))
    for ax, (key, name) in zip(axes, PANELS.items()):
        stats = [row[key] for row in rows]
        ax.bar(range(len(labels)), [s["mean"] for s in stats], yerr=_errors(stats), capsize=3, color="tab:blue",
               alpha=0.8)
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
        ax.set(title=name, xlabel=xlabel)
        if key != "latent_distance":
            ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("mean over seeds (95% CI)")
    fig.suptitle(title, y=1.04)
    save_figure(fig, path)


def augshift_figures(metrics: dict, out: Path) -> None:
    """methods.png, accuracy_vs_shift.png and (with a sweep) lambda_sweep.png into ``out``."""
    methods = metrics["methods"]
    _panels(list(methods), list(methods.values()), "shift invariance by method", out / "methods.png")

    curve = metrics["shift_curve"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method, stats in curve["accuracy"].items():
        means = [s["mean"] for s in stats]
        ax.plot(curve["offset"], means, marker="o", label=method)
        ax.fill_between(curve["offset"], [s["ci95"][0] for s in stats], [s["ci95"][1] for s in stats], alpha=0.15)
    ax.axvline(curve["centre_offset"], color="grey", linestyle=":", label="centre crop")
    ax.set(xlabel="diagonal crop offset d (crop at (d, d))", ylabel="test accuracy (95% CI)",
           title="accuracy vs shift")
    ax.legend(fontsize=7)
    save_figure(fig, out / "accuracy_vs_shift.png")

    if metrics.get("lambda_sweep"):
        rows = metrics["lambda_sweep"]
        _panels([f"{row['lambda']:g}" for row in rows], rows, "AugShift: lambda sweep", out / "lambda_sweep.png",
                xlabel="lambda")
