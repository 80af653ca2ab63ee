"""`poschan probe`: a linear readout of position (or semantics) from the pooled features of a FROZEN backbone
(``poschan.measure.probe_study``: three readouts, their intervals and paired comparisons), at the requested layers.

The backbone is one, of the first seed. Train canvases come from the train split and test canvases from the test
split; ``photos`` (17 real photographs, one split) is split by index: every third photo (index 0, 3, 6, ...) is a
test photo, the others are train photos, so no photo is seen by both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from poschan.config import command_defaults, setting
from poschan.data.fingerprint import check_disjoint
from poschan.data.sources import ImageSet, load_dataset
from poschan.errors import UserError
from poschan.experiments import settings
from poschan.measure.probe_study import READOUTS, ProbeCanvases, probe_study
from poschan.models.poolnet import PoolNet
from poschan.models.registry import build_model
from poschan.report.probe_figures import probe_accuracy
from poschan.runtime import resolve_device, seeded_torch_rng
from poschan.tables import format_stat, print_comparisons, write_csv, write_tables
from poschan.taps import pooled_features, resolve_layers

EXPERIMENT = "probe"
READOUT_FLAGS = {"plain": "accuracy", "permuted-test": "accuracy_permuted_test",
                 "permuted-train": "accuracy_permuted_train", "sorted": "accuracy_sorted", "moments": "accuracy_moments"}
HELP = "linear readout of position/semantics from pooled features of a frozen backbone at named layers"


@dataclass
@command_defaults
class Config(settings.RunSettings, settings.ReadoutSettings, settings.BatchSettings, settings.TestSizeSettings, settings.TrainSizeSettings,
             settings.LayersSettings, settings.PaddingSettings, settings.NetworkSettings, settings.DataSettings,
             settings.CanvasSettings, settings.TaskSettings):
    DEFAULTS: ClassVar[dict] = {"model": "efficientnet-lite0", "train_size": 2000, "test_size": 1000, "batch_size": 200}
    FLAGS: ClassVar[dict] = {"train_size": {"help": "training canvases per seed"},
                             "test_size": {"help": "test canvases per seed"},
                             "batch_size": {"help": "canvases per forward pass"}}

    readouts: list[str] = setting(list(READOUT_FLAGS),
                                  f"comma-separated readouts, plain first: {', '.join(READOUT_FLAGS)} (sorted, "
                                  "moments: order-free codes of the pooled vector)")

    def validate(self) -> None:
        self.canvases().validate()
        if self.width < 1:
            raise UserError(f"width must be >= 1, got {self.width}")
        unknown = [name for name in self.readouts if name not in READOUT_FLAGS]
        if unknown:
            raise UserError(f"unknown readout {unknown[0]!r}; allowed: {', '.join(READOUT_FLAGS)}")
        if len(set(self.readouts)) != len(self.readouts) or "plain" not in self.readouts:
            raise UserError("readouts must name each readout once, plain among them (the comparisons' baseline), "
                            f"got {','.join(self.readouts)}")
        if self.readout_c <= 0:
            raise UserError(f"readout_c (inverse L2 strength of the readout) must be > 0, got {self.readout_c}")
        if self.data == "photos" and self.task == "semantic":
            raise UserError("the semantic task needs classes shared by train and test images; photos has one "
                            "image per class (use --task location, or --data fashion-mnist)")

    def readout_keys(self) -> list[str]:
        return [READOUT_FLAGS[name] for name in self.readouts]

    def canvases(self) -> ProbeCanvases:
        return ProbeCanvases(self.task, self.grid, self.canvas, self.background, self.train_size, self.test_size,
                             self.batch_size)


@dataclass
class ProbePlan:
    """Everything validated before any file is written (image sets as loaded; re-normalised per draw)."""

    config: Config
    train_set: ImageSet
    test_set: ImageSet
    model: PoolNet
    layers: list[str]
    device: torch.device


def split_sets(config: Config) -> tuple[ImageSet, ImageSet]:
    """(train images, test images) of the dataset (photos: split by index, see data.sources.PHOTO_TEST_EVERY);
    refused when they share an image."""
    sets = (load_dataset(config.data, "train", config.data_root), load_dataset(config.data, "test", config.data_root))
    check_disjoint(*sets)
    return sets


def prepare(config: Config) -> ProbePlan:
    """Load the data, build the frozen model and run one canvas through every layer: all bad input fails here."""
    device = resolve_device(config.device)
    train_set, test_set = split_sets(config)
    num_classes = config.canvases().stream(train_set, 0).num_classes  # checks task, grid, canvas and background
    if config.train_size < num_classes:
        raise UserError(f"train_size must be >= the {num_classes} classes, got {config.train_size}")
    with seeded_torch_rng(config.seeds[0]):  # random-init weights: a function of the first seed
        model = build_model(config.model, num_classes, train_set.channels, width=config.width, padding=config.padding,
                            pretrained=config.pretrained, weights=config.weights)
    model.eval().requires_grad_(False).to(device)
    layers = resolve_layers(model, config.layers or [*model.stages, "backbone"])
    one = train_set.subset(1).for_model(model.in_chans, model.input_norm)
    x, _ = next(iter(config.canvases().stream(one, 0).epoch(0, device)))
    pooled_features(model, x, layers)  # non-4-D layers fail
    return ProbePlan(config, train_set, test_set, model, layers, device)


def run(plan: ProbePlan, work: Path, *, progress: bool = True) -> dict:
    """Probe every layer over seeds; write per_seed.csv, table.csv and probe.png; return the metrics."""
    c = plan.config
    result = probe_study(plan.model, plan.layers, plan.train_set, plan.test_set, c.canvases(), seeds=c.seeds,
                         c=c.readout_c, readouts=c.readout_keys(), device=plan.device, progress=progress)
    write_csv(work / "per_seed.csv", result.per_seed)
    write_tables(work, result.rows, result.comparisons)
    stages = {f"backbone.{module}": name for name, module in plan.model.stages.items()}
    probe_accuracy(result.rows, [stages.get(layer, layer.removeprefix("backbone.")) for layer in plan.layers],
                   {key: READOUTS[key] for key in c.readout_keys()}, work / "probe.png", chance=result.rows[0]["chance"],
                   title=f"{c.task} readout · {c.model}{' (pretrained)' if c.pretrained else ''} · {c.data}")
    return result.metrics()


def print_summary(metrics: dict) -> None:
    print(f"readout accuracy (mean [95% CI]), {metrics['n_train']} train / {metrics['n_test']} test canvases per "
          f"seed, chance {metrics['layers'][0]['chance']:.3f}")
    shown = [key for key in READOUTS if key in metrics["layers"][0]]
    print(f"{'layer':<28} {'C':>5}  " + "  ".join(f"{READOUTS[key].removesuffix(' (order-free)'):>21}" for key in shown))
    for row in metrics["layers"]:
        cells = [format_stat(row[key]) for key in shown]
        print(f"{row['layer']:<28} {row['channels']:>5}  " + "  ".join(f"{cell:>21}" for cell in cells))
    print_comparisons(metrics["comparisons"])
