"""`poschan rank`: which channels of any model's named layer encode overall position, and which a region.

One streaming pass per seed over the images of ONE split (poschan.ranking: methods, sign convention, statistics,
nulls). Several seeds draw new orders, cells and partners over the same images; their statistics are merged
into one ranking. With several seeds, ``seed_overlap`` is the share of one seed's top-N channels that another
seed's top-N also holds (per key; units: the pairs of seeds, which share seeds; items: the N channels), beside
``seed_overlap_chance`` = N / channels, its expectation for unrelated rankings. ``position_percent`` (dimest) is the
per-seed share of position dimensions in [0, 100] (no items: a t interval over the seeds).

Writes ``ranking.json`` ({model, layer, channels, method, data, split, eval_split, n_images, images (the
fingerprint of the ranked images: {sha256, n}, poschan.data.fingerprint), seeds, design (the RankSpec: method,
grid, canvas, background, flip_input, semantic_pairs), keys: {key: {order (every channel, best first), scores}}}),
``table.csv`` (channel, one score column per key),
``scores.png`` (sorted scores vs the shuffled null; shift also ``cells.png``: cell × top-channel selectivity).

The ranking records its split and image fingerprint so that an evaluation can refuse to reuse its images;
``--eval-split`` names the split a later evaluation will use, and may share no image with ``--split`` (compared
by content, except two official splits of Fashion-MNIST / CIFAR-10). ``photos`` (17 photographs) has the splits
``train``/``test`` of `poschan probe` (every third photo is a test photo) and ``all``, which overlaps both.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from poschan.config import command_defaults, setting
from poschan.data.fingerprint import check_disjoint, trusted_disjoint
from poschan.data.sources import ImageSet, load_dataset
from poschan.errors import UserError
from poschan.experiments.settings import (
    BatchSettings,
    CanvasSettings,
    CheckpointSettings,
    DataSettings,
    HeadSettings,
    ImageSizeSettings,
    LayerSettings,
    ModelSettings,
    PaddingSettings,
    PretrainedSettings,
    RunSettings,
    WidthSettings,
)
from poschan.locate.designs import FLIP_INPUTS, METHODS, RankSpec, Tally, accumulate
from poschan.locate.rank import ranking_from_tallies
from poschan.locate.ranking import ranking_order, top_overlap, top_shared
from poschan.models.registry import build_model
from poschan.models.segmentation import TV_SEGMENTER_NAMES, load_segmenter
from poschan.report.ranking_figures import cell_heatmap, sorted_scores
from poschan.runtime import resolve_device, seeded_init
from poschan.stats import proportion, summarize
from poschan.tables import write_csv
from poschan.taps import resolve_layers

EXPERIMENT = "rank"
HELP = "rank the channels of a model's named layer by the position they encode (flip, shift, dimest), one pass"
_AS_IS = ("photos", "folder:")  # flip_input auto: photographs are flipped as they are, item sets on canvases


@dataclass
@command_defaults
class Config(RunSettings, BatchSettings, HeadSettings, PaddingSettings, PretrainedSettings, WidthSettings,
             ModelSettings, CanvasSettings, ImageSizeSettings, DataSettings, LayerSettings, CheckpointSettings):
    DEFAULTS: ClassVar[dict] = {"model": "efficientnet-lite0", "batch_size": 64, "seeds": [0], "layer": None}
    FLAGS: ClassVar[dict] = {"image_size": {"help": "side of photos / folder images (default 32)"},
                             "grid": {"help": "k of the k×k canvas grid"},
                             "background": {"help": "canvas fill: mean or black"},
                             "head": {"help": "gap-fc or gapnet (to load a checkpoint)"},
                             "checkpoint": {"help": "rank a seg-train checkpoint's segmenter (default layer: its "
                                                    "feature layer); the ranking feeds `ablate --ranking`"},
                             "layer": {"help": "one layer name (see `poschan layers`) or stage name (stage1..); "
                                               "default: a classifier's backbone, the layer a segmenter's ablate "
                                               "and attack mask"}}

    method: str = setting("flip", f"{', '.join(METHODS)} (see poschan.ranking)")
    split: str = setting("train", "the split to rank on: train/test (photos: train, test, all; folder: a sub-folder)")
    eval_split: str | None = setting(None, "the split a later evaluation uses; may share no image")
    limit: int | None = setting(None, "use the first N images of the split (default: all)")
    # flip_input auto: image for photos and folder:PATH, canvas otherwise
    flip_input: str = setting("auto", "flip: canvas, image or auto")
    semantic_pairs: str = setting("item", "dimest: item (same image) or class")
    # num_classes only builds the model's head (must match a checkpoint given with --weights)
    num_classes: int = setting(10, "classes of the head (to load a checkpoint); of a segmentation --model, the classes "
                                   "it predicts (11 for Fashion-MNIST scenes)")
    segmenter: bool = setting(False, f"--model is a segmentation network ({', '.join(TV_SEGMENTER_NAMES)} are always), "
                                     "loaded as ablate and attack load it")
    top_n: int = setting(10, "length of the top lists (default 10)")

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}; allowed: {', '.join(METHODS)}")
        if self.flip_input not in ("auto", *FLIP_INPUTS):
            raise UserError(f"unknown flip_input {self.flip_input!r}; allowed: auto, {', '.join(FLIP_INPUTS)}")
        self.spec().validate()
        if self.layer is not None and not self.layer.strip():
            raise UserError("layer must name one layer (see `poschan layers MODEL`), e.g. backbone or stage4")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit {self.limit} leaves split {self.split!r} empty; use limit >= 1 or null (all)")
        for key in ("batch_size", "top_n", "width", "num_classes"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.image_size is not None and self.image_size < 1:
            raise UserError(f"image_size must be >= 1, got {self.image_size}")

    def spec(self) -> RankSpec:
        flip_input = self.flip_input
        if flip_input == "auto":
            flip_input = "image" if self.data.startswith(_AS_IS) else "canvas"
        return RankSpec(self.method, self.grid, self.canvas, self.background, flip_input, self.semantic_pairs)


@dataclass
class RankPlan:
    """Everything validated before any file is written."""

    config: Config
    spec: RankSpec
    images: ImageSet
    model: nn.Module
    layer: str
    channels: int
    device: torch.device
    in_chans: int | None = None  # how the model takes images (see ImageSet.for_model)
    input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None


def load_split(c: Config) -> ImageSet:
    """The images of ``c.split`` (first ``c.limit``)."""
    return load_dataset(c.data, c.split, c.data_root, limit=c.limit, image_size=c.image_size)


def _accumulate(plan: RankPlan, images: ImageSet, seed: int, progress: bool) -> Tally:
    return accumulate(plan.model, plan.layer, images, plan.spec, seed=seed, batch_size=plan.config.batch_size,
                      device=plan.device, in_chans=plan.in_chans, input_norm=plan.input_norm,
                      progress=progress)


def prepare(config: Config) -> RankPlan:
    """Load the split (refused when it shares an image with the eval split), build the frozen model and run a
    3-image pass: all bad input fails here."""
    device = resolve_device(config.device)
    images = load_split(config)
    if config.eval_split is not None and not trusted_disjoint(config.data, config.split, config.eval_split):
        check_disjoint(load_split(dataclasses.replace(config, split=config.eval_split, limit=None)), images)
    if config.checkpoint or config.segmenter or config.model in TV_SEGMENTER_NAMES:
        # the segmenter exactly as ablate / attack load it, so its ranking's weights fingerprint matches theirs
        seg = load_segmenter(checkpoint=config.checkpoint or None, model=None if config.checkpoint else config.model,
                             weights=config.weights, num_classes=config.num_classes,
                             layer=config.layer, seed=config.seeds[0])
        model, in_chans, input_norm = seg.module, seg.in_chans, seg.input_norm
        model.to(device)
        (layer,) = resolve_layers(model, [seg.layer])
    else:
        with seeded_init(config.seeds[0]):  # random-init weights: a function of the first seed
            model = build_model(config.model, config.num_classes, images.channels, width=config.width,
                                head=config.head, padding=config.padding, pretrained=config.pretrained,
                                weights=config.weights)
        model.eval().requires_grad_(False).to(device)
        in_chans, input_norm = model.in_chans, model.input_norm
        (layer,) = resolve_layers(model, [config.layer or "backbone"])
    plan = RankPlan(config, config.spec(), images, model, layer, 0, device, in_chans, input_norm)
    if len(images) >= 3:  # fewer fail in accumulate below with the count
        images = images.subset(3)
    tally = _accumulate(plan, images, 0, False)  # canvas fit, 4-D layer, channel count
    return dataclasses.replace(plan, channels=len(next(iter(tally.real.scores().values()))))


def run(plan: RankPlan, work: Path, *, progress: bool = True) -> dict:
    """Rank over every seed; write ranking.json, table.csv and the figures; return the metrics."""
    c = plan.config
    tallies = [_accumulate(plan, plan.images, seed, progress) for seed in c.seeds]
    pooled = sum(tallies[1:], start=tallies[0])
    real, null = pooled.real.scores(), pooled.null.scores()
    orders = {key: ranking_order(s) for key, s in real.items()}
    n = min(c.top_n, plan.channels)
    ranking = ranking_from_tallies(plan.model, plan.layer, plan.images, plan.spec, list(c.seeds), tallies,
                                   c.checkpoint or c.model)
    ranking.data["eval_split"] = c.eval_split
    ranking.save(work / "ranking.json")
    write_csv(work / "table.csv", [{"channel": ch, **{key: float(s[ch]) for key, s in real.items()}}
                                   for ch in range(plan.channels)])
    title = f"{c.method} · {c.checkpoint or c.model}{' (pretrained)' if c.pretrained else ''} · {plan.layer} · {c.data}/{c.split}"
    plotted = [key for key in real if not key.startswith("cell:")]
    sorted_scores({key: (real[key], null[key]) for key in plotted}, work / "scores.png", title=title)
    if c.method == "shift":
        cells = pooled.real.cell_scores()
        cell_heatmap(cells, orders["overall"][:max(n, 20)].tolist(), c.grid, work / "cells.png", title=title)
    metrics = {
        "method": c.method, "layer": plan.layer, "channels": plan.channels, "n_images": len(plan.images),
        "split": c.split, "eval_split": c.eval_split, "design": dataclasses.asdict(plan.spec),
        "top": {key: order[:n].tolist() for key, order in orders.items()},
        "null": {key: {"mean_abs_score": float(real[key].abs().mean()),
                       "null_mean_abs_score": float(null[key].abs().mean()),
                       "top_overlap": top_overlap(real[key], null[key], n),
                       "chance_overlap": n * n / plan.channels} for key in real},
    }
    if c.method == "dimest":
        metrics["dims"], metrics["dims_null"] = pooled.real.dims(), pooled.null.dims()
        # floor(softmax share x C) / C of the position factor: in [0, 100) whatever the factor scores
        metrics["position_percent"] = summarize([t.real.dims()["percent"]["position"] for t in tallies],
                                                bounds=(0.0, 100.0), unit="ranking seeds")
    if len(tallies) > 1:
        per_seed = [t.real.scores() for t in tallies]
        pairs = list(itertools.combinations(range(len(tallies)), 2))
        metrics["seed_overlap"] = {
            key: proportion([top_shared(per_seed[i][key], per_seed[j][key], n).numpy() for i, j in pairs],
                            unit="pairs of ranking seeds (sharing seeds)", item=f"top-{n} channels")
            for key in plotted}
        metrics["seed_overlap_chance"] = n / plan.channels
    return metrics


def print_summary(metrics: dict) -> None:
    print(f"{metrics['method']} ranking of {metrics['channels']} channels of {metrics['layer']}, "
          f"{metrics['n_images']} images of split {metrics['split']!r}")
    print(f"{'key':<10} {'mean|score|':>12} {'null':>12} {'top∩null':>9}  top channels")
    for key, top in metrics["top"].items():
        if key.startswith("cell:"):
            continue
        nl = metrics["null"][key]
        print(f"{key:<10} {nl['mean_abs_score']:>12.4g} {nl['null_mean_abs_score']:>12.4g} "
              f"{nl['top_overlap']:>4}/{len(top):<4}  {' '.join(map(str, top))}")
    if "dims" in metrics:
        for name in ("dims", "dims_null"):
            d = metrics[name]
            print(f"{name:<10} position {d['position']} ({d['percent']['position']}%), semantic {d['semantic']} "
                  f"({d['percent']['semantic']}%), residual {d['residual']} ({d['percent']['residual']}%)")
    for key, s in metrics.get("seed_overlap", {}).items():
        print(f"top-{len(metrics['top'][key])} overlap between seeds, {key}: {s['mean']:.3f} "
              f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] (chance {metrics['seed_overlap_chance']:.3f})")
