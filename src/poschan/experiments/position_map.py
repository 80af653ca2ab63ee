"""`poschan position-map`: how much absolute position a frozen CNN's feature maps encode (Islam et al., ICLR 2020;
``poschan.measure.position_map_study``: the padding-free readout, SPC / MAE per crop, the shuffled-features control
and the paired comparisons), per padding mode of one backbone, on crops of the photos of scikit-image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from poschan.config import command_defaults, setting
from poschan.data.sources import PHOTOS, ImageSet, load_dataset
from poschan.errors import UserError
from poschan.experiments import settings
from poschan.measure.position_map_study import MapReadoutDesign, check_backbones, padding_variants, position_map_study
from poschan.measure.position_maps import GAUSSIAN_SIGMA, TARGETS
from poschan.models.padding import PADDING_MODES
from poschan.models.poolnet import PoolNet
from poschan.models.registry import build_model
from poschan.report.position_figures import position_map_figure, spc_bars
from poschan.runtime import resolve_device
from poschan.tables import comparison_rows, flat_stats, format_stat, print_comparisons, write_csv
from poschan.taps import resolve_layers

EXPERIMENT = "position-map"
HELP = "read a fixed position map out of frozen features with a padding-free readout (SPC/MAE), per padding mode"
PHOTO_SIDE = 256  # resolution of the photo bank the crops are taken from
_PRETRAINED_MODELS = ("efficientnet-lite0",)  # models with packaged weights (see models.registry)
# Test photos by default: every third photo (PHOTOS[2::3]), so that train and test photos are disjoint.
DEFAULT_TEST_PHOTOS = list(PHOTOS[2::3])


@dataclass
@command_defaults
class Config(settings.RunSettings, settings.LearningRateSettings, settings.ImageSizeSettings,
             settings.PaddingsSettings, settings.LayersSettings, settings.NetworkSettings):
    """Resolved settings of one position-map run (defaults < preset < --config < flags)."""

    # pretrained None: the packaged weights where the model has them (and no --weights)
    DEFAULTS: ClassVar[dict] = {"model": "efficientnet-lite0", "pretrained": None,
                                "layers": ["stage1", "stage2", "stage3", "stage4"], "paddings": ["zeros", "circular"],
                                "image_size": 128, "lr": 3e-3}
    FLAGS: ClassVar[dict] = {
        "pretrained": {"negative": "--no-pretrained",
                       "negative_help": "random init even where packaged weights exist (default: packaged weights "
                                        "if any)"},
        "layers": {"help": "comma-separated layers: the model's stage names (stage1..stage4) or dotted names from "
                           "`poschan layers MODEL`"},
        "paddings": {"help": f"comma-separated backbone paddings: {', '.join(PADDING_MODES)}"},
        "lr": {"help": "learning rate of the readout (Adam)"},
    }

    targets: list[str] = setting(list(TARGETS), f"comma-separated position maps: {', '.join(TARGETS)}")
    sigma: float = setting(GAUSSIAN_SIGMA, "gaussian target sigma, as a fraction of the map side")
    feature_size: int = setting(28, "side every feature map is resized to")
    train_images: int = setting(128, "training crops per seed")
    test_images: int = setting(64, "test crops per seed")
    test_photos: list[str] = setting(list(DEFAULT_TEST_PHOTOS), "comma-separated photo names held out for testing")
    steps: int = setting(300, "readout training steps (Adam)")
    batch_pixels: int = setting(1024, "(image, pixel) samples per readout step")

    def __post_init__(self) -> None:
        if self.pretrained is None:
            self.pretrained = self.model in _PRETRAINED_MODELS and self.weights is None

    def validate(self) -> None:
        if self.width is None or self.width < 1:
            raise UserError(f"width must be >= 1, got {self.width}")
        self.design().validate()
        if self.data_root is not None:
            raise UserError("position-map takes no --data-root: its photos ship with scikit-image")
        _check_names("layers", self.layers, None)
        _check_names("paddings", self.paddings, PADDING_MODES)
        _check_names("test_photos", self.test_photos, PHOTOS)
        if len(self.test_photos) == len(PHOTOS):
            raise UserError("test_photos must leave at least one photo for training")

    def design(self) -> MapReadoutDesign:
        return MapReadoutDesign(tuple(self.targets), self.sigma, self.feature_size, self.image_size, self.train_images,
                                self.test_images, self.steps, self.batch_pixels, self.lr)


def _check_names(key: str, names: Sequence[str], allowed: Sequence[str] | None) -> None:
    if not names:
        raise UserError(f"{key} must name at least one item" + (f"; allowed: {', '.join(allowed)}" if allowed else ""))
    if len(set(names)) != len(names):
        raise UserError(f"{key} must be distinct, got {', '.join(names)}")
    unknown = [n for n in names if allowed is not None and n not in allowed]
    if unknown:
        raise UserError(f"unknown {key.rstrip('s').replace('_', ' ')} {unknown[0]!r}; allowed: {', '.join(allowed)}")


@dataclass
class Plan:
    """Everything validated before any file is written."""

    config: Config
    layers: list[str]  # dotted names in the PoolNet
    models: dict[str, PoolNet]  # padding -> frozen backbone (weights of the first seed)
    photos: ImageSet  # PHOTOS at PHOTO_SIDE px, normalised for the model


def build_backbones(config: Config, seed: int) -> dict[str, PoolNet]:
    """One frozen eval-mode model per padding mode, all with the same weights (random init drawn from ``seed``)."""
    return padding_variants(lambda padding: build_model(config.model, 1, 3, width=config.width, padding=padding,
                                                        pretrained=bool(config.pretrained), weights=config.weights),
                            config.paddings, seed)


def prepare(config: Config) -> Plan:
    """Build the backbones and probe every layer, so that every bad input fails before the run starts."""
    models = build_backbones(config, config.seeds[0])
    model = next(iter(models.values()))
    layers = resolve_layers(model, config.layers)
    check_backbones(models, layers, config.image_size, resolve_device(config.device), name=config.model)
    photos = load_dataset("photos", "all", image_size=PHOTO_SIDE).for_model(3, model.input_norm)
    return Plan(config, layers, models, photos)


def run(plan: Plan, work: Path, *, progress: bool = True) -> dict:
    """The study over seeds and paddings (backbones rebuilt per seed when their weights are a seeded random init);
    tables, figures, metrics."""
    c = plan.config
    seeded = not c.pretrained and c.weights is None
    backbones = (lambda seed: plan.models if seed == c.seeds[0] else build_backbones(c, seed)) if seeded else plan.models
    result = position_map_study(backbones, plan.layers, plan.photos, [PHOTOS.index(n) for n in c.test_photos],
                                c.design(), seeds=c.seeds, device=resolve_device(c.device), progress=progress)
    write_csv(work / "comparisons.csv", comparison_rows(result.comparisons))
    write_csv(work / "table.csv", [flat_stats({"features": row.get("control", "readout"), **row})
                                   for row in [*result.rows, *result.controls]])
    position_map_figure(result.example_image, result.maps, c.targets, result.example_maps, work / "position_maps.png",
                        title=f"{c.model}{' (pretrained)' if c.pretrained else ''} · layers {', '.join(c.layers)}")
    spc_bars(result.rows, result.controls, work / "spc.png", title=f"{c.model} · SPC per padding and target")
    return {**result.metrics(), "test_photos": list(c.test_photos)}


def print_summary(metrics: dict) -> None:
    """The rows and controls as a readable table."""
    print(f"{'features':<18} {'padding':<10} {'target':<11} {'SPC [95% CI]':<28} {'MAE [95% CI]'}")
    for row in [*metrics["rows"], *metrics["controls"]]:
        print(f"{row.get('control', 'readout'):<18} {row['padding']:<10} {row['target']:<11} "
              f"{format_stat(row['spc']):<28} {format_stat(row['mae'])}")
    print_comparisons(metrics["comparisons"])
    constant = ", ".join(f"{t} {v:.3f}" for t, v in metrics["mae_best_constant"].items())
    print(f"MAE of the best constant map (no position at all): {constant}")
