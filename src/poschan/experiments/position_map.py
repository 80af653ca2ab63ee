"""`poschan position-map`: how much absolute position a frozen CNN's feature maps encode (Islam et al., ICLR 2020).

The feature maps of chosen layers of a FROZEN backbone, each resized bilinearly to ``feature_size``² and
concatenated, feed a readout with no padding of its own (per-channel standardisation, a 3×3 valid conv,
sigmoid: it cannot invent position). It is trained with MSE to output a fixed position map (the same for every
image) on random crops of some real photos, and scored on crops of the other photos by SPC (Spearman) and MAE per
image. Every padding mode rebuilds the backbone with the same weights. Control: the same readout on features whose
spatial positions are shuffled independently per image (chance level, SPC ≈ 0). A constant input image would not
do as a control: with zero padding its features still carry position near the borders (the paper's own point).

SPC and MAE are estimated from their values per test crop (poschan.stats: intervals over seeds and test crops).
``comparisons`` holds the paired differences the design allows (same seeds and test crops): the readout minus the
shuffled control per padding and target, and the SPC of every other padding minus that of the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from poschan.config import command_defaults, setting
from poschan.data.canvas import photo_crops
from poschan.data.sources import PHOTOS, load_dataset
from poschan.errors import UserError
from poschan.experiments.settings import (
    ImageSizeSettings,
    LayersSettings,
    LearningRateSettings,
    ModelSettings,
    PaddingsSettings,
    PretrainedSettings,
    RunSettings,
    WidthSettings,
)
from poschan.measure.map_readout import (
    KERNEL,
    fit_map_readout,
    image_scores,
    readout_size,
    resized_feature_maps,
    shuffle_positions,
)
from poschan.measure.position_maps import GAUSSIAN_SIGMA, TARGETS, mae, position_maps
from poschan.models.padding import PADDING_MODES
from poschan.models.poolnet import PoolNet
from poschan.models.registry import build_model
from poschan.report.position_figures import position_map_figure, spc_bars
from poschan.runtime import resolve_device, seeded_init
from poschan.stats import estimate, paired_difference
from poschan.tables import comparison_line, comparison_rows, flat_stats, write_csv
from poschan.taps import capture, resolve_layers

EXPERIMENT = "position-map"
HELP = "read a fixed position map out of frozen features with a padding-free readout (SPC/MAE), per padding mode"
PHOTO_SIDE = 256  # resolution of the photo bank the crops are taken from
_PRETRAINED_MODELS = ("efficientnet-lite0",)  # models with packaged weights (see models.registry)
# Test photos by default: every third photo (PHOTOS[2::3]), so that train and test photos are disjoint.
DEFAULT_TEST_PHOTOS = list(PHOTOS[2::3])
RANGES = {"spc": (-1.0, 1.0), "mae": (0.0, 1.0)}  # Spearman's rho; |sigmoid output - map in [0, 1]|
ITEM = "test crops"
Scores = dict[tuple[str, str, str], list[np.ndarray]]  # (features, padding, target) -> per seed, (N_test, 2) rows


@dataclass
@command_defaults
class Config(RunSettings, LearningRateSettings, ImageSizeSettings, PaddingsSettings, LayersSettings, PretrainedSettings,
             WidthSettings, ModelSettings):
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
        for key in ("width", "image_size", "train_images", "test_images", "steps", "batch_pixels"):
            if getattr(self, key) is None or getattr(self, key) < 1:
                raise UserError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.feature_size < KERNEL + 1:
            raise UserError(f"feature_size must be >= {KERNEL + 1} (the readout is a {KERNEL}x{KERNEL} valid conv), "
                            f"got {self.feature_size}")
        if self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if self.sigma <= 0:
            raise UserError(f"sigma must be > 0 (a fraction of the map side), got {self.sigma}")
        if self.data_root is not None:
            raise UserError("position-map takes no --data-root: its photos ship with scikit-image")
        _check_names("layers", self.layers, None)
        _check_names("paddings", self.paddings, PADDING_MODES)
        _check_names("targets", self.targets, TARGETS)
        _check_names("test_photos", self.test_photos, PHOTOS)
        if len(self.test_photos) == len(PHOTOS):
            raise UserError("test_photos must leave at least one photo for training")


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
    train_photos: Tensor  # (P, 3, PHOTO_SIDE, PHOTO_SIDE), normalised for the model
    test_photos: Tensor
    input_norm: tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) of that normalisation


def build_backbones(config: Config, seed: int) -> dict[str, PoolNet]:
    """One frozen eval-mode model per padding mode, all with the same weights (random init drawn from ``seed``)."""
    models: dict[str, PoolNet] = {}
    with seeded_init(seed):
        for padding in config.paddings:
            model = build_model(config.model, 1, 3, width=config.width, padding=padding,
                                pretrained=bool(config.pretrained), weights=config.weights)
            if models:  # state_dict keys do not depend on the padding mode
                model.load_state_dict(next(iter(models.values())).state_dict())
            models[padding] = model.eval().requires_grad_(False)
    return models


def prepare(config: Config) -> Plan:
    """Build the backbones and probe every layer, so that every bad input fails before the run starts."""
    device = resolve_device(config.device)
    models = build_backbones(config, config.seeds[0])
    model = next(iter(models.values()))
    layers = resolve_layers(model, config.layers)
    x = torch.zeros(1, model.in_chans, config.image_size, config.image_size, device=device)
    for m in models.values():
        with torch.no_grad(), capture(m.to(device), layers, pooled=True):  # pooled: refuses non-(B, C, H, W) layers
            try:
                m(x)
            except UserError:
                raise
            except Exception as err:  # the model's own failure on this input size
                raise UserError(f"{config.model} cannot take {config.image_size}px inputs: "
                                f"{type(err).__name__}: {err}") from err
    photos = load_dataset("photos", "all", image_size=PHOTO_SIDE).for_model(3, model.input_norm)
    test = [PHOTOS.index(name) for name in config.test_photos]
    train = [i for i in range(len(PHOTOS)) if i not in test]
    return Plan(config, layers, models, photos.images[train], photos.images[test], (photos.mean, photos.std))


def _seed_free(c: Config) -> bool:
    """Whether the backbone weights do not depend on the seed (packaged or given weights)."""
    return bool(c.pretrained) or c.weights is not None


def _backbones(plan: Plan, seed: int) -> dict[str, PoolNet]:
    """The plan's backbones, rebuilt for other seeds only when their weights are a seeded random init."""
    c = plan.config
    return plan.models if _seed_free(c) or seed == c.seeds[0] else build_backbones(c, seed)


def _predict(train_f: Tensor, test_f: Tensor, maps: Tensor, config: Config, seed: int) -> Tensor:
    """(N_test, T, h, w) maps predicted by a readout fit on ``train_f`` (its init and samples drawn from ``seed``)."""
    readout = fit_map_readout(train_f, maps, steps=config.steps, batch_pixels=config.batch_pixels, lr=config.lr,
                              generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return torch.cat([readout(f) for f in test_f.split(64)]).cpu()


def run(plan: Plan, work: Path, *, progress: bool = True) -> dict:
    """Per seed and padding: features, readout on them and on spatially shuffled ones; tables, figures, metrics."""
    c = plan.config
    device = resolve_device(c.device)
    side = readout_size(c.feature_size)
    maps = position_maps(c.targets, side, side, sigma=c.sigma, device=device)
    scores: Scores = {}
    shown: dict[str, Tensor] = {}  # padding -> predicted maps (T, h, w) of the first test image of the first seed
    bar = tqdm(total=len(c.seeds) * len(c.paddings), desc="position-map", disable=not progress)
    for seed in c.seeds:
        data = torch.Generator().manual_seed(seed)
        train_x = photo_crops(plan.train_photos, c.train_images, c.image_size, generator=data)
        test_x = photo_crops(plan.test_photos, c.test_images, c.image_size, generator=data)
        for padding, model in _backbones(plan, seed).items():
            train_f, test_f = (resized_feature_maps(model.to(device), x, plan.layers, c.feature_size, device=device)
                               for x in (train_x, test_x))
            shuffle = torch.Generator().manual_seed(seed)
            shuffled = (shuffle_positions(train_f, shuffle), shuffle_positions(test_f, shuffle))
            for kind, (tr, te) in (("readout", (train_f, test_f)), ("shuffled", shuffled)):
                pred = _predict(tr, te, maps, c, seed)
                for target, rows in zip(c.targets, image_scores(pred, maps).double().numpy()):
                    scores.setdefault((kind, padding, target), []).append(rows)
                if kind == "readout" and seed == c.seeds[0]:
                    shown[padding] = pred[0]
            bar.update()
        if seed == c.seeds[0]:
            mean, std = (torch.tensor(v).view(-1, 1, 1) for v in plan.input_norm)
            shown_input = (test_x[0] * std + mean).clamp(0, 1)
    bar.close()
    unit = f"seeds (crops, readout, shuffles{'' if _seed_free(c) else ', backbone init'})"
    rows, controls = _rows(scores, "readout", unit), _rows(scores, "shuffled", unit)
    paired = _comparisons(scores, c, unit)
    write_csv(work / "comparisons.csv", comparison_rows(paired))
    write_csv(work / "table.csv", [flat_stats({"features": row.get("control", "readout"), **row}) for row in [*rows, *controls]])
    position_map_figure(shown_input, maps, c.targets, shown, work / "position_maps.png",
                        title=f"{c.model}{' (pretrained)' if c.pretrained else ''} · layers {', '.join(c.layers)}")
    spc_bars(rows, controls, work / "spc.png", title=f"{c.model} · SPC per padding and target")
    best_constant = {t: float(mae(m.median().expand(1, *m.shape), m)) for t, m in zip(c.targets, maps)}
    return {"rows": rows, "controls": controls, "comparisons": paired,
            "mae_best_constant": best_constant, "layers": plan.layers, "readout_size": side, "sigma": c.sigma,
            "test_photos": list(c.test_photos)}


def _column(values: list[np.ndarray], metric: str) -> list[np.ndarray]:
    return [v[:, list(RANGES).index(metric)] for v in values]


def _rows(scores: Scores, kind: str, unit: str) -> list[dict]:
    """One row per (padding, target) of features ``kind``: SPC and MAE over seeds and test crops (controls say
    which control)."""
    extra = {} if kind == "readout" else {"control": f"{kind} features"}
    return [{"padding": padding, "target": target, **extra,
             **{m: estimate(_column(values, m), bounds=RANGES[m], unit=unit, item=ITEM) for m in RANGES}}
            for (k, padding, target), values in scores.items() if k == kind]


def _difference(a: list[np.ndarray], b: list[np.ndarray], metric: str, unit: str) -> dict:
    low, high = RANGES[metric]
    return paired_difference(_column(a, metric), _column(b, metric), bounds=(low - high, high - low), unit=unit,
                             item=ITEM)


def _comparisons(scores: Scores, c: Config, unit: str) -> list[dict]:
    """Readout minus shuffled control (SPC, MAE) per padding and target; SPC of each other padding minus the first's
    per target. All paired: the same seeds and test crops (and backbone weights across paddings)."""
    out = []
    for padding in c.paddings:
        for target in c.targets:
            real, shuffled = scores["readout", padding, target], scores["shuffled", padding, target]
            for m in RANGES:
                out.append({"name": f"{padding}:{target}:{m}_readout_vs_shuffled", "a": "readout",
                            "b": "shuffled features", "question": f"Do the {padding}-padded features carry the "
                            f"{target} position map ({m.upper()} of the readout vs the shuffled-features control)?",
                            **_difference(real, shuffled, m, unit)})
    first = c.paddings[0]
    for padding in c.paddings[1:]:
        for target in c.targets:
            out.append({"name": f"{target}:spc_{padding}_vs_{first}", "a": f"{padding} padding",
                        "b": f"{first} padding", "question": f"Does {padding} padding change how much {target} "
                        f"position the features carry, relative to {first} padding (same weights and crops)?",
                        **_difference(scores["readout", padding, target], scores["readout", first, target], "spc",
                                      unit)})
    return out


def print_summary(metrics: dict) -> None:
    """The rows and controls as a readable table."""
    print(f"{'features':<18} {'padding':<10} {'target':<11} {'SPC [95% CI]':<28} {'MAE [95% CI]'}")
    for row in [*metrics["rows"], *metrics["controls"]]:
        cells = [f"{row[m]['mean']:.3f} [{row[m]['ci95'][0]:.3f}, {row[m]['ci95'][1]:.3f}]" for m in ("spc", "mae")]
        print(f"{row.get('control', 'readout'):<18} {row['padding']:<10} {row['target']:<11} {cells[0]:<28} {cells[1]}")
    for d in metrics["comparisons"]:
        print(comparison_line(d))
    constant = ", ".join(f"{t} {v:.3f}" for t, v in metrics["mae_best_constant"].items())
    print(f"MAE of the best constant map (no position at all): {constant}")
