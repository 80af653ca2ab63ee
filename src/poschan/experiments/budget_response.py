"""`poschan budget-response`: do the GAP study's permutation verdicts survive more training?

The study (cells, their GAP studies, backbone readouts, trends) is poschan.measure.budget_response; this command
configures it and writes its tables and figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from poschan.config import check_at_least, check_seeds, command_defaults, derive_checked, setting
from poschan.errors import UserError
from poschan.experiments import gap_study
from poschan.measure.budget_response import BudgetPlan, budget_response, cells, plan_budget_response
from poschan.report.budget_figures import budget_figures
from poschan.tables import comparison_rows, flat_stats, format_stat, write_csv

EXPERIMENT = "budget-response"
HELP = "the GAP study's permutation rows at growing training budgets: per-budget statistics and trends"


@dataclass
@command_defaults
class Config(gap_study.Config):
    # the GAP study's permutation rows only (the subset design with one padding, head and grid): none, test-only,
    # per-batch and per-sample after pooling, on both tasks, at the paper's schedule (constant Adam 1e-3, batch 48)
    DEFAULTS: ClassVar[dict] = {"precision": "fp32", "design": "subset", "heads": ["gap-fc"], "paddings": ["zeros"],
                                "grids": [3], "stage": None, "width": 8, "test_size": 1000}
    # each cell's epochs and images follow from its budget (measure.budget_response.budget_cell)
    FLAGS: ClassVar[dict] = {name: {"cli": False} for name in ("epochs", "train_size", "semantic_epochs",
                                                                 "semantic_train_size")}

    budgets: list[int] = setting([1, 4, 16], "comma-separated training budgets, multiples of --base-samples")
    base_samples: int = setting(32000, "training samples seen at budget 1 (the quick GAP study's semantic rows)")
    base_epochs: int = setting(4, "epochs at budget 1; budget m trains round(base_epochs·√m) epochs of "
                                  "base_samples·m/epochs images")
    wide: list[str] = setting(["16@4"], "comma-separated extra cells WIDTH@BUDGET at another width, e.g. 16@4")
    extra_seeds: list[int] = setting([3, 4], "more networks at the largest budget of --width, where its verdicts "
                                             "are decided (comma-separated)")
    readout_train_size: int = setting(2000, "canvases that fit each backbone readout")
    readout_test_size: int = setting(1000, "canvases that score each backbone readout")

    def validate(self) -> None:
        super().validate()
        if len(set(self.budgets)) < 2 or min(self.budgets) < 1:
            raise UserError(f"budgets must be at least two distinct multiples >= 1 (a trend needs two), "
                            f"got {self.budgets}")
        check_at_least(self, 1, "base_samples", "base_epochs", "readout_train_size", "readout_test_size")
        if self.extra_seeds:
            check_seeds([*self.seeds, *self.extra_seeds])
        if len(self.seeds) < 2:
            raise UserError("a trend's interval needs at least two seeds (e.g. --seeds 0,1,2)")
        cells(self)  # the wide cells parse, and no cell is repeated

    def study(self, **changes: Any) -> gap_study.Config:
        """The checked GAP-study configuration of one cell."""
        return derive_checked(gap_study.Config, self, **changes)


def prepare(config: Config) -> BudgetPlan:
    """Plan every cell (data loaded, variants checked) before anything is written."""
    return plan_budget_response(config)


def run(plan: BudgetPlan, work: Path, *, progress: bool = True) -> dict:
    result = budget_response(plan, work, progress=progress)
    cells = [{k: v for k, v in cell.items() if k in ("cell", "width", "multiple", "samples")} for cell in result.cells]
    write_csv(work / "table.csv", [{**c, **flat_stats(r)} for c, cell in zip(cells, result.cells)
                                   for r in cell["rows"]])
    write_csv(work / "comparisons.csv", [{**c, **r} for c, cell in zip(cells, result.cells)
                                         for r in comparison_rows(cell["comparisons"])])
    write_csv(work / "scaling.csv", [flat_stats(r) for r in result.scaling])
    write_csv(work / "trends.csv", [flat_stats(t) for t in result.trends])
    write_csv(work / "readouts.csv", [flat_stats(r) for r in result.readouts])
    write_csv(work / "curves.csv", result.curves)
    budget_figures(result.scaling, result.trends, result.readouts, result.curves, work)
    return result.metrics()


def print_summary(metrics: dict) -> None:
    for s in metrics["scaling"]:
        print(f"{s['task']:<9}{s['permute']:<11}{s['cell']:<8}{s['samples']:>9,}  {s['metric']:<40}"
              f"{format_stat(s['value']) if s['value'] else s['note']}")
    for t in metrics["trends"]:
        slope = t["slope_per_doubling"]
        print(f"{t['task']} {t['permute']}: {t['metric']}, slope per doubling "
              f"{format_stat(slope, 4, signed=True) if 'mean' in slope else slope['reason']}: {t['verdict']}")
