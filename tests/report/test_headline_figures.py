"""The headline figures: every bar, point, whisker and chance line read back from the artists equals the run's
statistics; rows outside the main comparison are not drawn."""

from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import LineCollection

from poschan.report.headline_figures import attack_figure, gap_bars, headline_figure, sweep_figure
from poschan.results import Run, load_run

RESULTS = Path(__file__).resolve().parents[2] / "results"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def stat(mean: float, lo: float | None, hi: float | None) -> dict:
    return {"mean": mean, "ci95": None if lo is None else [lo, hi], "n": 3, "method": "test"}


def run(name: str, experiment: str, metrics: dict) -> Run:
    return Run(path=Path(name), experiment=experiment, config={}, metrics=metrics, seeds=[0], env={}, elapsed_s=0.0)


def gap_row(task: str, permute: str, where: str, accuracy: dict, *, padding: str = "zeros", grid: int = 3,
            head: str = "gap-fc") -> dict:
    return {"task": task, "head": head, "permute": permute, "where": where, "padding": padding, "grid": grid,
            "accuracy": accuracy, "chance": 1 / grid**2 if task == "location" else 0.1}


MAIN = [gap_row("location", "none", "-", stat(0.97, 0.95, 0.99)),
        gap_row("location", "test-only", "pooled", stat(0.15, 0.12, 0.19)),
        gap_row("location", "per-batch", "pooled", stat(0.21, 0.17, 0.26)),
        gap_row("location", "per-sample", "pooled", stat(0.13, None, None)),  # no interval recorded
        gap_row("location", "per-batch", "stage3", stat(0.93, 0.90, 0.95)),
        gap_row("semantic", "none", "-", stat(0.82, 0.79, 0.85)),
        gap_row("semantic", "test-only", "pooled", stat(0.09, 0.06, 0.13)),
        gap_row("semantic", "per-batch", "pooled", stat(0.31, 0.25, 0.40)),
        gap_row("semantic", "per-sample", "pooled", stat(0.33, 0.28, 0.39))]
OTHER = [gap_row("location", "none", "-", stat(0.71, 0.70, 0.72), padding="circular"),
         gap_row("location", "test-only", "stage3", stat(0.72, 0.70, 0.74)),
         gap_row("location", "none", "-", stat(0.73, 0.70, 0.75), grid=5),
         gap_row("location", "none", "-", stat(0.74, 0.70, 0.76), head="gapnet")]
LABELS = {("none", "-"): "no permutation", ("test-only", "pooled"): "test-only permutation",
          ("per-batch", "pooled"): "per-batch permutation (train+test)",
          ("per-sample", "pooled"): "per-sample permutation (train+test)",
          ("per-batch", "stage3"): "per-batch permutation at stage 3 (train+test)"}


def gap_run(name: str = "gap-study") -> Run:
    return run(name, "gap-study", {"rows": MAIN + OTHER})  # the others after: a missing filter shows


def whiskers(ax, *, horizontal: bool) -> dict[float, tuple[float, float]]:
    """Position (y of a horizontal whisker, x of a vertical one) -> (lo, hi) of every whisker in ``ax``."""
    out = {}
    for collection in ax.collections:
        assert isinstance(collection, LineCollection)
        for (x0, y0), (x1, y1) in collection.get_segments():
            assert (y0 == y1) if horizontal else (x0 == x1)
            out[round(y0 if horizontal else x0, 9)] = (x0, x1) if horizontal else (y0, y1)
    return out


def points(ax, label: str) -> list[tuple[float, float]]:
    (line,) = [line for line in ax.lines if line.get_label() == label]
    return list(zip(line.get_xdata(), line.get_ydata()))


def test_gap_bars_draw_the_main_comparisons_means_intervals_and_chance():
    ax = gap_bars(gap_run()).axes[0]
    bars, ticks = {}, whiskers(ax, horizontal=False)
    for container in ax.containers:
        for patch in container.patches:
            x = patch.get_x() + patch.get_width() / 2
            bars[(container.get_label(), ["location", "semantic"][round(x)])] = (patch.get_height(),
                                                                                  ticks.get(round(x, 9)))
    expected = {(LABELS[(r["permute"], r["where"])], r["task"]):
                (r["accuracy"]["mean"], tuple(r["accuracy"]["ci95"]) if r["accuracy"]["ci95"] else None)
                for r in MAIN}
    assert bars == expected  # other paddings, grids, heads and test-only@stage3 are not drawn
    chance = {round((line.get_xdata()[0] + line.get_xdata()[1]) / 2): line.get_ydata()[0] for line in ax.lines
              if line.get_linestyle() == "--"}
    assert chance == {0: pytest.approx(1 / 9), 1: 0.1}
    assert "1 without a recorded interval: no whisker" in [t.get_text() for t in ax.get_legend().get_texts()]


def ablate_run(name: str, diffs: dict[int, tuple[float, float | None, float | None]]) -> Run:
    reliance = [{"ranking": "flip", "n": n, "fraction": n / 128} for n in diffs]
    comparisons = [{"name": f"flip_vs_random_drop_n{n}", **stat(*d)} for n, d in diffs.items()]
    comparisons += [{"name": f"flip_vs_matched_drop_n{n}", **stat(9.0, 8.0, 10.0)} for n in diffs]
    return run(name, "ablate", {"reliance": reliance, "comparisons": comparisons})


def test_sweep_shows_flip_minus_random_at_the_n_nearest_five_percent():
    runs = [ablate_run("ablate-a", {1: (0.5, 0.4, 0.6), 6: (0.03, 0.01, 0.05), 64: (-0.2, -0.3, -0.1)}),
            gap_run(),
            ablate_run("ablate-b", {3: (-0.01, None, None), 13: (0.7, 0.6, 0.8)})]  # 3/128 is nearer 5% than 13/128
    ax = sweep_figure(runs).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a (N=6)", "b (N=3)"]
    assert points(ax, "flip − random drop") == [(0.03, 0), (-0.01, 1)]
    assert whiskers(ax, horizontal=True) == {0: (0.01, 0.05)}  # none for the statistic without an interval
    assert [line.get_xdata()[0] for line in ax.lines if line.get_label().startswith("_")] == [0.0]  # zero line
    assert "1 without a recorded interval: no whisker" in [t.get_text() for t in ax.get_legend().get_texts()]


def attack_run(name: str, regions: dict[str, float]) -> Run:
    """Per region r with base value v: flip v, random v + 0.1, flip-opposite v + 0.2, shift 7, paired v − 0.05."""
    rows, comparisons = [], []
    for region, v in regions.items():
        rows += [{"region": region, "n": 4, "method": method, "selectivity": stat(v + d, v + d - 0.01, v + d + 0.01)}
                 for method, d in (("flip", 0.0), ("random", 0.1), ("flip-opposite", 0.2), ("shift", 7.0))]
        rows.append({"region": region, "n": None, "method": "pgd", "selectivity": stat(8.0, 7.0, 9.0)})
        comparisons += [{"name": f"{region}_n4_flip_vs_random_selectivity", **stat(v - 0.05, v - 0.07, v - 0.03)},
                        {"name": f"{region}_n4_shift_vs_random_selectivity", **stat(6.0, 5.0, 7.0)}]
    return run(name, "attack", {"attack": rows, "comparisons": comparisons})


def test_attack_shows_ranked_random_opposite_and_paired_difference_per_region():
    ax = attack_figure([attack_run("attack-x", {"top": 0.3, "bottom": -0.2}), gap_run()]).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["x top (N=4)", "x bottom (N=4)"]
    ticks = whiskers(ax, horizontal=True)
    for label, offset in (("flip-ranked (own region)", 0.0), ("random channels", 0.1),
                          ("flip-ranked (opposite region)", 0.2), ("flip − random (paired difference)", -0.05)):
        drawn = points(ax, label)
        assert [round(y) for _, y in drawn] == [0, 1]
        for (x, y), base in zip(drawn, (0.3, -0.2)):
            assert x == pytest.approx(base + offset)
            lo, hi = ticks[round(y, 9)]
            half = 0.02 if label.startswith("flip −") else 0.01
            assert (lo, hi) == (pytest.approx(base + offset - half), pytest.approx(base + offset + half))
    assert len(ticks) == 8  # shift and pgd are not drawn


def test_nothing_to_draw_gives_none():
    assert sweep_figure([]) is None and attack_figure([gap_run()]) is None and headline_figure([]) is None
    assert headline_figure([gap_run("gap-long")]) is None  # the headline's GAP panel is the run named gap-study


def test_headline_has_one_panel_per_study_present():
    runs = [gap_run(), ablate_run("ablate-a", {6: (0.03, 0.01, 0.05)}), attack_run("attack-x", {"top": 0.3})]
    assert [ax.get_title().split(" (")[0] for ax in headline_figure(runs).axes] == [
        "GAP study", "Segmentation sweep", "Region attack"]
    assert [ax.get_title().split(" (")[0] for ax in headline_figure(runs[1:2]).axes] == ["Segmentation sweep"]


def test_every_figure_draws_the_committed_results():
    runs = [load_run(p) for p in sorted(RESULTS.iterdir()) if (p / "results.json").is_file()]
    figures = [gap_bars(load_run(RESULTS / "gap-study")), sweep_figure(runs), attack_figure(runs),
               headline_figure(runs)]
    assert [len(fig.axes) for fig in figures] == [1, 1, 1, 3]
    assert all(ax.has_data() for fig in figures for ax in fig.axes)
