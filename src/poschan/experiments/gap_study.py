"""`poschan gap-study`: does position survive global pooling, and does it live in channel order?

The study (variants, training jobs, statistics) is poschan.measure.gap_study; this command configures it and writes
its tables and figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from poschan.config import command_defaults, derive_checked, setting
from poschan.errors import UserError
from poschan.experiments import train
from poschan.experiments.settings import (
    BackgroundSettings,
    DataSettings,
    ExecutorSettings,
    NetworkSettings,
    PaddingsSettings,
    RunSettings,
    TrainingSettings,
)
from poschan.measure.gap_study import TRAINED_PERMUTES, GapStudyPlan, gap_study, plan_gap_study
from poschan.report.gap_figures import gap_figures
from poschan.tables import flat_stats, format_stat, write_csv, write_tables

EXPERIMENT = "gap-study"
HELP = "GAPNet vs PermuteNet: location/semantic accuracy from pooled features across heads, paddings, grids"


@dataclass
@command_defaults
class Config(ExecutorSettings, RunSettings, TrainingSettings, PaddingsSettings, BackgroundSettings, DataSettings,
             NetworkSettings):
    # fp32: the paired check did not show bf16 within ±0.01 on every row (results/precision-check)
    DEFAULTS: ClassVar[dict] = {"precision": "fp32"}

    design: str = setting("full", "full (cross product) or subset (designed subset)")
    tasks: list[str] = setting(["location", "semantic"], "comma-separated: location,semantic")
    heads: list[str] = setting(["gap-fc", "gapnet"], "comma-separated: gap-fc,gapnet")
    grids: list[int] = setting([3, 5, 7], "comma-separated grid sizes, e.g. 3,5")
    permutes: list[str] = setting(["per-batch", "per-sample"],
                                  "trained permutations after pooling: per-batch,per-sample")
    stage: str | None = setting("stage3", "stage to permute before as well (e.g. stage3)")
    stage_permutes: list[str] = setting(["per-batch", "per-sample"], "trained permutations before the stage",
                                        cli=False)
    semantic_epochs: int | None = setting(None, "epochs of the semantic rows (default: --epochs)")
    semantic_train_size: int | None = setting(None, "training items per epoch of the semantic rows (default: "
                                                    "--train-size)")

    def validate(self) -> None:
        self.check_executor()
        if self.design not in ("full", "subset"):
            raise UserError(f"design must be 'full' (the cross product) or 'subset' (the designed quick subset), "
                            f"got {self.design!r}")
        for name in ("tasks", "heads", "paddings", "grids"):
            if not getattr(self, name):
                raise UserError(f"{name} must name at least one value")
        for p in [*self.permutes, *self.stage_permutes]:
            if p not in TRAINED_PERMUTES[1:]:
                raise UserError(f"unknown permutation {p!r}; allowed: {', '.join(TRAINED_PERMUTES[1:])}")
        if self.design == "subset" and ("location" not in self.tasks or "zeros" not in self.paddings):
            raise UserError("the subset design needs task 'location' and padding 'zeros'")

    def training(self, **changes: Any) -> train.Config:
        """The checked `train` configuration of one variant: this study's shared fields, ``changes`` applied."""
        return derive_checked(train.Config, self, **changes)


def prepare(config: Config) -> GapStudyPlan:
    """Load the data once and check every variant before anything is written."""
    return plan_gap_study(config)


def run(plan: GapStudyPlan, work: Path, *, progress: bool = True) -> dict:
    result = gap_study(plan, work, progress=progress)
    write_tables(work, result.rows, result.comparisons)
    write_csv(work / "curves.csv", result.curves)
    if result.plateaus:
        write_csv(work / "plateaus.csv", [flat_stats(e) for e in result.plateaus])
    gap_figures(result.rows, result.curves, work)
    return result.metrics()


def print_summary(metrics: dict) -> None:
    print(f"{'task':<9}{'head':<8}{'padding':<10}{'grid':>4}  {'permute':<12}{'where':<8}"
          f"{'accuracy [95% CI]':<24}{'chance':>7}")
    for r in metrics["rows"]:
        print(f"{r['task']:<9}{r['head']:<8}{r['padding']:<10}{r['grid']:>4}  {r['permute']:<12}{r['where']:<8}"
              f"{format_stat(r['accuracy']):<24}{r['chance']:>7.3f}")
    for p in metrics.get("plateaus", []):
        print(f"{p['variant']} [{p['eval']}]: epoch {p['epochs']} {p['final']['mean']:.3f}, slope per epoch since "
              f"epoch {p['since_epoch']} {format_stat(p['slope'], 4, signed=True)}: {p['trend']}")
