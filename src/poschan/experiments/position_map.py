"""`poschan position-map`: how much absolute position a frozen CNN's feature maps encode (Islam et al., ICLR 2020).

The feature maps of chosen layers of a FROZEN backbone, each resized bilinearly to ``feature_size``² and
concatenated, feed a readout with no padding of its own (per-channel standardisation, a 3×3 valid conv,
sigmoid: it cannot invent position). It is trained with MSE to output a fixed position map (the same for every
image) on random crops of some real photos, and scored on crops of the other photos by SPC (Spearman) and MAE per
image. Every padding mode rebuilds the backbone with the same weights. Control: the same readout on features whose
spatial positions are shuffled independently per image (chance level, SPC ≈ 0). A constant input image would not
do as a control: with zero padding its features still carry position near the borders (the paper's own point).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms.v2.functional import resized_crop
from tqdm.auto import tqdm

from poschan.data.sources import PHOTOS, load_dataset
from poschan.errors import UserError
from poschan.experiments.arguments import add_model_arguments
from poschan.measure.position_maps import GAUSSIAN_SIGMA, TARGETS, mae, position_maps, spc
from poschan.models.padding import PADDING_MODES
from poschan.models.poolnet import PoolNet
from poschan.models.registry import build_model
from poschan.report.position_figures import position_map_figure, spc_bars
from poschan.runtime import resolve_device, seeded_init
from poschan.stats import summarize
from poschan.tables import write_csv
from poschan.taps import capture, resolve_layers

EXPERIMENT = "position-map"
HELP = "read a fixed position map out of frozen features with a padding-free readout (SPC/MAE), per padding mode"
KERNEL = 3  # the readout's conv (valid, padding 0), as the paper's PosENet readout
MIN_ZOOM = 0.25  # smallest photo crop, as a fraction of the photo side
PHOTO_SIDE = 256  # resolution of the photo bank the crops are taken from
_PRETRAINED_MODELS = ("efficientnet-lite0",)  # models with packaged weights (see models.registry)
# Test photos by default: every third photo (PHOTOS[2::3]), so that train and test photos are disjoint.
DEFAULT_TEST_PHOTOS = list(PHOTOS[2::3])


@dataclass
class Config:
    """Resolved settings of one position-map run (defaults < preset < --config < flags)."""

    model: str = "efficientnet-lite0"
    pretrained: bool | None = None  # None: the packaged weights where the model has them (and no --weights)
    weights: str | None = None
    width: int = 64
    layers: list[str] = field(default_factory=lambda: ["stage1", "stage2", "stage3", "stage4"])
    paddings: list[str] = field(default_factory=lambda: ["zeros", "circular"])
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    sigma: float = GAUSSIAN_SIGMA
    image_size: int = 128
    feature_size: int = 28
    train_images: int = 128
    test_images: int = 64
    test_photos: list[str] = field(default_factory=lambda: list(DEFAULT_TEST_PHOTOS))
    steps: int = 300
    batch_pixels: int = 1024
    lr: float = 3e-3
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    device: str = "cpu"
    preset: str = "quick"
    data_root: str | None = None

    def __post_init__(self) -> None:
        if self.pretrained is None:
            self.pretrained = self.model in _PRETRAINED_MODELS and self.weights is None

    def validate(self) -> None:
        for key in ("width", "image_size", "train_images", "test_images", "steps", "batch_pixels"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.feature_size < KERNEL + 1:
            raise UserError(f"feature_size must be >= {KERNEL + 1} (the readout is a {KERNEL}x{KERNEL} valid conv), "
                            f"got {self.feature_size}")
        if self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if self.sigma <= 0:
            raise UserError(f"sigma must be > 0 (a fraction of the map side), got {self.sigma}")
        if not self.seeds:
            raise UserError("seeds must name at least one seed, e.g. --seeds 0,1,2")
        if len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"seeds must be distinct, got {self.seeds}")
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", default=None,
                   help="random init even where packaged weights exist (default: packaged weights if any)")
    p.add_argument("--layers", help="comma-separated layers: the model's stage names (stage1..stage4) or dotted "
                   "names from `poschan layers MODEL`")
    p.add_argument("--paddings", help=f"comma-separated backbone paddings: {', '.join(PADDING_MODES)}")
    p.add_argument("--targets", help=f"comma-separated position maps: {', '.join(TARGETS)}")
    p.add_argument("--sigma", type=float, help="gaussian target sigma, as a fraction of the map side")
    p.add_argument("--image-size", dest="image_size", type=int, help="input side in pixels")
    p.add_argument("--feature-size", dest="feature_size", type=int, help="side every feature map is resized to")
    p.add_argument("--train-images", dest="train_images", type=int, help="training crops per seed")
    p.add_argument("--test-images", dest="test_images", type=int, help="test crops per seed")
    p.add_argument("--test-photos", dest="test_photos", help="comma-separated photo names held out for testing")
    p.add_argument("--steps", type=int, help="readout training steps (Adam)")
    p.add_argument("--batch-pixels", dest="batch_pixels", type=int, help="(image, pixel) samples per readout step")
    p.add_argument("--lr", type=float)


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


def photo_crops(photos: Tensor, n: int, side: int, *, generator: torch.Generator,
                min_zoom: float = MIN_ZOOM) -> Tensor:
    """(n, C, side, side): per sample a random photo of ``photos`` (P, C, S, S), a random square crop of
    side zoom·S (zoom uniform in [min_zoom, 1]) at a random place, resized, and random left-right and
    top-bottom flips (so that the photos' content carries no position on average)."""
    size = photos.shape[-1]
    which = torch.randint(len(photos), (n,), generator=generator)
    zoom = min_zoom + (1 - min_zoom) * torch.rand(n, generator=generator)
    corner = torch.rand(n, 2, generator=generator)
    flips = torch.rand(n, 2, generator=generator) < 0.5
    crops = []
    for i in range(n):
        k = max(1, round(float(zoom[i]) * size))
        top, left = (int(c * (size - k + 1)) for c in corner[i])  # torch.rand is < 1
        x = resized_crop(photos[which[i]], top, left, k, k, [side, side], antialias=True)
        x = x.flip(-1) if flips[i, 0] else x
        crops.append(x.flip(-2) if flips[i, 1] else x)
    return torch.stack(crops)


@torch.no_grad()
def layer_features(model: nn.Module, x: Tensor, layers: Sequence[str], size: int, *, batch_size: int = 64,
                   device: torch.device | str = "cpu") -> Tensor:
    """(N, ΣC, size, size): the maps of ``layers`` for images ``x``, each resized bilinearly to size², stacked."""
    chunks = []
    with capture(model, layers) as store:
        for batch in x.split(batch_size):
            model(batch.to(device))
            maps = [F.interpolate(store[name], size=(size, size), mode="bilinear", align_corners=False)
                    for name in layers]
            chunks.append(torch.cat(maps, dim=1))
    return torch.cat(chunks)


def shuffle_positions(features: Tensor, generator: torch.Generator) -> Tensor:
    """The features with their H·W positions permuted at random, independently per image (all channels alike)."""
    n, c, h, w = features.shape
    order = torch.rand(n, h * w, generator=generator).argsort(dim=1).to(features.device)
    flat = features.reshape(n, c, h * w)
    return flat.gather(2, order[:, None, :].expand(n, c, h * w)).reshape(n, c, h, w)


class MapReadout(nn.Module):
    """Per-channel standardisation, one KERNEL×KERNEL conv with padding 0 (one output per target), sigmoid.

    Output channels do not share parameters, so with a loss summed over targets (and Adam's per-parameter
    steps) training all targets at once equals training one readout per target on the same samples.
    """

    def __init__(self, mean: Tensor, std: Tensor, outputs: int, generator: torch.Generator):
        super().__init__()
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))
        self.conv = nn.Conv2d(len(mean), outputs, KERNEL, padding=0, device=mean.device)
        with torch.no_grad():
            w = torch.empty(self.conv.weight.shape)
            nn.init.xavier_uniform_(w, generator=generator)  # as the paper's readout
            self.conv.weight.copy_(w)
            self.conv.bias.zero_()

    def standardise(self, features: Tensor) -> Tensor:
        return (features - self.mean) / self.std

    def forward(self, features: Tensor) -> Tensor:
        """(N, T, H-KERNEL+1, W-KERNEL+1) maps in (0, 1) for (N, C, H, W) features."""
        return torch.sigmoid(self.conv(self.standardise(features)))

    def forward_patches(self, patches: Tensor) -> Tensor:
        """(S, T): what ``forward`` outputs at the windows given as standardised (S, KERNEL, KERNEL, C) patches."""
        weight = self.conv.weight.permute(0, 2, 3, 1).reshape(len(self.conv.weight), -1)
        return torch.sigmoid(patches.reshape(len(patches), -1) @ weight.T + self.conv.bias)


def fit_map_readout(features: Tensor, maps: Tensor, *, steps: int, batch_pixels: int, lr: float,
                    generator: torch.Generator) -> MapReadout:
    """A MapReadout trained with Adam on MSE to output ``maps`` (T, h, w) (its output size) for every image.

    Each step uses ``batch_pixels`` random (image, output pixel) samples, gathered as patches of the
    standardised features: the same objective as convolving whole maps, but as the pixels of one image are
    strongly correlated, random pixels of many images make better steps per unit of compute (on a CPU, a better
    fit than whole-map batches in the same time).
    """
    n, c, h, w = features.shape
    readout = MapReadout(features.mean(dim=(0, 2, 3)), features.std(dim=(0, 2, 3)).clamp(min=1e-6), len(maps),
                         generator)
    out_h, out_w = h - KERNEL + 1, w - KERNEL + 1
    if maps.shape[-2:] != (out_h, out_w):
        raise ValueError(f"maps must be {out_h}x{out_w} (the readout's output size), got {tuple(maps.shape[-2:])}")
    flat = readout.standardise(features).permute(0, 2, 3, 1).reshape(-1, c)  # one row per (image, y, x)
    maps = maps.to(features.device)
    window = torch.arange(KERNEL, device=features.device)
    opt = torch.optim.Adam(readout.parameters(), lr=lr)
    for _ in range(steps):
        image, y, x = (torch.randint(size, (batch_pixels,), generator=generator).to(features.device)
                       for size in (n, out_h, out_w))
        rows = (image[:, None, None] * h + y[:, None, None] + window[:, None]) * w + x[:, None, None] + window
        patches = flat.index_select(0, rows.reshape(-1)).view(batch_pixels, KERNEL, KERNEL, c)
        loss = F.mse_loss(readout.forward_patches(patches), maps[:, y, x].T)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return readout.eval()


def readout_size(feature_size: int) -> int:
    """Side of the readout's output map (a valid KERNEL×KERNEL conv)."""
    return feature_size - KERNEL + 1


def score(pred: Tensor, maps: Tensor) -> list[tuple[float, float]]:
    """Per target: (SPC, MAE) averaged over the images of ``pred`` (N, T, h, w) against ``maps`` (T, h, w)."""
    maps = maps.to(pred.device)
    return [(float(spc(pred[:, t], maps[t]).mean()), float(mae(pred[:, t], maps[t]).mean()))
            for t in range(len(maps))]


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


def _backbones(plan: Plan, seed: int) -> dict[str, PoolNet]:
    """The plan's backbones, rebuilt for other seeds only when their weights are a seeded random init."""
    c = plan.config
    seed_free = c.pretrained or c.weights is not None  # the weights do not depend on the seed
    return plan.models if seed_free or seed == c.seeds[0] else build_backbones(c, seed)


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
    scores: dict[tuple[str, str, str], list[tuple[float, float]]] = {}  # (features, padding, target) -> per seed
    shown: dict[str, Tensor] = {}  # padding -> predicted maps (T, h, w) of the first test image of the first seed
    bar = tqdm(total=len(c.seeds) * len(c.paddings), desc="position-map", disable=not progress)
    for seed in c.seeds:
        data = torch.Generator().manual_seed(seed)
        train_x = photo_crops(plan.train_photos, c.train_images, c.image_size, generator=data)
        test_x = photo_crops(plan.test_photos, c.test_images, c.image_size, generator=data)
        for padding, model in _backbones(plan, seed).items():
            train_f, test_f = (layer_features(model.to(device), x, plan.layers, c.feature_size, device=device)
                               for x in (train_x, test_x))
            shuffle = torch.Generator().manual_seed(seed)
            shuffled = (shuffle_positions(train_f, shuffle), shuffle_positions(test_f, shuffle))
            for kind, (tr, te) in (("readout", (train_f, test_f)), ("shuffled", shuffled)):
                pred = _predict(tr, te, maps, c, seed)
                for target, value in zip(c.targets, score(pred, maps)):
                    scores.setdefault((kind, padding, target), []).append(value)
                if kind == "readout" and seed == c.seeds[0]:
                    shown[padding] = pred[0]
            bar.update()
        if seed == c.seeds[0]:
            mean, std = (torch.tensor(v).view(-1, 1, 1) for v in plan.input_norm)
            shown_input = (test_x[0] * std + mean).clamp(0, 1)
    bar.close()
    rows, controls = _rows(scores, "readout"), _rows(scores, "shuffled")
    write_csv(work / "table.csv", [_table_row(row) for row in [*rows, *controls]])
    position_map_figure(shown_input, maps, c.targets, shown, work / "position_maps.png",
                        title=f"{c.model}{' (pretrained)' if c.pretrained else ''} · layers {', '.join(c.layers)}")
    spc_bars(rows, controls, work / "spc.png", title=f"{c.model} · SPC per padding and target")
    best_constant = {t: float(mae(m.median().expand(1, *m.shape), m)) for t, m in zip(c.targets, maps)}
    return {"rows": rows, "controls": controls, "mae_best_constant": best_constant, "layers": plan.layers,
            "readout_size": side, "sigma": c.sigma, "test_photos": list(c.test_photos)}


def _rows(scores: dict[tuple[str, str, str], list[tuple[float, float]]], kind: str) -> list[dict]:
    """One row per (padding, target) of features ``kind``: SPC and MAE over seeds (controls say which control)."""
    extra = {} if kind == "readout" else {"control": f"{kind} features"}
    return [{"padding": padding, "target": target, **extra, "spc": summarize([v[0] for v in values]),
             "mae": summarize([v[1] for v in values])}
            for (k, padding, target), values in scores.items() if k == kind]


def _table_row(row: dict) -> dict:
    """A flat table.csv line of a metrics row."""
    stats = {f"{m}_{s}": v for m in ("spc", "mae")
             for s, v in zip(("mean", "lo", "hi"), (row[m]["mean"], *row[m]["ci95"]))}
    return {"features": row.get("control", "readout"), "padding": row["padding"], "target": row["target"],
            "n": row["spc"]["n"], **stats}


def print_summary(metrics: dict) -> None:
    """The rows and controls as a readable table."""
    print(f"{'features':<18} {'padding':<10} {'target':<11} {'SPC [95% CI]':<28} {'MAE [95% CI]'}")
    for row in [*metrics["rows"], *metrics["controls"]]:
        cells = [f"{row[m]['mean']:.3f} [{row[m]['ci95'][0]:.3f}, {row[m]['ci95'][1]:.3f}]" for m in ("spc", "mae")]
        print(f"{row.get('control', 'readout'):<18} {row['padding']:<10} {row['target']:<11} {cells[0]:<28} {cells[1]}")
    constant = ", ".join(f"{t} {v:.3f}" for t, v in metrics["mae_best_constant"].items())
    print(f"MAE of the best constant map (no position at all): {constant}")
