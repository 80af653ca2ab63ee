"""Training and testing a pooled classifier over seeds: the one recipe of `train`, `gap-study` and `augshift`.

``plan_for`` checks settings against loaded data (the model built once and run on one canvas); ``train_seed``
trains (or resumes) one seed with ``engine.fit`` from initial weights that are a function of the seed alone
(``runtime.seeded_torch_rng``: the global RNG is left as it was); ``train_one_seed`` does so on k×k-grid canvases and
scores the test canvases; ``train_classifier`` trains every seed and estimates the test accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from poschan.data.fingerprint import check_disjoint
from poschan.data.sources import ImageSet, load_dataset
from poschan.data.stream import TEST_SEED_OFFSET, BatchSource, CanvasStream
from poschan.engine import EvalFn, LossFn, cross_entropy_loss, evaluation_seed, fit
from poschan.metrics.classification import outcomes
from poschan.models.registry import build_model
from poschan.runtime import resolve_device, seeded_torch_rng
from poschan.stats import proportion, versus_chance

# (model, test stream, passes, device) -> per-item 0/1 outcomes, in the test stream's order
Evaluator = Callable[[nn.Module, CanvasStream, int, torch.device], torch.Tensor]


class ClassifierSettings(Protocol):
    """What the recipe reads of a training configuration (``poschan.experiments.train.Config`` holds it all)."""

    data: str
    data_root: str | None
    train_size: int | None
    test_size: int | None
    task: str
    grid: int
    canvas: int | None
    background: str
    model: str
    width: int
    head: str
    padding: str
    permute: str
    permute_per_sample: bool
    pretrained: bool
    weights: str | None
    epochs: int
    batch_size: int
    test_passes: int
    seeds: list[int]
    device: str

    def fit_options(self, device: torch.device) -> dict: ...



class StudySettings(Protocol):
    """What a study over trained classifiers reads of its configuration besides its design: the seeds, where the
    jobs run (``poschan.executor``), and ``training(**changes)``, the checked training configuration of one run."""

    seeds: list[int]
    executor: str
    workers: int
    address: str | None
    device: str

    def training(self, **changes: Any) -> ClassifierSettings: ...


@dataclass
class TrainPlan:
    """Settings checked against their data: the image sets (re-normalised for the model) and the classes."""

    config: ClassifierSettings
    train_set: ImageSet
    test_set: ImageSet
    num_classes: int
    data_channels: int  # of the loaded images, which the model adapts to its own input channels

    def make_model(self) -> nn.Module:
        """A new model of these settings (its initial weights drawn from the global RNG)."""
        c = self.config
        return build_model(c.model, self.num_classes, self.data_channels, width=c.width, head=c.head,
                           padding=c.padding, permute=c.permute, permute_per_sample=c.permute_per_sample,
                           pretrained=c.pretrained, weights=c.weights)


def load_data(config: ClassifierSettings) -> tuple[ImageSet, ImageSet]:
    """The train and test image sets named by ``config`` (refused when they share an image)."""
    train_set = load_dataset(config.data, "train", config.data_root, limit=config.train_size)
    test_set = load_dataset(config.data, "test", config.data_root, limit=config.test_size)
    check_disjoint(train_set, test_set)
    return train_set, test_set


def plan_for(config: ClassifierSettings, train_set: ImageSet, test_set: ImageSet) -> TrainPlan:
    """Check ``config`` against already loaded data by building its model once and running it on one canvas."""
    config.fit_options(resolve_device(config.device))  # refuses unknown execution settings before any file
    probe = CanvasStream(train_set, config.task, config.grid, config.batch_size, seed=0, canvas=config.canvas,
                         background=config.background)
    plan = TrainPlan(config, train_set, test_set, probe.num_classes, train_set.channels)
    model = plan.make_model()
    plan.train_set = train_set.for_model(model.in_chans, model.input_norm)
    plan.test_set = test_set.for_model(model.in_chans, model.input_norm)
    with torch.no_grad():
        x, _ = next(iter(CanvasStream(plan.train_set, config.task, config.grid, 1, seed=0, canvas=config.canvas,
                                      background=config.background).epoch(0)))
        model.eval()(x)  # the model must take a canvas of this size
    return plan


def canvas_streams(plan: TrainPlan, seed: int) -> tuple[CanvasStream, CanvasStream]:
    """The training canvases of ``seed`` and the test canvases (in order, seeded ``seed + TEST_SEED_OFFSET``)."""
    c = plan.config
    common = dict(task=c.task, grid=c.grid, canvas=c.canvas, background=c.background)
    train = CanvasStream(plan.train_set, batch_size=c.batch_size, seed=seed, **common)
    test = CanvasStream(plan.test_set, batch_size=max(c.batch_size, 100), seed=seed + TEST_SEED_OFFSET,
                        shuffle=False, **common)
    return train, test


def plain_outcomes(model: nn.Module, test: CanvasStream, passes: int, device: torch.device) -> torch.Tensor:
    """The model's own per-item outcomes on the test stream (no intervention)."""
    return outcomes(model, test, passes=passes, device=device)


def train_seed(config: ClassifierSettings, make_model: Callable[[], nn.Module], train: BatchSource, seed: int,
               run_dir: Path, *, evaluate: EvalFn | None = None, loss_fn: LossFn | None = None,
               progress: bool = True, desc: str | None = None) -> tuple[nn.Module, list[dict]]:
    """Train (or resume) ``make_model()`` on ``train`` with ``config``'s optimiser and epochs in ``run_dir``
    (checkpoint.pt, metrics.csv, tensorboard/); the initial weights are a function of ``seed`` alone, so every
    recipe trained with one seed starts from the same weights; ``loss_fn`` defaults to cross-entropy. Returns the
    model and its per-epoch history."""
    device = resolve_device(config.device)
    with seeded_torch_rng(seed):
        model = make_model()
    run_dir.mkdir(parents=True, exist_ok=True)
    history = fit(model, train, epochs=config.epochs, **config.fit_options(device), seed=seed, device=device,
                  checkpoint=run_dir / "checkpoint.pt", log_csv=run_dir / "metrics.csv", evaluate=evaluate,
                  loss_fn=loss_fn or cross_entropy_loss, progress=progress, desc=desc or f"seed {seed}",
                  tensorboard=run_dir / "tensorboard")
    return model, history


@dataclass
class SeedResult:
    """One trained seed: the model, its per-epoch history and each evaluator's per-item outcomes at the end."""

    model: nn.Module
    history: list[dict]
    outcomes: dict[str, torch.Tensor]


def train_one_seed(plan: TrainPlan, seed: int, work: Path, *, progress: bool = True,
                   evaluators: Mapping[str, Evaluator] | None = None) -> SeedResult:
    """Train (or resume) one seed on canvases in ``work/seed<seed>``.

    After every epoch each evaluator scores the model on the test stream (default: ``test_accuracy``); the
    history holds accuracies, the result the last epoch's per-item outcomes (re-evaluated with the same RNG
    seed when a finished run is resumed, so they are the same).
    """
    c = plan.config
    device = resolve_device(c.device)
    train, test = canvas_streams(plan, seed)
    evaluators = evaluators or {"test_accuracy": plain_outcomes}
    last: dict[int, dict[str, torch.Tensor]] = {}

    def evaluate(m: nn.Module, epoch: int) -> dict:
        last[epoch] = {name: score(m, test, c.test_passes, device) for name, score in evaluators.items()}
        return {name: float(v.mean()) for name, v in last[epoch].items()}

    model, history = train_seed(c, plan.make_model, train, seed, work / f"seed{seed}", evaluate=evaluate,
                                progress=progress)
    if c.epochs not in last:
        with seeded_torch_rng(evaluation_seed(seed, c.epochs - 1)):
            evaluate(model, c.epochs)
    return SeedResult(model, history, last[c.epochs])


@dataclass
class ClassifierResult:
    """`train` over seeds: the learning curves (per seed and epoch) and the final test accuracy with intervals."""

    curves: list[dict]
    test_accuracy: dict
    test_accuracy_vs_chance: dict
    train_loss_per_seed: list[float]
    chance: float

    def metrics(self) -> dict:
        """The metrics of the results contract (results.json)."""
        return {"test_accuracy": self.test_accuracy, "test_accuracy_vs_chance": self.test_accuracy_vs_chance,
                "train_loss_per_seed": self.train_loss_per_seed, "chance": self.chance}


def train_classifier(plan: TrainPlan | ClassifierSettings, work: Path, *, progress: bool = False) -> ClassifierResult:
    """Train (or resume) every seed of ``plan`` (or of settings, loaded and planned here) in ``work/seed<S>``; the
    test accuracy over the seeds and test canvases, and against chance."""
    plan = plan if isinstance(plan, TrainPlan) else plan_for(plan, *load_data(plan))
    c = plan.config
    curves, hits = [], []
    for seed in c.seeds:
        result = train_one_seed(plan, seed, work, progress=progress)
        curves += [{"seed": seed, **{k: v for k, v in row.items() if k != "seconds"}} for row in result.history]
        hits.append(result.outcomes["test_accuracy"].numpy())
    chance = 1 / plan.num_classes
    return ClassifierResult(curves, proportion(hits, item="test canvases"), versus_chance(hits, chance),
                            [row["train_loss"] for row in curves if row["epoch"] == c.epochs], chance)

