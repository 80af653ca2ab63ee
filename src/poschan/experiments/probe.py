"""`poschan probe`: a linear readout of position (or semantics) from the pooled features of a FROZEN backbone.

At every requested layer the global-average-pooled features of train canvases fit a linear readout
(poschan.readout: standardisation + L2 logistic regression) that is scored on test canvases, three ways:
``accuracy`` (plain), ``accuracy_permuted_test`` (the plain readout on test features whose channels are
shuffled per sample: does the readout depend on channel order?) and ``accuracy_permuted_train`` (a readout
fit and scored on per-sample-shuffled features: can an order-free readout still find the answer?).

Each seed draws its own images, canvases and permutations (the backbone is one, of the first seed). Train canvases
come from the train split and test canvases from the test split; ``photos`` (17 real photographs, one split) is
split by index: every third photo (index 0, 3, 6, ...) is a test photo, the others are train photos, so no photo is
seen by both.

Accuracies are estimated from the 0/1 outcome of every test canvas (poschan.stats: intervals over seeds and test
canvases); ``comparisons`` holds, per layer, the plain accuracy minus each permuted one on the same test canvases,
and each layer's ``vs_chance`` an exact binomial test of its plain accuracy against chance.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from poschan.config import command_defaults, setting
from poschan.data.fingerprint import check_disjoint
from poschan.data.sources import ImageSet, load_dataset
from poschan.data.stream import CanvasStream
from poschan.errors import UserError
from poschan.experiments.settings import (
    BatchSettings,
    CanvasSettings,
    DataSettings,
    LayersSettings,
    ModelSettings,
    PaddingSettings,
    PretrainedSettings,
    RunSettings,
    TaskSettings,
    TestSizeSettings,
    TrainSizeSettings,
    WidthSettings,
)
from poschan.measure.readout import DEFAULT_C, fit_readout, permute_features, readout_outcomes
from poschan.models.poolnet import PoolNet
from poschan.models.registry import build_model
from poschan.report.probe_figures import PROBE_VARIANTS, probe_accuracy
from poschan.runtime import resolve_device, seeded_generator, seeded_init
from poschan.stats import paired_difference, proportion, versus_chance
from poschan.tables import comparison_line, comparison_rows, flat_stats, write_csv
from poschan.taps import extract_pooled, pooled_features, resolve_layers

EXPERIMENT = "probe"
HELP = "linear readout of position/semantics from pooled features of a frozen backbone at named layers"
TEST_SEED_OFFSET = 10_000  # test draws use their own seeds, never the training ones
UNIT, ITEM = "seeds (canvases, readout fit, permutations; one backbone)", "test canvases"


@dataclass
@command_defaults
class Config(RunSettings, BatchSettings, TestSizeSettings, TrainSizeSettings, LayersSettings, PaddingSettings,
             PretrainedSettings, WidthSettings, ModelSettings, DataSettings, CanvasSettings, TaskSettings):
    DEFAULTS: ClassVar[dict] = {"model": "efficientnet-lite0", "train_size": 2000, "test_size": 1000, "batch_size": 200}
    FLAGS: ClassVar[dict] = {"train_size": {"help": "training canvases per seed"},
                             "test_size": {"help": "test canvases per seed"},
                             "batch_size": {"help": "canvases per forward pass"}}

    readout_c: float = setting(DEFAULT_C,
                               f"inverse L2 strength of the logistic-regression readout (default {DEFAULT_C})")

    def validate(self) -> None:
        for key in ("train_size", "test_size", "batch_size", "width"):
            if getattr(self, key) is None or getattr(self, key) < 1:
                raise UserError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.readout_c <= 0:
            raise UserError(f"readout_c (inverse L2 strength of the readout) must be > 0, got {self.readout_c}")
        if self.data == "photos" and self.task == "semantic":
            raise UserError("the semantic task needs classes shared by train and test images; photos has one "
                            "image per class (use --task location, or --data fashion-mnist)")


@dataclass
class ProbePlan:
    """Everything validated before any file is written (image sets as loaded; re-normalised per draw)."""

    config: Config
    train_set: ImageSet
    test_set: ImageSet
    model: PoolNet
    layers: list[str]
    channels: dict[str, int]
    num_classes: int
    device: torch.device


def split_sets(config: Config) -> tuple[ImageSet, ImageSet]:
    """(train images, test images) of the dataset (photos: split by index, see data.sources.PHOTO_TEST_EVERY);
    refused when they share an image."""
    sets = (load_dataset(config.data, "train", config.data_root), load_dataset(config.data, "test", config.data_root))
    check_disjoint(*sets)
    return sets


def _stream(config: Config, images: ImageSet, seed: int) -> CanvasStream:
    return CanvasStream(images, config.task, config.grid, config.batch_size, seed=seed, canvas=config.canvas,
                        background=config.background, shuffle=False)


def prepare(config: Config) -> ProbePlan:
    """Load the data, build the frozen model and run one canvas through every layer: all bad input fails here."""
    device = resolve_device(config.device)
    train_set, test_set = split_sets(config)
    num_classes = _stream(config, train_set, 0).num_classes  # checks task, grid, canvas and background
    if config.train_size < num_classes:
        raise UserError(f"train_size must be >= the {num_classes} classes, got {config.train_size}")
    with seeded_init(config.seeds[0]):  # random-init weights: a function of the first seed
        model = build_model(config.model, num_classes, train_set.channels, width=config.width, padding=config.padding,
                            pretrained=config.pretrained, weights=config.weights)
    model.eval().requires_grad_(False).to(device)
    layers = resolve_layers(model, config.layers or [*model.stages, "backbone"])
    one = train_set.subset(1).for_model(model.in_chans, model.input_norm)
    x, _ = next(iter(_stream(config, one, 0).epoch(0, device)))
    channels = {name: f.shape[1] for name, f in pooled_features(model, x, layers).items()}  # non-4-D layers fail
    return ProbePlan(config, train_set, test_set, model, layers, channels, num_classes, device)


def draw(images: ImageSet, n: int, seed: int) -> ImageSet:
    """``n`` images drawn at random with ``seed``, each image of the set equally often (±1) when n > len."""
    generator = torch.Generator().manual_seed(seed)
    repeats = -(-n // len(images))
    index = torch.cat([torch.randperm(len(images), generator=generator) for _ in range(repeats)])[:n]
    return dataclasses.replace(images, images=images.images[index], labels=images.labels[index])


def seed_features(plan: ProbePlan, seed: int) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor], Tensor]:
    """(train features per layer, train labels, test features per layer, test labels) of one seed."""
    c = plan.config
    out = []
    for images, n, stream_seed in ((plan.train_set, c.train_size, seed),
                                   (plan.test_set, c.test_size, seed + TEST_SEED_OFFSET)):
        # re-normalised after drawing: never a model-sized copy of a whole split
        drawn = draw(images, n, stream_seed).for_model(plan.model.in_chans, plan.model.input_norm)
        stream = _stream(c, drawn, stream_seed)
        out += extract_pooled(plan.model, stream, plan.layers, device=plan.device)
    return out[0], out[1], out[2], out[3]


def probe_layer(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, seed: int, c: float,
                generator: torch.Generator) -> dict[str, np.ndarray]:
    """The 0/1 outcomes per test row of the three readouts (see the module docstring) of one layer and seed."""
    test_perm = permute_features(test_x, generator)
    plain = fit_readout(train_x, train_y, seed=seed, c=c)
    order_free = fit_readout(permute_features(train_x, generator), train_y, seed=seed, c=c)
    return {
        "accuracy": readout_outcomes(plain, test_x, test_y),
        "accuracy_permuted_test": readout_outcomes(plain, test_perm, test_y),
        "accuracy_permuted_train": readout_outcomes(order_free, test_perm, test_y),
    }


def layer_label(model: PoolNet, layer: str) -> str:
    """A short name for figures: the stage name where there is one."""
    stage = {f"backbone.{module}": name for name, module in model.stages.items()}
    return stage.get(layer, layer.removeprefix("backbone."))


def run(plan: ProbePlan, work: Path, *, progress: bool = True) -> dict:
    """Probe every layer over seeds; write per_seed.csv, table.csv and probe.png; return the metrics."""
    c = plan.config
    chance = 1 / plan.num_classes
    per_seed = []
    outcomes: dict[str, dict[str, list[np.ndarray]]] = {layer: {k: [] for k in PROBE_VARIANTS} for layer in plan.layers}
    for seed in tqdm(c.seeds, desc="probe seeds", disable=None if progress else True, leave=False):
        train_f, train_y, test_f, test_y = seed_features(plan, seed)
        for layer in plan.layers:
            scores = probe_layer(train_f[layer], train_y, test_f[layer], test_y, seed=seed, c=c.readout_c,
                                 generator=seeded_generator(seed, layer))
            for key, hits in scores.items():
                outcomes[layer][key].append(hits)
            per_seed.append({"seed": seed, "layer": layer, **{k: float(v.mean()) for k, v in scores.items()}})
    rows = [{"layer": layer, "channels": plan.channels[layer],
             **{key: proportion(outcomes[layer][key], unit=UNIT, item=ITEM) for key in PROBE_VARIANTS},
             "chance": chance, "vs_chance": versus_chance(outcomes[layer]["accuracy"], chance)}
            for layer in plan.layers]
    paired = _comparisons(outcomes)
    write_csv(work / "per_seed.csv", per_seed)
    write_csv(work / "table.csv", [flat_stats(row) for row in rows])
    write_csv(work / "comparisons.csv", comparison_rows(paired))
    probe_accuracy(rows, [layer_label(plan.model, r["layer"]) for r in rows], work / "probe.png", chance=chance,
                   title=f"{c.task} readout · {c.model}{' (pretrained)' if c.pretrained else ''} · {c.data}")
    return {"layers": rows, "comparisons": paired, "n_train": c.train_size, "n_test": c.test_size}


def _comparisons(outcomes: dict[str, dict[str, list[np.ndarray]]]) -> list[dict]:
    """Per layer: the plain accuracy minus each permuted variant's, on the same seeds and test canvases."""
    return [{"name": f"{layer}:plain_vs_{key.removeprefix('accuracy_')}", "a": PROBE_VARIANTS["accuracy"],
             "b": PROBE_VARIANTS[key],
             "question": f"Does the readout at {layer} lose accuracy when the channels are {PROBE_VARIANTS[key]}?",
             **paired_difference(o["accuracy"], o[key], bounds=(-1.0, 1.0), unit=UNIT, item=ITEM)}
            for layer, o in outcomes.items() for key in PROBE_VARIANTS if key != "accuracy"]


def print_summary(metrics: dict) -> None:
    print(f"readout accuracy (mean [95% CI]), {metrics['n_train']} train / {metrics['n_test']} test canvases per "
          f"seed, chance {metrics['layers'][0]['chance']:.3f}")
    print(f"{'layer':<28} {'C':>5}  {'plain':>21}  {'permuted test':>21}  {'permuted train':>21}")
    for row in metrics["layers"]:
        cells = [f"{s['mean']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]" for s in
                 (row[key] for key in PROBE_VARIANTS)]
        print(f"{row['layer']:<28} {row['channels']:>5}  " + "  ".join(f"{cell:>21}" for cell in cells))
    for d in metrics["comparisons"]:
        print(comparison_line(d))
