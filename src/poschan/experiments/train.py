"""`poschan train`: train and test a pooled CNN on k×k-grid canvases (location or semantic task) over seeds."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from poschan.config import command_defaults, setting
from poschan.data.fingerprint import check_disjoint
from poschan.data.sources import ImageSet, load_dataset
from poschan.data.stream import CanvasStream
from poschan.engine import evaluation_seed, fit
from poschan.errors import UserError
from poschan.experiments.settings import (
    CanvasSettings,
    DataSettings,
    HeadSettings,
    ModelSettings,
    PaddingSettings,
    PretrainedSettings,
    RunSettings,
    TaskSettings,
    TrainingSettings,
    WidthSettings,
)
from poschan.metrics.classification import outcomes
from poschan.models.registry import build_model
from poschan.report.figures import learning_curves
from poschan.runtime import resolve_device
from poschan.stats import proportion, versus_chance
from poschan.tables import write_csv

EXPERIMENT = "train"
HELP = "train and test a pooled CNN on k×k-grid canvases (location or semantic task) over seeds"
TEST_SEED_OFFSET = 10_000  # test canvases use their own stream, never the training one
# (model, test stream, passes, device) -> per-item 0/1 outcomes, in the test stream's order
Evaluator = Callable[[nn.Module, CanvasStream, int, torch.device], torch.Tensor]


@dataclass
@command_defaults
class Config(RunSettings, TrainingSettings, HeadSettings, PaddingSettings, PretrainedSettings, WidthSettings,
             ModelSettings, DataSettings, CanvasSettings, TaskSettings):
    # fp32: the paired check did not show bf16 within ±0.01 on the GAP study's rows (results/precision-check)
    DEFAULTS: ClassVar[dict] = {"seeds": [0], "precision": "fp32"}

    permute: str = setting("none", "none, pooled, stage1..stage4 (random channel permutation, train and test)")
    permute_per_sample: bool = setting(False, "a new permutation for every image (default: one per batch)")

    def validate(self) -> None:
        for key in ("grid", "epochs", "batch_size", "test_passes", "width"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be >= 1, got {getattr(self, key)}")
        if len(self.betas) != 2:
            raise UserError(f"betas must be two numbers, got {self.betas}")
        if self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        for key in ("train_size", "test_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise UserError(f"{key} must be >= 1 or null (all), got {getattr(self, key)}")


@dataclass
class TrainPlan:
    """Everything validated before any file is written."""

    config: Config
    train_set: ImageSet
    test_set: ImageSet
    make_model: Callable[[], nn.Module]
    num_classes: int


def load_data(config: Config) -> tuple[ImageSet, ImageSet]:
    """The train and test image sets named by the configuration (refused when they share an image)."""
    train_set = load_dataset(config.data, "train", config.data_root, limit=config.train_size)
    test_set = load_dataset(config.data, "test", config.data_root, limit=config.test_size)
    check_disjoint(train_set, test_set)
    return train_set, test_set


def prepare(config: Config) -> TrainPlan:
    """Load the data and build one model, so that every bad input fails before the run starts."""
    return plan_for(config, *load_data(config))


def plan_for(config: Config, train_set: ImageSet, test_set: ImageSet) -> TrainPlan:
    """Validate ``config`` against already loaded data by building its model once and running one canvas."""
    config.fit_options(resolve_device(config.device))  # refuses unknown execution settings before any file
    probe = CanvasStream(train_set, config.task, config.grid, config.batch_size, seed=0, canvas=config.canvas,
                         background=config.background)
    data_chans = train_set.channels

    def make_model() -> nn.Module:
        return build_model(config.model, probe.num_classes, data_chans, width=config.width,
                           head=config.head, padding=config.padding, permute=config.permute,
                           permute_per_sample=config.permute_per_sample, pretrained=config.pretrained,
                           weights=config.weights)

    model = make_model()
    train_set = train_set.for_model(model.in_chans, model.input_norm)
    test_set = test_set.for_model(model.in_chans, model.input_norm)
    with torch.no_grad():
        x, _ = next(iter(CanvasStream(train_set, config.task, config.grid, 1, seed=0, canvas=config.canvas,
                                      background=config.background).epoch(0)))
        model.eval()(x)  # the model must take a canvas of this size
    return TrainPlan(config, train_set, test_set, make_model, probe.num_classes)


def streams(plan: TrainPlan, seed: int) -> tuple[CanvasStream, CanvasStream]:
    c = plan.config
    common = dict(task=c.task, grid=c.grid, canvas=c.canvas, background=c.background)
    train = CanvasStream(plan.train_set, batch_size=c.batch_size, seed=seed, **common)
    test = CanvasStream(plan.test_set, batch_size=max(c.batch_size, 100), seed=seed + TEST_SEED_OFFSET,
                        shuffle=False, **common)
    return train, test


def plain_outcomes(model: nn.Module, test: CanvasStream, passes: int, device: torch.device) -> torch.Tensor:
    return outcomes(model, test, passes=passes, device=device)


@dataclass
class SeedResult:
    """One trained seed: the model, its per-epoch history and each evaluator's per-item outcomes at the end."""

    model: nn.Module
    history: list[dict]
    outcomes: dict[str, torch.Tensor]


def train_one_seed(plan: TrainPlan, seed: int, work: Path, *, progress: bool = True,
                   evaluators: Mapping[str, Evaluator] | None = None) -> SeedResult:
    """Train (or resume) one seed in ``work/seed<seed>``.

    After every epoch each evaluator scores the model on the test stream (default: ``test_accuracy``); the
    history holds accuracies, the result the last epoch's per-item outcomes (re-evaluated with the same RNG
    seed when a finished run is resumed, so they are the same).
    """
    c = plan.config
    device = resolve_device(c.device)
    torch.manual_seed(seed)
    model = plan.make_model()
    train, test = streams(plan, seed)
    run_dir = work / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    evaluators = evaluators or {"test_accuracy": plain_outcomes}
    last: dict[int, dict[str, torch.Tensor]] = {}

    def evaluate(m: nn.Module, epoch: int) -> dict:
        last[epoch] = {name: score(m, test, c.test_passes, device) for name, score in evaluators.items()}
        return {name: float(v.mean()) for name, v in last[epoch].items()}

    history = fit(model, train, epochs=c.epochs, **c.fit_options(device), seed=seed, device=device,
                  checkpoint=run_dir / "checkpoint.pt", log_csv=run_dir / "metrics.csv", evaluate=evaluate,
                  progress=progress, desc=f"seed {seed}", tensorboard=run_dir / "tensorboard")
    if c.epochs not in last:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(evaluation_seed(seed, c.epochs - 1))
            evaluate(model, c.epochs)
    return SeedResult(model, history, last[c.epochs])


def run(plan: TrainPlan, work: Path, *, progress: bool = True) -> dict:
    """Train every seed; write curves and figure into ``work``; return the metrics of the results contract."""
    c = plan.config
    curves, hits = [], []
    for seed in c.seeds:
        result = train_one_seed(plan, seed, work, progress=progress)
        curves += [{"seed": seed, **{k: v for k, v in row.items() if k != "seconds"}} for row in result.history]
        hits.append(result.outcomes["test_accuracy"].numpy())
    final = [row for row in curves if row["epoch"] == c.epochs]
    write_csv(work / "curves.csv", curves)
    learning_curves(curves, work / "learning_curve.png", chance=1 / plan.num_classes,
                    title=f"{c.task} · {c.model} · {c.padding} · {c.head}")
    return {
        "test_accuracy": proportion(hits, item="test canvases"),
        "test_accuracy_vs_chance": versus_chance(hits, 1 / plan.num_classes),
        "train_loss_per_seed": [row["train_loss"] for row in final],
        "chance": 1 / plan.num_classes,
    }

