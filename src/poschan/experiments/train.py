"""`poschan train`: train and test a pooled CNN on k×k-grid canvases (location or semantic task) over seeds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from poschan.config import check_at_least, command_defaults, setting
from poschan.errors import UserError
from poschan.experiments.settings import (
    CanvasSettings,
    DataSettings,
    HeadSettings,
    NetworkSettings,
    PaddingSettings,
    RunSettings,
    TaskSettings,
    TrainingSettings,
)
from poschan.report.figures import learning_curves
from poschan.tables import write_csv
from poschan.training import TrainPlan, load_data, plan_for, train_classifier

EXPERIMENT = "train"
HELP = "train and test a pooled CNN on k×k-grid canvases (location or semantic task) over seeds"


@dataclass
@command_defaults
class Config(RunSettings, TrainingSettings, HeadSettings, PaddingSettings, NetworkSettings, DataSettings,
             CanvasSettings, TaskSettings):
    # fp32: the paired check did not show bf16 within ±0.01 on the GAP study's rows (results/precision-check)
    DEFAULTS: ClassVar[dict] = {"seeds": [0], "precision": "fp32"}

    permute: str = setting("none", "none, pooled, stage1..stage4 (random channel permutation, train and test)")
    permute_per_sample: bool = setting(False, "a new permutation for every image (default: one per batch)")

    def validate(self) -> None:
        check_at_least(self, 1, "grid", "epochs", "batch_size", "test_passes", "width")
        if len(self.betas) != 2:
            raise UserError(f"betas must be two numbers, got {self.betas}")
        if self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        check_at_least(self, 1, "train_size", "test_size", optional=True)


def prepare(config: Config) -> TrainPlan:
    """Load the data and build one model, so that every bad input fails before the run starts."""
    return plan_for(config, *load_data(config))


def run(plan: TrainPlan, work: Path, *, progress: bool = True) -> dict:
    """Train every seed; write curves and figure into ``work``; return the metrics of the results contract."""
    c = plan.config
    result = train_classifier(plan, work, progress=progress)
    write_csv(work / "curves.csv", result.curves)
    learning_curves(result.curves, work / "learning_curve.png", chance=result.chance,
                    title=f"{c.task} · {c.model} · {c.padding} · {c.head}")
    return result.metrics()

