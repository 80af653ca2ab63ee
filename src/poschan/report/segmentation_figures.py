"""Figures of segmentation results: mIoU against channels ablated, per-region in/out mIoU maps, prediction overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch, Rectangle
from torch import Tensor

from poschan.report.figures import save_figure


def _stat(value: float | dict) -> tuple[float, float, float]:
    """(mean, lo, hi) of a plain float (zero-width interval) or a summary dict with "mean" and maybe "ci95"."""
    if isinstance(value, dict):
        lo, hi = value.get("ci95", (value["mean"], value["mean"]))
        return float(value["mean"]), float(lo), float(hi)
    return float(value), float(value), float(value)


def reliance_curve(rows: list[dict], path: Path, *, title: str, clean: float) -> None:
    """mIoU against the fraction of channels ablated (``n`` when rows lack "fraction"), one panel per "ranking" of
    the rows (one panel when they name none): the ranked channels and the controls the rows hold (uniform random,
    magnitude-matched random), each with its 95% band, and the clean mIoU dashed."""
    key = "fraction" if all("fraction" in row for row in rows) else "n"
    names = list(dict.fromkeys(row.get("ranking", "") for row in rows))
    columns = min(3, len(names))
    fig, axes = plt.subplots((len(names) + columns - 1) // columns, columns, figsize=(4.2 * columns,
                             3.4 * ((len(names) + columns - 1) // columns)), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, name in zip(axes.flat, names):
        mine = sorted((row for row in rows if row.get("ranking", "") == name), key=lambda row: row[key])
        xs = [row[key] for row in mine]
        for series, color in (("ranked", "tab:red"), ("random", "tab:blue"), ("matched", "tab:green")):
            shown = [(x, row[series]) for x, row in zip(xs, mine) if series in row]
            if not shown:
                continue
            mean, lo, hi = zip(*(_stat(v) for _, v in shown))
            at = [x for x, _ in shown]
            ax.plot(at, mean, marker="o", color=color, label=series)
            ax.fill_between(at, lo, hi, color=color, alpha=0.2)
        ax.axhline(clean, color="grey", linestyle="--", label=f"clean {clean:.3f}")
        ax.set(xlabel="fraction of channels ablated" if key == "fraction" else "channels ablated", ylabel="mIoU",
               title=name or None)
        if key == "fraction":
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def region_heatmap(rows: list[dict], path: Path, *, title: str) -> None:
    """Rows = (region, n), columns = methods; one annotated panel for each of the first two of "drop_in",
    "drop_out", "miou_in", "miou_out" that the rows carry (plain floats or summary dicts, whose "mean" is shown;
    None left blank)."""
    labels = list(dict.fromkeys((row["region"], row["n"]) for row in rows))
    methods = list(dict.fromkeys(row["method"] for row in rows))
    panels = [key for key in ("drop_in", "drop_out", "miou_in", "miou_out") if any(key in row for row in rows)][:2]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.2 * len(methods) * len(panels) + 2.5,
                                                      0.45 * len(labels) + 1.8), squeeze=False)
    for ax, key in zip(axes[0], panels):
        values = np.full((len(labels), len(methods)), np.nan)
        for row in rows:
            if row.get(key) is not None:
                values[labels.index((row["region"], row["n"])), methods.index(row["method"])] = _stat(row[key])[0]
        limits = {"vmin": 0.0, "vmax": 1.0} if key.startswith("miou") else {}
        image = ax.imshow(values, cmap="viridis", aspect="auto", **limits)
        for (i, j), v in np.ndenumerate(values):
            if not np.isnan(v):
                bright = image.norm(v) > 0.6  # viridis turns light: dark text there
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="black" if bright else "white")
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), [f"{region} n={n}" for region, n in labels], fontsize=7)
        ax.set_title(key.replace("_", " "), fontsize=8)
        fig.colorbar(image, ax=ax).ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9, y=1.02)
    save_figure(fig, path)


def _class_colours(num_classes: int) -> ListedColormap:
    """Class 0 (background) black, the others tab20 colours in order (cycled past 20)."""
    tab = plt.get_cmap("tab20").colors
    return ListedColormap([(0.0, 0.0, 0.0)] + [tab[i % len(tab)] for i in range(num_classes - 1)])


def overlays(images: Tensor, masks: Tensor, preds: dict[str, Tensor], path: Path, *, class_names: Sequence[str],
             region: Tensor | None = None, max_rows: int = 4) -> None:
    """A grid of the first ``max_rows`` examples: the image (min-max scaled per image), the ground-truth labels
    ``masks`` (N, S, S), then one column per entry of ``preds`` ((N, S, S) labels); the ``region`` ((S, S) bool)
    outlined on every panel when given."""
    rows = min(max_rows, len(images))
    columns = {"image": None, "ground truth": masks, **preds}
    cmap = _class_colours(len(class_names))
    box = None
    if region is not None and bool(region.any()):
        ys, xs = torch.nonzero(region.cpu(), as_tuple=True)
        box = (int(xs.min()) - 0.5, int(ys.min()) - 0.5, int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1)
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.8 * len(columns), 1.8 * rows), squeeze=False)
    for i in range(rows):
        for ax, (name, labels) in zip(axes[i], columns.items()):
            if labels is None:
                img = images[i].detach().cpu().float()
                img = (img - img.min()) / (img.max() - img.min()).clamp(min=1e-12)
                ax.imshow(img[0].numpy() if len(img) == 1 else img.permute(1, 2, 0).numpy(), cmap="gray")
            else:
                ax.imshow(labels[i].cpu().numpy(), cmap=cmap, vmin=0, vmax=len(class_names) - 1,
                          interpolation="nearest")
            if box is not None:
                ax.add_patch(Rectangle(box[:2], box[2], box[3], fill=False, edgecolor="white", linewidth=1.2))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
    fig.legend(handles=[Patch(color=cmap(k), label=name) for k, name in enumerate(class_names)],
               loc="upper center", bbox_to_anchor=(0.5, 0.08), ncol=min(len(class_names), 6), fontsize=7)
    save_figure(fig, path)
