"""The README's headline figures, drawn from finished runs: the GAP study's permutation comparison, the segmentation
sweep (flip − random drop at the paper's N) and the region attack's selectivities. Every mark is a recorded statistic
with exactly its recorded 95% interval; a statistic without one is a bare point, said in the legend."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import offset_copy

from poschan.report.claims import PAPER_FRACTION, paper_row
from poschan.report.figures import plt
from poschan.results import Run

GAP_CAPTION = ("GAP study (gap-fc head, zero padding, the smallest grid): test accuracy of the location and semantic "
               "tasks from globally pooled features, unpermuted and with the channels permuted; bars are means with "
               "their 95% intervals, the dashed line over each task its chance level. Location falling to chance "
               "when the channel order is unusable means position was carried by that order.")
SWEEP_CAPTION = (f"Segmentation sweep: for each ablate condition (layout, prior, backbone), the mIoU drop from zeroing "
                 f"the top-N flip-ranked channels minus that from zeroing N random ones, at the N nearest "
                 f"{PAPER_FRACTION:.0%} of the channels, with its paired 95% interval. Right of zero: the position "
                 "channels matter more than random ones.")
ATTACK_CAPTION = ("Region attack: for each attack condition and region, the selectivity (mIoU drop inside the region − "
                  "drop outside) of zeroing that region's top-N flip-ranked channels, N random channels, and the "
                  "opposite region's flip-ranked channels, each with its 95% interval; the black diamond is the "
                  "paired flip − random difference. Right of zero: the channels hurt their own region more.")
HEADLINE_CAPTION = ("The headline, left to right (each panel where its runs exist). " + GAP_CAPTION + " "
                    + SWEEP_CAPTION + " " + ATTACK_CAPTION)

# (permute, where) of the GAP study's main comparison, in words
CONDITIONS = {("none", "-"): "no permutation", ("test-only", "pooled"): "test-only permutation",
              ("per-batch", "pooled"): "per-batch permutation (train+test)",
              ("per-sample", "pooled"): "per-sample permutation (train+test)",
              ("per-batch", "stage3"): "per-batch permutation at stage 3 (train+test)"}
# the attack's series: method (or the paired comparison), label, colour, marker
SERIES = (("flip", "flip-ranked (own region)", "tab:red", "o"), ("random", "random channels", "tab:blue", "s"),
          ("flip-opposite", "flip-ranked (opposite region)", "tab:green", "^"),
          ("paired", "flip − random (paired difference)", "black", "D"))


def _intervals(ax: Axes, at: Sequence[float], stats: Sequence[dict], *, horizontal: bool, color: str) -> int:
    """Each statistic's recorded 95% interval as a whisker at its position; the number without one."""
    shown = [(p, s["ci95"]) for p, s in zip(at, stats) if s.get("ci95") is not None]
    if shown:
        draw = ax.hlines if horizontal else ax.vlines
        draw([p for p, _ in shown], [ci[0] for _, ci in shown], [ci[1] for _, ci in shown], color=color, lw=1.2)
    return len(stats) - len(shown)


def _finish(ax: Axes, missing: int, **labels: str) -> None:
    """Axis labels and the legend, which says how many statistics were drawn without an interval."""
    if missing:
        ax.plot([], [], " ", label=f"{missing} without a recorded interval: no whisker")
    ax.set(**labels)
    below = offset_copy(ax.transAxes, ax.figure, y=-48, units="points")  # under the tick labels and the x label
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=below)


ROW_KEYS = {"task", "head", "permute", "where", "padding", "grid", "accuracy", "chance"}


def _gap_rows(run: Run) -> list[dict]:
    """The rows of the main comparison (gap-fc head, zero padding); none in runs of older versions."""
    return [r for r in run.metrics.get("rows", []) if ROW_KEYS <= set(r) and r["head"] == "gap-fc"
            and r["padding"] == "zeros"]


def _draw_gap(ax: Axes, run: Run) -> None:
    rows = _gap_rows(run)
    grid = min(r["grid"] for r in rows)
    chosen = {(r["task"], r["permute"], r["where"]): r for r in rows if r["grid"] == grid}
    tasks = list(dict.fromkeys(task for task, *_ in chosen))
    shown = [c for c in CONDITIONS if any((t, *c) in chosen for t in tasks)]
    width, missing = 0.8 / len(shown), 0
    for k, condition in enumerate(shown):
        cells = [(i + (k - (len(shown) - 1) / 2) * width, chosen[(t, *condition)]["accuracy"])
                 for i, t in enumerate(tasks) if (t, *condition) in chosen]
        ax.bar([x for x, _ in cells], [s["mean"] for _, s in cells], width, alpha=0.85, label=CONDITIONS[condition])
        missing += _intervals(ax, [x for x, _ in cells], [s for _, s in cells], horizontal=False, color="black")
    for i, task in enumerate(tasks):
        chance = next(r["chance"] for (t, *_), r in chosen.items() if t == task)
        ax.plot([i - 0.45, i + 0.45], [chance, chance], "--", color="grey", label="chance" if i == 0 else None)
    ax.set_xticks(range(len(tasks)), tasks)
    _finish(ax, missing, ylabel="test accuracy (95% interval)",
            title=f"GAP study ({grid}×{grid} grid, gap-fc, zero padding)")


def _sweep_cells(runs: Sequence[Run]) -> list[tuple[str, dict]]:
    """(condition (N), flip − random drop at N) of each ablate run, N the size nearest the paper's fraction."""
    cells = []
    for run in (r for r in runs if r.experiment == "ablate"):
        paper = paper_row(run)
        paired = {p["name"]: p for p in run.metrics.get("comparisons", []) if "name" in p}
        if paper and f"flip_vs_random_drop_n{paper['n']}" in paired:
            cells.append((f"{run.path.name.removeprefix('ablate-')} (N={paper['n']})",
                          paired[f"flip_vs_random_drop_n{paper['n']}"]))
    return cells


def _draw_sweep(ax: Axes, cells: list[tuple[str, dict]]) -> None:
    at = list(range(len(cells)))
    ax.plot([s["mean"] for _, s in cells], at, "o", color="tab:red", label="flip − random drop")
    missing = _intervals(ax, at, [s for _, s in cells], horizontal=True, color="tab:red")
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yticks(at, [label for label, _ in cells], fontsize=7)
    ax.invert_yaxis()
    _finish(ax, missing, xlabel="flip − random mIoU drop\n(> 0: position channels matter more)",
            title=f"Segmentation sweep (N ≈ {PAPER_FRACTION:.0%} of the channels)")


def _attack_cells(runs: Sequence[Run]) -> list[tuple[str, dict[str, dict]]]:
    """(condition region (N), {method or "paired": selectivity}) of each attack run's flip rows."""
    cells = []
    for run in (r for r in runs if r.experiment == "attack"):
        rows = {(r["region"], r["n"], r["method"]): r["selectivity"] for r in run.metrics.get("attack", [])
                if "selectivity" in r}
        paired = {p["name"]: p for p in run.metrics.get("comparisons", []) if "name" in p}
        for region, n, method in rows:
            if method == "flip":
                own = {m: rows[(region, n, m)] for m, *_ in SERIES if (region, n, m) in rows}
                if f"{region}_n{n}_flip_vs_random_selectivity" in paired:
                    own["paired"] = paired[f"{region}_n{n}_flip_vs_random_selectivity"]
                cells.append((f"{run.path.name.removeprefix('attack-')} {region} (N={n})", own))
    return cells


def _draw_attack(ax: Axes, cells: list[tuple[str, dict[str, dict]]]) -> None:
    missing = 0
    for j, (method, label, color, marker) in enumerate(SERIES):
        shown = [(i + (j - 1.5) * 0.18, own[method]) for i, (_, own) in enumerate(cells) if method in own]
        if not shown:
            continue
        ax.plot([s["mean"] for _, s in shown], [p for p, _ in shown], marker, color=color, markersize=3.5,
                linestyle="none", label=label)
        missing += _intervals(ax, [p for p, _ in shown], [s for _, s in shown], horizontal=True, color=color)
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yticks(range(len(cells)), [label for label, _ in cells], fontsize=6)
    ax.invert_yaxis()
    _finish(ax, missing, xlabel="selectivity: mIoU drop inside − outside\nthe region (> 0: selective for it)",
            title="Region attack (zeroed channels)")


def gap_bars(run: Run) -> Figure | None:
    """The GAP study's permutation comparison as one bar chart, location and semantic side by side (None when the
    run has no rows of it)."""
    if not _gap_rows(run):
        return None
    fig, ax = plt.subplots(figsize=(7, 5.5), layout="constrained")
    _draw_gap(ax, run)
    return fig


def _rows_figure(cells: list, draw, inches_per_row: float) -> Figure | None:
    """One panel of ``cells`` (a row each) drawn by ``draw``, tall enough for its rows; None without cells."""
    if not cells:
        return None
    fig, ax = plt.subplots(figsize=(7, 1.5 + inches_per_row * len(cells)), layout="constrained")
    draw(ax, cells)
    return fig


def sweep_figure(runs: Sequence[Run]) -> Figure | None:
    """flip − random mIoU drop at the N nearest the paper's fraction, one point per ablate run (None without any)."""
    return _rows_figure(_sweep_cells(runs), _draw_sweep, 0.25)


def attack_figure(runs: Sequence[Run]) -> Figure | None:
    """Selectivities of the flip-ranked, random and opposite region's channels per attack run and region, with the
    paired flip − random difference (None without attack runs)."""
    return _rows_figure(_attack_cells(runs), _draw_attack, 0.3)


def headline_figure(runs: Sequence[Run]) -> Figure | None:
    """One row of the panels that exist among ``runs`` (the GAP study of the run named gap-study, the sweep, the
    attack), sized to read at about 1200 px wide; None when none exists."""
    gap = next((r for r in runs if r.experiment == "gap-study" and r.path.name == "gap-study" and _gap_rows(r)), None)
    sweep, attack = _sweep_cells(runs), _attack_cells(runs)
    panels = [(draw, data) for draw, data in ((_draw_gap, gap), (_draw_sweep, sweep), (_draw_attack, attack)) if data]
    if not panels:
        return None
    height = max(6.5, 2.5 + 0.16 * max(len(sweep), len(attack)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), height), layout="constrained", squeeze=False)
    for ax, (draw, data) in zip(axes[0], panels):
        draw(ax, data)
    return fig
