"""The budget response: do the GAP study's permutation verdicts survive more training?

The GAP study (``measure.gap_study``) is trained again at several training budgets, each a *cell*: a width and a
budget ``m`` (``m`` × ``base_samples`` training samples seen, in ``round(base_epochs·√m)`` epochs of as many
distinct images as that leaves, so that longer runs see more images as well as more passes). Every cell trains
the same seeds (plus ``extra_seeds`` at the largest budget of the main width, where its verdicts are decided) on
the same test canvases. Per cell and seed, after training, linear readouts of location and of class are fit on
the frozen network's pooled vector, plain and order-free (``probe_study.probe_layer``): whether a network that
cannot use its channel order (trained under permutation) re-routes position into statistics no order can hide.

Per series (SERIES: a metric of the paper's permutation claims) and cell, the statistic comes from the cell's own
GAP study; the trend over budgets is the least-squares slope of the metric on log2(samples) — per doubling of the
budget — estimated from the per-item outcomes of the seeds every main-width cell shares: a linear combination of
the cells' metrics, so its interval (``stats.estimate``) covers the seeds and the test canvases they share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
from torch import nn

from poschan.data.stream import TEST_SEED_OFFSET
from poschan.errors import UserError
from poschan.measure.gap_study import GapSettings, GapStudyPlan, GapStudyResult, Variant, gap_study, plan_gap_study
from poschan.measure.probe_study import ProbeCanvases, draw, probe_layer
from poschan.measure.readout import DEFAULT_C
from poschan.runtime import resolve_device, seeded_generator
from poschan.stats import estimate, paired_difference, proportion
from poschan.taps import extract_pooled
from poschan.training import TrainPlan

PAPER_SAMPLES = 1_000_000  # the paper's GAP study: 20 epochs of CIFAR-10's 50,000 training images
FLAT_PER_DOUBLING = 0.01  # the smallest trend of interest: 0.01 per doubling (0.04 from 1x to 16x)
READOUTS = ("accuracy", "accuracy_permuted_train", "accuracy_sorted", "accuracy_moments")
READOUT_TARGETS = ("location", "semantic")
READOUT_LAYER = "backbone"  # the pooled vector, before the head (and before any trained permutation)
UNIT, ITEM = "training seeds", "test canvases"


class BudgetSettings(GapSettings, Protocol):
    """What the study reads of its configuration (``poschan.experiments.budget_response.Config``): the GAP study's
    settings, the budgets and cells, and ``study(**changes)``, the checked GAP-study settings of one cell."""

    width: int
    budgets: list[int]
    base_samples: int
    base_epochs: int
    wide: list[str]
    extra_seeds: list[int]
    readout_train_size: int
    readout_test_size: int

    def study(self, **changes: object) -> GapSettings: ...


@dataclass(frozen=True)
class Cell:
    """One trained budget: ``multiple`` × the base samples, in ``epochs`` epochs of ``train_size`` images."""

    width: int
    multiple: int
    epochs: int
    train_size: int
    seeds: tuple[int, ...]

    @property
    def samples(self) -> int:
        return self.epochs * self.train_size

    @property
    def key(self) -> str:
        return f"w{self.width}-x{self.multiple}"


def parse_wide(text: str) -> tuple[int, int]:
    """``"16@4"`` -> (width 16, budget multiple 4); a UserError for anything else."""
    width, _, multiple = text.partition("@")
    if not (width.isdigit() and multiple.isdigit() and int(width) > 0 and int(multiple) > 0):
        raise UserError(f"a wide cell is WIDTH@BUDGET with positive integers (e.g. 16@4), got {text!r}")
    return int(width), int(multiple)


def budget_cell(c: BudgetSettings, width: int, multiple: int, seeds: Sequence[int]) -> Cell:
    epochs = max(1, round(c.base_epochs * multiple ** 0.5))
    train_size = c.base_samples * multiple // epochs
    if train_size < 1:
        raise UserError(f"budget {multiple}x of {c.base_samples} samples in {epochs} epochs leaves no images")
    return Cell(width, multiple, epochs, train_size, tuple(seeds))


def cells(c: BudgetSettings) -> list[Cell]:
    """The main width at every budget (the extra seeds at the largest), then the wide cells, by budget and width."""
    top = max(c.budgets)
    chosen = [budget_cell(c, c.width, m, [*c.seeds, *(c.extra_seeds if m == top else [])]) for m in c.budgets]
    chosen += [budget_cell(c, *parse_wide(w), c.seeds) for w in c.wide]
    if len({(cell.width, cell.multiple) for cell in chosen}) != len(chosen):
        raise UserError("each (width, budget) cell once: a budget or a wide cell is repeated")
    return sorted(chosen, key=lambda cell: (cell.multiple, cell.width))


@dataclass
class BudgetPlan:
    config: BudgetSettings
    cells: list[Cell]
    studies: dict[Cell, GapStudyPlan]


def plan_budget_response(c: BudgetSettings) -> BudgetPlan:
    """Every cell's GAP study planned (its data loaded, its variants checked) before anything is written."""
    chosen = cells(c)
    studies = {}
    for cell in chosen:
        studies[cell] = plan_gap_study(c.study(width=cell.width, epochs=cell.epochs, train_size=cell.train_size,
                                               semantic_epochs=None, semantic_train_size=None,
                                               seeds=list(cell.seeds)))
        if len(studies[cell].sets[0]) < cell.train_size:
            raise UserError(f"budget {cell.multiple}x needs {cell.train_size} training images per epoch; the data "
                            f"has {len(studies[cell].sets[0])} (raise --base-epochs)")
    return BudgetPlan(c, chosen, studies)


def backbone_readouts(model: nn.Module, plan: TrainPlan, seed: int, *, train_size: int, test_size: int
                      ) -> dict[str, np.ndarray]:
    """The 0/1 test outcomes of linear readouts of location and of class (READOUT_TARGETS) from the frozen
    network's pooled vector: plain, fit on per-sample-shuffled features, on the sorted vector and on its moments
    (READOUTS). Fit on canvases of the training images, scored on canvases of the test images; the canvases and
    permutations are the same for every network (seed 0), which crosses the networks with the test canvases."""
    del seed  # every network is read on the same canvases
    c, device = plan.config, resolve_device(plan.config.device)
    out = {}
    for target in READOUT_TARGETS:
        canvases = ProbeCanvases(task=target, grid=c.grid, canvas=c.canvas, background=c.background,
                                 train_size=train_size, test_size=test_size)
        (train_f, train_y), (test_f, test_y) = (
            extract_pooled(model, canvases.stream(draw(images, n, s), s), [READOUT_LAYER], device=device)
            for images, n, s in ((plan.train_set, train_size, 0), (plan.test_set, test_size, TEST_SEED_OFFSET)))
        scores = probe_layer(train_f[READOUT_LAYER], train_y, test_f[READOUT_LAYER], test_y, seed=0, c=DEFAULT_C,
                             generator=seeded_generator(0, READOUT_LAYER), readouts=READOUTS)
        out.update({f"readout {target} {key}": hits for key, hits in scores.items()})
    return out




@dataclass(frozen=True)
class Series:
    """One metric of the paper's permutation claims, followed over the budgets. ``toward`` is the sign of a change
    toward the paper's claim; the metric is ``value`` of the item means of ``columns`` (see ``_columns``)."""

    metric: str
    task: str
    permute: str
    toward: int
    claim: str

    def variant(self, grid: int) -> Variant:
        trained = "none" if self.permute == "test-only" else self.permute
        return Variant(self.task, "gap-fc", "zeros", grid, trained, "pooled")

    def columns(self, result: GapStudyResult, grid: int, index: int) -> np.ndarray:
        """Seed ``index``'s per-item columns: the permuted outcomes, beside the unpermuted ones where the metric
        compares with them."""
        plain = result.outcomes[Variant(self.task, "gap-fc", "zeros", grid), "accuracy"][index]
        if self.permute == "test-only":
            return np.stack([result.outcomes[self.variant(grid), "test-only@pooled"][index], plain], axis=1)
        permuted = result.outcomes[self.variant(grid), "accuracy"][index]
        return permuted[:, None] if self.metric == ACCURACY else np.stack([permuted, plain], axis=1)

    def value(self, means: np.ndarray, chance: float) -> np.ndarray:
        if self.metric == ACCURACY:
            return means[..., 0]
        if self.metric == SHARE:
            return (means[..., 0] - chance) / (means[..., 1] - chance)
        return means[..., 0] - means[..., 1]

    def statistic(self, result: GapStudyResult, grid: int) -> dict:
        """The cell's own statistic of this metric (its GAP study's row or comparison)."""
        if self.metric == ACCURACY:
            return next(r["accuracy"] for r in result.rows if (r["task"], r["head"], r["padding"], r["grid"],
                                                               r["permute"], r["where"]) ==
                        (self.task, "gap-fc", "zeros", grid, self.permute, "pooled"))
        found = next(p for p in result.comparisons if (p["task"], p["head"], p["padding"], p["grid"],
                                                       p["permute"], p["where"]) ==
                     (self.task, "gap-fc", "zeros", grid, self.permute, "pooled"))
        return found["retained_above_chance"] if self.metric == SHARE else {
            k: v for k, v in found.items() if k in ("mean", "ci95", "n", "values", "range", "method", "p_value",
                                                    "test", "p_bound")}


ACCURACY, SHARE, DROP = ("accuracy under permutation", "share of above-chance accuracy kept",
                         "permuted − unpermuted accuracy")
SERIES = (
    Series(ACCURACY, "location", "per-batch", -1, "with the channel order unusable, location is at chance"),
    Series(ACCURACY, "location", "per-sample", -1, "with the channel order unusable, location is at chance"),
    Series(SHARE, "semantic", "per-batch", +1, "semantic information largely survives the permutation"),
    Series(SHARE, "semantic", "per-sample", +1, "semantic information largely survives the permutation"),
    Series(DROP, "location", "test-only", -1, "a normally trained net reads position from its channel order"),
)


def trend_verdict(slope: dict, toward: int) -> str:
    """"flat" (the slope's interval inside ±FLAT_PER_DOUBLING), "moves toward the paper's claim" / "moves away from
    the paper's claim" (it excludes 0, in the sign ``toward`` or against it), else "undetermined"."""
    if slope.get("ci95") is None:
        return "undetermined"
    lo, hi = slope["ci95"]
    if -FLAT_PER_DOUBLING < lo and hi < FLAT_PER_DOUBLING:
        return f"flat (within ±{FLAT_PER_DOUBLING:g} per doubling)"
    if lo > 0 or hi < 0:
        return "moves toward the paper's claim" if np.sign(slope["mean"]) == toward else \
            "moves away from the paper's claim"
    return "undetermined"


def slope_weights(samples: Sequence[int]) -> np.ndarray:
    """w with Σ w·y the least-squares slope of y on log2(samples): the change per doubling of the budget."""
    x = np.log2(np.asarray(samples, dtype=float))
    centred = x - x.mean()
    return centred / float((centred ** 2).sum())


def series_trend(series: Series, trend_cells: Sequence[Cell], results: dict[Cell, GapStudyResult], grid: int,
                 seeds: Sequence[int], chance: float) -> dict:
    """The slope per doubling of ``series`` over ``trend_cells`` (each seed's cells side by side on the same test
    canvases), with its interval over the seeds and canvases."""
    weights = slope_weights([cell.samples for cell in trend_cells])
    groups = [np.concatenate([series.columns(results[cell], grid, list(cell.seeds).index(seed))
                              for cell in trend_cells], axis=1) for seed in seeds]
    k = groups[0].shape[1] // len(trend_cells)

    def slope(means: np.ndarray) -> np.ndarray:
        return sum(w * series.value(means[..., i * k:(i + 1) * k], chance) for i, w in enumerate(weights))

    found = estimate(groups, slope, bounds=(-np.inf, np.inf), unit=UNIT, item=ITEM)
    if not np.isfinite(found["ci95"]).all():  # every unit and item agree: an estimate without an interval
        return {**found, "ci95": None, "method": f"no interval: {found['method']}"}
    return found


@dataclass
class BudgetResult:
    """Per cell its GAP study (``cells``); per series and cell its statistic (``scaling``); per series the trend
    over the main width's budgets (``trends``); per cell, trained variant, target and readout the backbone readout
    (``readouts``); the learning curves of every cell (``curves``)."""

    cells: list[dict]
    scaling: list[dict]
    trends: list[dict]
    readouts: list[dict]
    curves: list[dict]

    def metrics(self) -> dict:
        return {"cells": self.cells, "scaling": self.scaling, "trends": self.trends, "readouts": self.readouts,
                "paper_samples": PAPER_SAMPLES, "flat_per_doubling": FLAT_PER_DOUBLING}


def _cell_fields(cell: Cell) -> dict:
    return {"cell": cell.key, "width": cell.width, "multiple": cell.multiple, "epochs": cell.epochs,
            "train_size": cell.train_size, "samples": cell.samples}


def _value(stat: dict) -> dict:
    """A cell's statistic, or why it has none (a share whose denominator may be 0)."""
    return {"value": stat, "note": ""} if "mean" in stat else {"value": None, "note": stat["reason"]}


def _readout_rows(plan: BudgetPlan, cell: Cell, result: GapStudyResult) -> list[dict]:
    study = plan.studies[cell]
    rows = []
    for v in study.variants:
        for target in READOUT_TARGETS:
            chance = ProbeCanvases(task=target, grid=v.grid).stream(study.sets[0], 0).chance
            found = {key: result.outcomes[v, f"readout {target} {key}"] for key in READOUTS}
            for key in READOUTS:
                row = {**_cell_fields(cell), "trained": v.task, "permute": v.permute, "target": target,
                       "readout": key.removeprefix("accuracy_") if key != "accuracy" else "plain",
                       "accuracy": proportion(found[key], unit=UNIT, item="readout test canvases"), "chance": chance}
                if key != "accuracy":
                    row["minus_plain"] = paired_difference(found[key], found["accuracy"], bounds=(-1.0, 1.0),
                                                           unit=UNIT, item="readout test canvases")
                rows.append(row)
    return rows


def budget_response(plan: BudgetPlan | BudgetSettings, work: Path, *, progress: bool = False) -> BudgetResult:
    """Train (or resume) every cell's GAP study in ``work/<cell>`` (cheapest first) with its backbone readouts, and
    estimate every cell's statistics and every series' trend over the main width's budgets."""
    plan = plan if isinstance(plan, BudgetPlan) else plan_budget_response(plan)
    c = plan.config
    after = partial(backbone_readouts, train_size=c.readout_train_size, test_size=c.readout_test_size)
    results = {cell: gap_study(plan.studies[cell], work / cell.key, progress=progress, after=after)
               for cell in plan.cells}
    grid = c.grids[0]
    chances = {task: 1 / next(tp.num_classes for v, tp in plan.studies[plan.cells[0]].plans.items()
                              if v.task == task) for task in c.tasks}
    found = [s for s in SERIES if s.task in c.tasks and (s.permute == "test-only" or s.permute in c.permutes)]
    scaling = [{**_cell_fields(cell), "metric": s.metric, "task": s.task, "permute": s.permute,
                "chance": chances[s.task], **_value(s.statistic(results[cell], grid))} for s in found for cell in plan.cells]
    main = [cell for cell in plan.cells if cell.width == c.width]
    trends = []
    for s in found:
        if s.metric == SHARE and any("mean" not in s.statistic(results[cell], grid) for cell in main):
            slope = {"estimable": False, "reason": "the share kept is not estimable at every budget"}
        else:
            slope = series_trend(s, main, results, grid, c.seeds, chances[s.task])
        trends.append({"metric": s.metric, "task": s.task, "permute": s.permute, "width": c.width,
                       "budgets": [cell.multiple for cell in main], "samples": [cell.samples for cell in main],
                       "seeds": list(c.seeds), "claim": s.claim, "toward": s.toward, "slope_per_doubling": slope,
                       "verdict": trend_verdict(slope, s.toward)})
    studies = [{**_cell_fields(cell), "seeds": list(cell.seeds), **results[cell].metrics()} for cell in plan.cells]
    readouts = [row for cell in plan.cells for row in _readout_rows(plan, cell, results[cell])]
    curves = [{**_cell_fields(cell), **row} for cell in plan.cells for row in results[cell].curves]
    return BudgetResult(studies, scaling, trends, readouts, curves)
