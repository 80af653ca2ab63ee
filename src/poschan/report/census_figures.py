"""The census's cross-model figure: location readout and position dimensions by relative depth, per model."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from poschan.report.figures import save_figure

_READOUT_STYLES = {"accuracy": ("-", "plain"), "accuracy_permuted_test": ("--", "channels permuted at test"),
                   "accuracy_sorted": (":", "sorted channels (order-free)")}


def _errors(values: list[dict]) -> list[list[float]]:
    return [[v["mean"] - v["ci95"][0] for v in values], [v["ci95"][1] - v["mean"] for v in values]]


def census_figure(rows: list[dict], path: Path, *, title: str) -> None:
    """Left: each model's location readout accuracy (95% CI) by relative depth, plain, permuted at test and sorted
    (line styles), its random-init twin in a lighter shade of its colour, and chance. Right: the share of position
    dimensions (dimest, 95% CI over ranking seeds where there are several)."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    trained = [m for m in models if not next(r for r in rows if r["model"] == m)["twin_of"]]
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(trained)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), layout="constrained")
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        twin_of = mine[0]["twin_of"]
        colour = colours.get(twin_of or model, "grey")
        alpha, width = (0.45, 1.0) if twin_of else (1.0, 1.8)
        depth = [r["depth"] for r in mine]
        for key, (style, _) in _READOUT_STYLES.items():
            if key not in mine[0] or (twin_of and key != "accuracy"):
                continue
            values = [r[key] for r in mine]
            label = model if key == "accuracy" else None
            left.errorbar(depth, [v["mean"] for v in values], yerr=_errors(values), linestyle=style, marker="o",
                          markersize=3, capsize=2, color=colour, alpha=alpha, linewidth=width, label=label)
        shares = [r["position_percent"] for r in mine]
        right.errorbar(depth, [s["mean"] for s in shares],
                       yerr=_errors(shares) if all(s.get("ci95") for s in shares) else None, marker="o", markersize=3,
                       capsize=2, color=colour, alpha=alpha, linewidth=width, label=model)
    left.axhline(rows[0]["chance"], color="black", linewidth=0.8, linestyle="-.",
                 label=f"chance {rows[0]['chance']:.3f}")
    left.set(xlabel="relative depth (layer i of n at i / n)", ylabel="location readout accuracy (95% CI)",
             ylim=(0, 1.02), title="where each model keeps position")
    right.set(xlabel="relative depth", ylabel="position dimensions, % of channels (dimest)", ylim=(0, None),
              title="how many channels encode it")
    for style, name in _READOUT_STYLES.values():  # the line styles, once, in black
        left.plot([], [], linestyle=style, color="black", label=name)
    left.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
