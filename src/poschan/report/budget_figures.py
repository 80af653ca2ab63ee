"""Figures of the budget response: each metric against the samples seen (log axis, the paper's budget marked),
the backbone readouts, and the permuted rows' learning curves by budget."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt

from poschan.measure.budget_response import ACCURACY, DROP, PAPER_SAMPLES, SHARE
from poschan.report.figures import save_figure
from poschan.stats import summarize

TITLES = {(ACCURACY, "location"): "location, permuted in training and test",
          (SHARE, "semantic"): "semantic share kept, permuted in training and test",
          (DROP, "location"): "location, permuted at test only"}


def _errorbar(ax: plt.Axes, rows: list[dict], label: str, marker: str) -> None:
    rows = sorted((r for r in rows if r["value"] is not None), key=lambda r: r["samples"])
    if not rows:
        return
    x = [r["samples"] for r in rows]
    y = [r["value"]["mean"] for r in rows]
    cis = [r["value"]["ci95"] or [m, m] for r, m in zip(rows, y)]
    ax.errorbar(x, y, yerr=[[m - lo for m, (lo, _) in zip(y, cis)], [hi - m for m, (_, hi) in zip(y, cis)]],
                marker=marker, capsize=3, label=label)


def _scaling(scaling: list[dict], trends: list[dict], out: Path) -> None:
    metrics = list(dict.fromkeys((s["metric"], s["task"]) for s in scaling))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False)
    slopes = {(t["metric"], t["task"], t["permute"]): t for t in trends}
    for ax, (metric, task) in zip(axes[0], metrics):
        chosen = [s for s in scaling if (s["metric"], s["task"]) == (metric, task)]
        main_width = min(s["width"] for s in chosen)
        for permute in dict.fromkeys(s["permute"] for s in chosen):
            for width in sorted({s["width"] for s in chosen}):
                rows = [s for s in chosen if s["permute"] == permute and s["width"] == width]
                trend = slopes.get((metric, task, permute))
                label = f"{permute}, width {width}"
                if trend and width == main_width:
                    label += f" ({trend['verdict'].split(' (')[0]})"
                _errorbar(ax, rows, label, "o" if width == main_width else "s")
        ax.axvline(PAPER_SAMPLES, color="black", linestyle=":", label=f"the paper's {PAPER_SAMPLES:,}")
        if metric.startswith("accuracy"):
            ax.axhline(chosen[0]["chance"], color="grey", linestyle="--", label=f"chance {chosen[0]['chance']:.3f}")
        else:
            ax.axhline(0.0, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set(xlabel="training samples seen (log)", ylabel=f"{metric}\n(95% CI)", title=TITLES.get(
            (metric, task), f"{task}: {metric}"))
        ax.legend(fontsize=6)
    save_figure(fig, out / "scaling.png")


def _readouts(readouts: list[dict], out: Path) -> None:
    if not readouts:
        return
    top = max(r["samples"] for r in readouts if r["width"] == min(x["width"] for x in readouts))
    rows = [r for r in readouts if r["samples"] == top and r["width"] == min(x["width"] for x in readouts)]
    targets = list(dict.fromkeys(r["target"] for r in rows))
    kinds = list(dict.fromkeys(r["readout"] for r in rows))
    nets = list(dict.fromkeys((r["trained"], r["permute"]) for r in rows))
    fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 3.8), squeeze=False)
    for ax, target in zip(axes[0], targets):
        width = 0.8 / len(kinds)
        for i, kind in enumerate(kinds):
            stats = [next(r["accuracy"] for r in rows if (r["trained"], r["permute"], r["target"], r["readout"])
                          == (*net, target, kind)) for net in nets]
            means = [s["mean"] for s in stats]
            errs = [[m - s["ci95"][0] for m, s in zip(means, stats)], [s["ci95"][1] - m for m, s in zip(means, stats)]]
            ax.bar([j + i * width for j in range(len(nets))], means, width, yerr=errs, capsize=2, label=kind)
        chance = next(r["chance"] for r in rows if r["target"] == target)
        ax.axhline(chance, color="grey", linestyle="--", label=f"chance {chance:.3f}")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(nets))], [f"{t}\n{p}" for t, p in nets], fontsize=7)
        ax.set(ylim=(0, 1.02), ylabel="readout accuracy (95% CI)",
               title=f"{target} read from the frozen pooled vector ({top:,} samples)")
        ax.legend(fontsize=6)
    save_figure(fig, out / "backbone_readouts.png")


def _curves(curves: list[dict], out: Path) -> None:
    lines: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in curves:
        if c["eval"] == "accuracy" and "_none" not in c["variant"]:
            lines[c["variant"], c["cell"]][c["epoch"] * c["train_size"]].append(c["accuracy"])
    tasks = sorted({variant.split("_")[0] for variant, _ in lines})
    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for (variant, cell), points in sorted(lines.items()):
            if variant.startswith(f"{task}_"):
                x = sorted(points)
                ax.plot(x, [summarize(points[s], bounds=(0.0, 1.0))["mean"] for s in x], marker=".",
                        label=f"{variant.split('_')[-1]} {cell}")
        ax.set_xscale("log")
        ax.set(xlabel="training samples seen (log)", ylabel="test accuracy (mean over seeds)", ylim=(0, 1.02),
               title=f"{task}, permuted in training and test: learning curves by budget")
        ax.legend(fontsize=6)
    save_figure(fig, out / "budget_curves.png")


def budget_figures(scaling: list[dict], trends: list[dict], readouts: list[dict], curves: list[dict],
                   out: Path) -> None:
    """scaling.png, backbone_readouts.png and budget_curves.png."""
    _scaling(scaling, trends, out)
    _readouts(readouts, out)
    _curves(curves, out)
