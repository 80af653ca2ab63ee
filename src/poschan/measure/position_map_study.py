"""``position_map_study``: how much absolute position a frozen CNN's feature maps encode (Islam et al., ICLR 2020).

The feature maps of chosen layers, each resized bilinearly to ``feature_size``² and concatenated, feed the
padding-free readout of ``measure.map_readout``, trained with MSE to output a fixed position map (the same for every
image) on random crops of some photos and scored on crops of other photos by SPC (Spearman) and MAE per crop.
One backbone per padding mode (the same weights). Control: the same readout on features whose spatial positions are
shuffled independently per image (chance level, SPC ≈ 0). A constant input image would not do as a control: with
zero padding its features still carry position near the borders (the paper's own point).

SPC and MAE are estimated from their values per test crop (poschan.stats: intervals over seeds and test crops).
``comparisons`` holds the paired differences the design allows (same seeds and test crops): the readout minus the
shuffled control per padding and target, and the SPC of every other padding minus that of the first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from poschan.data.canvas import photo_crops
from poschan.data.sources import ImageSet
from poschan.errors import UserError
from poschan.measure.map_readout import (
    KERNEL,
    fit_map_readout,
    image_scores,
    readout_size,
    resized_feature_maps,
    shuffle_positions,
)
from poschan.measure.position_maps import GAUSSIAN_SIGMA, TARGETS, mae, position_maps
from poschan.runtime import seeded_torch_rng
from poschan.stats import estimate, paired_difference
from poschan.taps import capture

RANGES = {"spc": (-1.0, 1.0), "mae": (0.0, 1.0)}  # Spearman's rho; |sigmoid output - map in [0, 1]|
ITEM = "test crops"
Scores = dict[tuple[str, str, str], list[np.ndarray]]  # (features, padding, target) -> per seed, (N_test, 2) rows
Backbones = Mapping[str, nn.Module]  # padding -> frozen eval-mode backbone


@dataclass(frozen=True)
class MapReadoutDesign:
    """The crops and the readout: ``train_images`` / ``test_images`` crops of ``image_size`` px per seed, feature
    maps resized to ``feature_size``², ``steps`` Adam steps of ``batch_pixels`` (image, pixel) samples at ``lr``,
    towards the position maps ``targets`` (gaussian: ``sigma``, a fraction of the side)."""

    targets: tuple[str, ...] = TARGETS
    sigma: float = GAUSSIAN_SIGMA
    feature_size: int = 28
    image_size: int = 128
    train_images: int = 128
    test_images: int = 64
    steps: int = 300
    batch_pixels: int = 1024
    lr: float = 3e-3

    def validate(self) -> None:
        """A UserError (one line) for a design that cannot run."""
        for key in ("image_size", "train_images", "test_images", "steps", "batch_pixels"):
            if getattr(self, key) is None or getattr(self, key) < 1:
                raise UserError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.feature_size < KERNEL + 1:
            raise UserError(f"feature_size must be >= {KERNEL + 1} (the readout is a {KERNEL}x{KERNEL} valid conv), "
                            f"got {self.feature_size}")
        if self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if self.sigma <= 0:
            raise UserError(f"sigma must be > 0 (a fraction of the map side), got {self.sigma}")
        if not self.targets or len(set(self.targets)) != len(self.targets):
            raise UserError(f"targets must name distinct position maps, got {', '.join(self.targets) or 'none'}; "
                            f"allowed: {', '.join(TARGETS)}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown:
            raise UserError(f"unknown target {unknown[0]!r}; allowed: {', '.join(TARGETS)}")


@dataclass
class PositionMapResult:
    """``rows`` (readout) and ``controls`` (shuffled features): per (padding, target) SPC and MAE with intervals;
    ``comparisons``: the paired differences; ``mae_best_constant``: per target the MAE of the best constant map (no
    position at all). ``maps``: the targets; ``example_image``: the first test crop of the first seed (in [0, 1]) and
    ``example_maps`` (padding -> the readout's maps of it)."""

    rows: list[dict]
    controls: list[dict]
    comparisons: list[dict]
    mae_best_constant: dict[str, float]
    layers: list[str]
    readout_size: int
    sigma: float
    maps: Tensor
    example_image: Tensor
    example_maps: dict[str, Tensor]

    def metrics(self) -> dict:
        return {"rows": self.rows, "controls": self.controls, "comparisons": self.comparisons,
                "mae_best_constant": self.mae_best_constant, "layers": self.layers,
                "readout_size": self.readout_size, "sigma": self.sigma}


def padding_variants(build: Callable[[str], nn.Module], paddings: Sequence[str], seed: int) -> dict[str, nn.Module]:
    """One frozen eval-mode backbone ``build(padding)`` per padding mode, all with the weights of the first (a random
    init drawn from ``seed``, or what ``build`` loads; state_dict keys do not depend on the padding mode)."""
    models: dict[str, nn.Module] = {}
    with seeded_torch_rng(seed):
        for padding in paddings:
            model = build(padding)
            if models:
                model.load_state_dict(next(iter(models.values())).state_dict())
            models[padding] = model.eval().requires_grad_(False)
    return models


def check_backbones(backbones: Backbones, layers: Sequence[str], image_size: int, device: torch.device | str = "cpu",
                    *, name: str = "the backbone") -> None:
    """A UserError unless every backbone (``name`` in the message) takes ``image_size`` px inputs and gives
    (B, C, H, W) maps at ``layers``."""
    for m in backbones.values():
        x = torch.zeros(1, getattr(m, "in_chans", 3), image_size, image_size, device=device)
        with torch.no_grad(), capture(m.to(device), layers, pooled=True):  # pooled: refuses non-(B, C, H, W) layers
            try:
                m(x)
            except UserError:
                raise
            except Exception as err:  # the model's own failure on this input size
                raise UserError(f"{name} cannot take {image_size}px inputs: "
                                f"{type(err).__name__}: {err}") from err


def _predict(train_f: Tensor, test_f: Tensor, maps: Tensor, d: MapReadoutDesign, seed: int) -> Tensor:
    """(N_test, T, h, w) maps predicted by a readout fit on ``train_f`` (its init and samples drawn from ``seed``)."""
    readout = fit_map_readout(train_f, maps, steps=d.steps, batch_pixels=d.batch_pixels, lr=d.lr,
                              generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return torch.cat([readout(f) for f in test_f.split(64)]).cpu()


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


def _comparisons(scores: Scores, paddings: Sequence[str], targets: Sequence[str], unit: str) -> list[dict]:
    """Readout minus shuffled control (SPC, MAE) per padding and target; SPC of each other padding minus the first's
    per target. All paired: the same seeds and test crops (and backbone weights across paddings)."""
    out = []
    for padding in paddings:
        for target in targets:
            real, shuffled = scores["readout", padding, target], scores["shuffled", padding, target]
            for m in RANGES:
                out.append({"name": f"{padding}:{target}:{m}_readout_vs_shuffled", "a": "readout",
                            "b": "shuffled features", "question": f"Do the {padding}-padded features carry the "
                            f"{target} position map ({m.upper()} of the readout vs the shuffled-features control)?",
                            **_difference(real, shuffled, m, unit)})
    first = paddings[0]
    for padding in paddings[1:]:
        for target in targets:
            out.append({"name": f"{target}:spc_{padding}_vs_{first}", "a": f"{padding} padding",
                        "b": f"{first} padding", "question": f"Does {padding} padding change how much {target} "
                        f"position the features carry, relative to {first} padding (same weights and crops)?",
                        **_difference(scores["readout", padding, target], scores["readout", first, target], "spc",
                                      unit)})
    return out


def position_map_study(backbones: Backbones | Callable[[int], Backbones], layers: Sequence[str], photos: ImageSet,
                       test: Sequence[int], design: MapReadoutDesign = MapReadoutDesign(), *,
                       seeds: Sequence[int] = (0,), device: torch.device | str = "cpu",
                       progress: bool = False) -> PositionMapResult:
    """Per seed, crops of the ``photos`` (normalised as the backbones take them, e.g. ``ImageSet.for_model``) to
    train the readouts and crops of the photos ``test`` (indices) to score them; per padding (``backbones``:
    padding -> frozen backbone, or a function of the seed returning them when their weights are a seeded random
    init) the maps of ``layers``, a readout on them and on spatially shuffled ones."""
    design.validate()
    train = [i for i in range(len(photos)) if i not in test]
    if not test or not train:
        raise UserError(f"test must name some but not all of the {len(photos)} photos, got {list(test)}")
    train_photos, test_photos = photos.images[train], photos.images[list(test)]
    side = readout_size(design.feature_size)
    targets = list(design.targets)
    maps = position_maps(targets, side, side, sigma=design.sigma, device=device)
    scores: Scores = {}
    shown: dict[str, Tensor] = {}  # padding -> predicted maps (T, h, w) of the first test image of the first seed
    fixed = isinstance(backbones, (Mapping, nn.ModuleDict))
    for seed in tqdm(seeds, desc="position-map", disable=not progress):
        data = torch.Generator().manual_seed(seed)
        train_x = photo_crops(train_photos, design.train_images, design.image_size, generator=data)
        test_x = photo_crops(test_photos, design.test_images, design.image_size, generator=data)
        models = backbones if fixed else backbones(seed)
        for padding, model in models.items():
            train_f, test_f = (resized_feature_maps(model.to(device), x, layers, design.feature_size, device=device)
                               for x in (train_x, test_x))
            shuffle = torch.Generator().manual_seed(seed)
            shuffled = (shuffle_positions(train_f, shuffle), shuffle_positions(test_f, shuffle))
            for kind, (tr, te) in (("readout", (train_f, test_f)), ("shuffled", shuffled)):
                pred = _predict(tr, te, maps, design, seed)
                for target, rows in zip(targets, image_scores(pred, maps).double().numpy()):
                    scores.setdefault((kind, padding, target), []).append(rows)
                if kind == "readout" and seed == seeds[0]:
                    shown[padding] = pred[0]
        if seed == seeds[0]:
            mean, std = (torch.tensor(v).view(-1, 1, 1) for v in (photos.mean, photos.std))
            example = (test_x[0] * std + mean).clamp(0, 1)
    unit = f"seeds (crops, readout, shuffles{'' if fixed else ', backbone init'})"
    best_constant = {t: float(mae(m.median().expand(1, *m.shape), m)) for t, m in zip(targets, maps)}
    return PositionMapResult(_rows(scores, "readout", unit), _rows(scores, "shuffled", unit),
                             _comparisons(scores, list(models), targets, unit), best_constant, list(layers), side,
                             design.sigma, maps, example, shown)
