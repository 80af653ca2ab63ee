"""The budget response's arithmetic on planted outcomes with known answers: cells, slope weights, trends and
their verdicts."""

import numpy as np
import pytest

from poschan.measure.budget_response import (
    FLAT_PER_DOUBLING,
    SERIES,
    Cell,
    budget_cell,
    cells,
    series_trend,
    slope_weights,
    trend_verdict,
)
from poschan.measure.gap_study import GapStudyResult, Variant


class _Budgets:
    width, budgets, base_samples, base_epochs = 8, [1, 4, 16], 32000, 4
    wide, extra_seeds, seeds = ["16@4"], [3, 4], [0, 1, 2]


def test_cells_budgets_epochs_and_seeds():
    found = {(c.width, c.multiple): c for c in cells(_Budgets())}
    assert list(found) == [(8, 1), (8, 4), (16, 4), (8, 16)]  # cheapest first
    assert [(found[8, m].epochs, found[8, m].train_size, found[8, m].samples) for m in (1, 4, 16)] == [
        (4, 8000, 32000), (8, 16000, 128000), (16, 32000, 512000)]
    assert found[8, 16].seeds == (0, 1, 2, 3, 4) and found[8, 4].seeds == found[16, 4].seeds == (0, 1, 2)
    assert budget_cell(_Budgets(), 8, 2, [0]).samples == pytest.approx(64000, rel=0.01)


def test_slope_weights_give_the_change_per_doubling():
    samples = [1000, 4000, 16000, 64000]
    w = slope_weights(samples)
    assert w @ (0.3 + 0.05 * np.log2(samples)) == pytest.approx(0.05)
    assert w @ np.full(4, 0.7) == pytest.approx(0.0)
    assert w @ np.log(samples) == pytest.approx(np.log(2))  # per doubling, not per unit of log


@pytest.mark.parametrize("ci, toward, verdict", [
    ([-0.05, -0.02], -1, "moves toward the paper's claim"),
    ([-0.05, -0.02], 1, "moves away from the paper's claim"),
    ([0.02, 0.05], 1, "moves toward the paper's claim"),
    ([-0.004, 0.006], 1, "flat"),
    ([0.002, 0.008], -1, "flat"),  # excludes 0, but smaller than the smallest trend of interest
    ([-0.03, 0.02], 1, "undetermined"),
    (None, 1, "undetermined"),
])
def test_trend_verdicts(ci, toward, verdict):
    mean = 0.0 if ci is None else sum(ci) / 2
    assert trend_verdict({"mean": mean, "ci95": ci}, toward).startswith(verdict)
    assert f"±{FLAT_PER_DOUBLING:g}" in trend_verdict({"mean": 0.001, "ci95": [-0.004, 0.006]}, 1)


def _planted(accuracy: dict[str, float], items: int, seed: int, noise_seed: int) -> np.ndarray:
    """0/1 outcomes of ``items`` canvases whose mean is exactly ``accuracy``, in a seed-dependent order."""
    hits = np.zeros(items)
    hits[: round(accuracy * items)] = 1
    return np.random.default_rng([seed, noise_seed]).permutation(hits)


def _result(task: str, means: dict[str, dict[int, float]], items: int, index: int) -> GapStudyResult:
    outcomes = {}
    for name, per_seed in means.items():
        v = (Variant(task, "gap-fc", "zeros", 3, name, "pooled") if name in ("per-batch", "per-sample")
             else Variant(task, "gap-fc", "zeros", 3))
        key = "test-only@pooled" if name == "test-only" else "accuracy"
        outcomes[v, key] = [_planted(m, items, s, index * 10 + len(name)) for s, m in sorted(per_seed.items())]
    return GapStudyResult([], [], [], [], 0, items, outcomes)


def _trend(series_index: int, task: str, per_budget: list[dict[str, float]], seeds=(0, 1, 2), items=400,
           spread=0.0) -> dict:
    budget_cells = [Cell(8, m, 1, 1000 * m, tuple(seeds)) for m in (1, 4, 16)]
    results = {cell: _result(task, {name: {s: v + spread * (s - 1) for s in seeds} for name, v in means.items()},
                             items, i) for i, (cell, means) in enumerate(zip(budget_cells, per_budget))}
    return series_trend(SERIES[series_index], budget_cells, results, 3, list(seeds), 0.1)


def test_permuted_accuracy_trend_recovers_a_planted_slope():
    # location per-batch accuracy 0.50, 0.40, 0.30 at 1x, 4x, 16x: -0.05 per doubling
    slope = _trend(0, "location", [{"none": 0.9, "per-batch": a} for a in (0.5, 0.4, 0.3)], spread=0.02)
    assert slope["mean"] == pytest.approx(-0.05, abs=1e-9)
    assert slope["values"] == pytest.approx([-0.05] * 3, abs=1e-9)  # the spread is the same at every budget
    assert slope["ci95"][0] < -0.05 < slope["ci95"][1] and "crossed" in slope["method"]
    assert trend_verdict(slope, -1) in ("moves toward the paper's claim", "undetermined")


def test_share_trend_reads_the_share_not_the_accuracy():
    # semantic per-batch: the unpermuted net improves as fast as the permuted one, so the share kept is flat
    # ((0.5 - 0.1) / (0.9 - 0.1) = 0.5 at each budget) although the permuted accuracy rises
    flat = _trend(2, "semantic", [{"none": 0.1 + 0.8 * f, "per-batch": 0.1 + 0.4 * f} for f in (0.5, 0.75, 1.0)])
    assert flat["mean"] == pytest.approx(0.0, abs=1e-9)
    rising = _trend(2, "semantic", [{"none": 0.9, "per-batch": p} for p in (0.3, 0.5, 0.7)])
    assert rising["mean"] == pytest.approx(0.2 / 0.8 / 2, abs=1e-9)  # +0.25 share per 4x: 0.125 per doubling


def test_test_only_trend_is_the_slope_of_the_drop():
    slope = _trend(4, "location", [{"none": 0.9, "test-only": t} for t in (0.8, 0.6, 0.4)])
    assert slope["mean"] == pytest.approx(-0.1, abs=1e-9)  # the drop grows by 0.2 per 4x: 0.1 per doubling
