"""`poschan rank`: which channels of any model's named layer encode overall position, and which a region.

``poschan.rank_channels`` on ONE split (one pass per seed) and ``poschan.ranking_controls`` (shuffled-pair null, seed
agreement). Writes ``ranking.json`` (the ChannelRanking file, with ``data.eval_split``), ``table.csv`` (one score
column per key), ``scores.png`` (sorted scores vs the null; shift also ``cells.png``, cell × top-channel selectivity).
``--eval-split`` names the split a later evaluation uses: it may share no image with ``--split`` (by content, except
two official splits of Fashion-MNIST / CIFAR-10). ``photos`` has the splits ``train``/``test`` of `poschan probe`
(every third photo is a test photo) and ``all``, which overlaps both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from poschan.config import check_at_least, command_defaults, setting
from poschan.data.fingerprint import check_disjoint, trusted_disjoint
from poschan.data.sources import ImageSet, load_dataset
from poschan.errors import UserError
from poschan.experiments import settings
from poschan.locate.designs import FLIP_INPUTS, RankSpec
from poschan.locate.rank import rank_channels, ranking_controls
from poschan.locate.ranking import ChannelRanking
from poschan.models.registry import build_model
from poschan.models.segmentation import TV_SEGMENTER_NAMES, load_segmenter
from poschan.report.ranking_figures import cell_heatmap, sorted_scores
from poschan.runtime import resolve_device, seeded_torch_rng
from poschan.tables import format_stat, write_csv
from poschan.taps import resolve_layers

EXPERIMENT = "rank"
HELP = "rank the channels of a model's named layer by the position they encode (flip, shift, dimest), one pass"
_AS_IS = ("photos", "folder:")  # flip_input auto: photographs are flipped as they are, item sets on canvases


@dataclass
@command_defaults
class Config(settings.RunSettings, settings.TopListSettings, settings.NumClassesSettings, settings.BatchSettings, settings.HeadSettings,
             settings.PaddingSettings, settings.NetworkSettings, settings.CanvasSettings, settings.ImageSizeSettings,
             settings.DataSettings, settings.EvalSplitSettings, settings.LayerSettings, settings.RankMethodSettings,
             settings.CheckpointSettings):
    DEFAULTS: ClassVar[dict] = {"model": "efficientnet-lite0", "batch_size": 64, "seeds": [0], "layer": None}
    FLAGS: ClassVar[dict] = {"image_size": {"help": "side of photos / folder images (default 32)"},
                             "grid": {"help": "k of the k×k canvas grid"},
                             "background": {"help": "canvas fill: mean or black"},
                             "head": {"help": "gap-fc or gapnet (to load a checkpoint)"},
                             "num_classes": {"help": "classes of the head (to load a checkpoint); of a segmentation "
                                                     "--model, the classes it predicts (11 for Fashion-MNIST scenes)"},
                             "checkpoint": {"help": "rank a seg-train checkpoint's segmenter (default layer: its "
                                                    "feature layer); the ranking feeds `ablate --ranking`"},
                             "layer": {"help": "one layer name (see `poschan layers`) or stage name (stage1..); "
                                               "default: a classifier's backbone, the layer a segmenter's ablate "
                                               "and attack mask"}}

    split: str = setting("train", "the split to rank on: train/test (photos: train, test, all; folder: a sub-folder)")
    limit: int | None = setting(None, "use the first N images of the split (default: all)")
    # flip_input auto: image for photos and folder:PATH, canvas otherwise
    flip_input: str = setting("auto", "flip: canvas, image or auto")
    semantic_pairs: str = setting("item", "dimest: item (same image) or class")
    segmenter: bool = setting(False, f"--model is a segmentation network ({', '.join(TV_SEGMENTER_NAMES)} are always), "
                                     "loaded as ablate and attack load it")

    def validate(self) -> None:
        if self.flip_input not in ("auto", *FLIP_INPUTS):
            raise UserError(f"unknown flip_input {self.flip_input!r}; allowed: auto, {', '.join(FLIP_INPUTS)}")
        self.spec().validate()
        if self.layer is not None and not self.layer.strip():
            raise UserError("layer must name one layer (see `poschan layers MODEL`), e.g. backbone or stage4")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit {self.limit} leaves split {self.split!r} empty; use limit >= 1 or null (all)")
        check_at_least(self, 1, "batch_size", "top_n", "width", "num_classes")
        check_at_least(self, 1, "image_size", optional=True)

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
    device: torch.device
    in_chans: int | None = None  # how the model takes images (see ImageSet.for_model)
    input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def rank(self, images: ImageSet, seeds: list[int], progress: bool = False) -> ChannelRanking:
        c = self.config
        return rank_channels(self.model, self.layer, images, self.spec, seeds=seeds, batch_size=c.batch_size,
                             device=self.device, in_chans=self.in_chans, input_norm=self.input_norm,
                             model_name=c.checkpoint or c.model, progress=progress)


def load_split(c: Config) -> ImageSet:
    """The images of ``c.split`` (first ``c.limit``)."""
    return load_dataset(c.data, c.split, c.data_root, limit=c.limit, image_size=c.image_size)


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
        with seeded_torch_rng(config.seeds[0]):  # random-init weights: a function of the first seed
            model = build_model(config.model, config.num_classes, images.channels, width=config.width,
                                head=config.head, padding=config.padding, pretrained=config.pretrained,
                                weights=config.weights)
        model.eval().requires_grad_(False).to(device)
        in_chans, input_norm = model.in_chans, model.input_norm
        (layer,) = resolve_layers(model, [config.layer or "backbone"])
    plan = RankPlan(config, config.spec(), images, model, layer, device, in_chans, input_norm)
    plan.rank(images.subset(3) if len(images) >= 3 else images, [0])  # canvas fit, 4-D layer (fewer images: count)
    return plan


def run(plan: RankPlan, work: Path, *, progress: bool = True) -> dict:
    """Rank over every seed; write ranking.json, table.csv and the figures; return the metrics."""
    c = plan.config
    ranking = plan.rank(plan.images, list(c.seeds), progress)
    ranking.data["eval_split"] = c.eval_split
    ranking.save(work / "ranking.json")
    controls = ranking_controls(ranking, c.top_n)
    real, null = ranking.scores, ranking.null
    write_csv(work / "table.csv", [{"channel": ch, **{key: float(s[ch]) for key, s in real.items()}}
                                   for ch in range(ranking.channels)])
    title = f"{c.method} · {c.checkpoint or c.model}{' (pretrained)' if c.pretrained else ''} · {plan.layer} · {c.data}/{c.split}"
    sorted_scores({key: (real[key], null[key]) for key in real if not key.startswith("cell:")}, work / "scores.png",
                  title=title)
    if c.method == "shift":
        top = ranking.order("overall")[:max(len(controls.top["overall"]), 20)].tolist()
        cell_heatmap(ranking.cell_scores(), top, c.grid, work / "cells.png", title=title)
    return {"method": c.method, "layer": plan.layer, "channels": ranking.channels, "n_images": len(plan.images),
            "split": c.split, "eval_split": c.eval_split, "design": dataclasses.asdict(plan.spec),
            **controls.metrics()}


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
    for name in ("dims", "dims_null"):
        if name in metrics:
            d = metrics[name]
            print(f"{name:<10} position {d['position']} ({d['percent']['position']}%), semantic {d['semantic']} "
                  f"({d['percent']['semantic']}%), residual {d['residual']} ({d['percent']['residual']}%)")
    for key, s in metrics.get("seed_overlap", {}).items():
        print(f"top-{len(metrics['top'][key])} overlap between seeds, {key}: {format_stat(s)} "
              f"(chance {metrics['seed_overlap_chance']:.3f})")
