"""`poschan rank`: which channels of any model's named layer encode overall position, and which a region.

One streaming pass per seed over the images of ONE split (poschan.ranking: methods, sign convention, statistics,
nulls). Several seeds draw new orders, cells and partners over the same images; their statistics are merged
into one ranking, and each seed's own top-N is compared with it (``seed_overlap``).

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

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from poschan.data.fingerprint import check_disjoint, image_fingerprint, trusted_disjoint
from poschan.data.sources import ImageSet, load_dataset
from poschan.errors import UserError
from poschan.experiments.arguments import FOLDER_HELP, add_model_arguments
from poschan.experiments.probe import resolve_layers
from poschan.locate.designs import FLIP_INPUTS, METHODS, RankSpec, Tally, accumulate
from poschan.locate.ranking import ranking_order, top_overlap
from poschan.models.poolnet import PoolNet
from poschan.models.registry import build_model
from poschan.report.ranking_figures import cell_heatmap, sorted_scores
from poschan.results import atomic_write_text
from poschan.runtime import resolve_device, seeded_init
from poschan.stats import summarize
from poschan.tables import write_csv

EXPERIMENT = "rank"
HELP = "rank the channels of a model's named layer by the position they encode (flip, shift, dimest), one pass"
_AS_IS = ("photos", "folder:")  # flip_input auto: photographs are flipped as they are, item sets on canvases


@dataclass
class Config:
    method: str = "flip"
    layer: str = "backbone"
    data: str = "fashion-mnist"
    split: str = "train"
    eval_split: str | None = None
    data_root: str | None = None
    limit: int | None = None  # the first N images of the split; null: all
    image_size: int | None = None  # photos / folder:PATH only (default 32)
    grid: int = 3
    canvas: int | None = None
    background: str = "mean"
    flip_input: str = "auto"  # canvas, image, or auto: image for photos and folder:PATH, canvas otherwise
    semantic_pairs: str = "item"
    model: str = "efficientnet-lite0"
    width: int = 64
    padding: str = "zeros"
    head: str = "gap-fc"
    num_classes: int = 10  # only to build the model's head (must match a checkpoint given with --weights)
    pretrained: bool = False
    weights: str | None = None
    batch_size: int = 64
    top_n: int = 10
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "cpu"
    preset: str = "paper"

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}; allowed: {', '.join(METHODS)}")
        if self.flip_input not in ("auto", *FLIP_INPUTS):
            raise UserError(f"unknown flip_input {self.flip_input!r}; allowed: auto, {', '.join(FLIP_INPUTS)}")
        self.spec().validate()
        if not self.layer.strip():
            raise UserError("layer must name one layer (see `poschan layers MODEL`), e.g. backbone or stage4")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit {self.limit} leaves split {self.split!r} empty; use limit >= 1 or null (all)")
        for key in ("batch_size", "top_n", "width", "num_classes"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.image_size is not None and self.image_size < 1:
            raise UserError(f"image_size must be >= 1, got {self.image_size}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise UserError(f"seeds must be distinct and >= 0 (at least one), got {self.seeds}")

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
    model: PoolNet
    layer: str
    channels: int
    device: torch.device


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--method", help=f"{', '.join(METHODS)} (see poschan.ranking)")
    p.add_argument("--layer", help="one layer name (see `poschan layers`) or stage name (stage1..)")
    p.add_argument("--data", help=f"fashion-mnist (default), cifar10, photos, {FOLDER_HELP}")
    p.add_argument("--split", help="the split to rank on: train/test (photos: train, test, all; folder: a sub-folder)")
    p.add_argument("--eval-split", dest="eval_split", help="the split a later evaluation uses; may share no image")
    p.add_argument("--limit", type=int, help="use the first N images of the split")
    p.add_argument("--image-size", dest="image_size", type=int, help="side of photos / folder images (default 32)")
    p.add_argument("--grid", type=int, help="k of the k×k canvas grid")
    p.add_argument("--canvas", type=int, help="canvas side in pixels (default: grid × image side)")
    p.add_argument("--background", help="canvas fill: mean or black")
    p.add_argument("--flip-input", dest="flip_input", help="flip: canvas, image or auto")
    p.add_argument("--semantic-pairs", dest="semantic_pairs", help="dimest: item (same image) or class")
    p.add_argument("--padding", help="zeros, none, circular, reflect, replicate, partial")
    p.add_argument("--head", help="gap-fc or gapnet (to load a checkpoint)")
    p.add_argument("--num-classes", dest="num_classes", type=int, help="classes of the head (to load a checkpoint)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="images per step")
    p.add_argument("--top-n", dest="top_n", type=int, help="length of the top lists (default 10)")


def load_split(c: Config) -> ImageSet:
    """The images of ``c.split`` (first ``c.limit``)."""
    return load_dataset(c.data, c.split, c.data_root, limit=c.limit, image_size=c.image_size)


def _accumulate(plan: RankPlan, images: ImageSet, seed: int, progress: bool) -> Tally:
    return accumulate(plan.model, plan.layer, images, plan.spec, seed=seed, batch_size=plan.config.batch_size,
                      device=plan.device, in_chans=plan.model.in_chans, input_norm=plan.model.input_norm,
                      progress=progress)


def prepare(config: Config) -> RankPlan:
    """Load the split (refused when it shares an image with the eval split), build the frozen model and run a
    3-image pass: all bad input fails here."""
    device = resolve_device(config.device)
    images = load_split(config)
    if config.eval_split is not None and not trusted_disjoint(config.data, config.split, config.eval_split):
        check_disjoint(load_split(dataclasses.replace(config, split=config.eval_split, limit=None)), images)
    with seeded_init(config.seeds[0]):  # random-init weights: a function of the first seed
        model = build_model(config.model, config.num_classes, images.channels, width=config.width, head=config.head,
                            padding=config.padding, pretrained=config.pretrained, weights=config.weights)
    model.eval().requires_grad_(False).to(device)
    (layer,) = resolve_layers(model, [config.layer])
    plan = RankPlan(config, config.spec(), images, model, layer, 0, device)
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
    ranking = {"model": c.model, "layer": plan.layer, "channels": plan.channels, "method": c.method, "data": c.data,
               "split": c.split, "eval_split": c.eval_split, "n_images": len(plan.images),
               "images": image_fingerprint(plan.images.images), "seeds": list(c.seeds),
               "design": dataclasses.asdict(plan.spec),
               "keys": {key: {"order": orders[key].tolist(), "scores": real[key].tolist()} for key in real}}
    atomic_write_text(work / "ranking.json", json.dumps(ranking) + "\n")
    write_csv(work / "table.csv", [{"channel": ch, **{key: float(s[ch]) for key, s in real.items()}}
                                   for ch in range(plan.channels)])
    title = f"{c.method} · {c.model}{' (pretrained)' if c.pretrained else ''} · {plan.layer} · {c.data}/{c.split}"
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
        metrics["position_percent"] = summarize([t.real.dims()["percent"]["position"] for t in tallies])
    if len(tallies) > 1:
        metrics["seed_overlap"] = {key: summarize([top_overlap(t.real.scores()[key], real[key], n) / n
                                                   for t in tallies]) for key in plotted}
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
