"""Figure of post-hoc debiasing (``control.debias``): what masking N channels buys in consistency against what it
costs in accuracy or fidelity, ranked channels against random ones."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from poschan.report.figures import save_figure

STYLES = {"ranked": ("tab:red", "o"), "random": ("tab:grey", "s")}


def _errors(stat: dict) -> tuple[float, float]:
    """(below, above) the mean of a statistic's 95% interval (0 where it has none)."""
    if not stat.get("ci95"):
        return 0.0, 0.0
    lo, hi = stat["ci95"]
    return stat["mean"] - lo, hi - stat["mean"]


def debias_figure(result_rows: list[dict], path: Path, *, gain: str = "consistency_gain", cost_label: str = "cost",
                  title: str = "", retrained: list[dict] = ()) -> None:
    """One point per (N, channel set) of ``result_rows`` (``DebiasResult.rows``): x its cost (unmasked − masked
    accuracy or fidelity, ``cost_label`` naming it), y its ``gain`` (masked − unmasked consistency), both with their
    95% intervals; the points of one set joined in order of N and labelled with N; zero lines for reference. With
    ``retrained`` (``control.augshift_study.retraining_points``): each retraining method's gain and cost over plain
    training, as open squares labelled with the method."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for name, (color, marker) in STYLES.items():
        rows = sorted((r for r in result_rows if r["set"] == name), key=lambda r: r["n"])
        if not rows:
            continue
        xs, ys = [r["cost"]["mean"] for r in rows], [r[gain]["mean"] for r in rows]
        xerr = list(zip(*(_errors(r["cost"]) for r in rows)))
        yerr = list(zip(*(_errors(r[gain]) for r in rows)))
        units = rows[0].get("units", "")
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, color=color, marker=marker, capsize=3, linewidth=1,
                    label=f"{name} channels ({len(rows[0]['channels'])} {units})")
        for x, y, r in zip(xs, ys, rows):
            ax.annotate(f"N={r['n']}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7, color=color)
    for i, point in enumerate(retrained):
        x, y = point["cost"]["mean"], point[gain]["mean"]
        ax.errorbar([x], [y], xerr=[[e] for e in _errors(point["cost"])], yerr=[[e] for e in _errors(point[gain])],
                    color="tab:green", marker="s", markerfacecolor="none", capsize=3, linestyle="none",
                    label="retrained (over plain training, paired)" if i == 0 else None)
        ax.annotate(point["label"], (x, y), textcoords="offset points", xytext=(5, -9), fontsize=7, color="tab:green")
    for line in (ax.axhline, ax.axvline):
        line(0, color="grey", linewidth=0.6, linestyle="--", zorder=0)
    ax.set(xlabel=f"{cost_label} (unmasked − masked, 95% CI)",
           ylabel=f"{gain.removesuffix('_gain').replace('_', ' ')} gain (masked − unmasked, 95% CI)", title=title)
    ax.legend(fontsize=8)
    save_figure(fig, path)
