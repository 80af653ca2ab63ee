"""`poschan seg-train`: train a DeepLabv3-style segmenter on Fashion-MNIST scenes (poschan.data.scenes) or, by
path, on PASCAL VOC 2012 / Cityscapes (poschan.data.segsets; ``--data voc:PATH``).

One model per seed in ``seed<S>/checkpoint.pt`` (weights, optimizer, epoch, history and, under "meta", the model
and data settings that `poschan ablate` / `attack` rebuild it from). Training scenes are redrawn every epoch
from the train items; the test scenes are fixed and drawn from the test items (real data: the val split).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poschan.data.segsets import IGNORE_INDEX
from poschan.engine import fit
from poschan.errors import UserError
from poschan.experiments.arguments import add_training_arguments
from poschan.experiments.seg_common import (
    EvalSet,
    SegData,
    add_scene_arguments,
    describe,
    evaluate_features,
    scene_features,
    scene_spec,
    scores,
)
from poschan.models.segmentation import SEG_MODELS, SegSpec, build_segmenter, load_segmenter_state
from poschan.report.figures import learning_curves
from poschan.results import atomic_torch_save, read_tensor_file
from poschan.runtime import resolve_device
from poschan.stats import summarize
from poschan.tables import write_csv

EXPERIMENT = "seg-train"
HELP = "train a DeepLabv3-style segmenter over a dilated backbone on Fashion-MNIST scenes"


@dataclass
class Config:
    data: str = "scenes"
    side: int = 96
    min_items: int = 1
    max_items: int = 4
    layout_prior: float = 0.0
    layout: str = "left-right"
    grouping: str = "confusable"
    data_root: str | None = None
    model: str = "resnet18-paper"
    width: int = 64
    padding: str = "zeros"
    dilate_last: int = 1
    aspp_channels: int = 256
    atrous_rates: list[int] = field(default_factory=lambda: [2, 4, 6])
    weights: str | None = None
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    train_size: int | None = None  # training scenes per epoch (default 50000; real data: the first N train images)
    test_size: int | None = None  # test scenes (default 2000; real data: the first N val images)
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "cpu"
    preset: str = "paper"

    def validate(self) -> None:
        if self.batch_size < 1 or self.epochs < 0:
            raise UserError(f"batch_size must be >= 1 and epochs >= 0, got {self.batch_size} and {self.epochs}")
        if self.epochs == 0 and self.weights is None:
            raise UserError("epochs 0 (evaluate as is) needs --weights PATH")
        for key in ("train_size", "test_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise UserError(f"{key} must be >= 1 or null, got {getattr(self, key)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise UserError(f"seeds must be distinct and >= 0 (at least one), got {self.seeds}")
        if self.lr <= 0 or len(self.betas) != 2:
            raise UserError(f"lr must be > 0 and betas two numbers, got lr={self.lr}, betas={self.betas}")

    def segmentation(self, data: SegData) -> SegSpec:
        in_chans = 3 if self.model == "tv:deeplabv3_resnet50" or not data.synthetic else 1
        spec = SegSpec(self.model, data.num_classes(), in_chans, self.width, self.padding, self.dilate_last,
                       self.aspp_channels, list(self.atrous_rates))
        spec.validate()
        return spec

    def seg_data(self) -> SegData:
        data = SegData(self.data, scene_spec(self), self.data_root)
        data.validate()
        return data


@dataclass
class SegTrainPlan:
    config: Config
    seg: SegSpec
    data: SegData
    test: EvalSet
    device: torch.device


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="scenes (Fashion-MNIST scenes, default), voc:PATH or cityscapes:PATH")
    add_scene_arguments(p)
    p.add_argument("--model", help=f"backbone: {', '.join(SEG_MODELS)}")
    p.add_argument("--width", type=int, help="width multiplier of resnet18-paper (64 = full)")
    p.add_argument("--padding", help="zeros, none, circular, reflect, replicate, partial")
    p.add_argument("--dilate-last", dest="dilate_last", type=int, help="stages with dilation instead of stride")
    p.add_argument("--aspp-channels", dest="aspp_channels", type=int, help="width of the ASPP head")
    p.add_argument("--weights", help="state dict to start from (tv:deeplabv3_resnet50: torchvision key names)")
    add_training_arguments(p)


def _pixel_cross_entropy(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x), y, ignore_index=IGNORE_INDEX)


def _as_model_input(x: Tensor, in_chans: int) -> Tensor:
    return x.expand(-1, in_chans, -1, -1) if x.shape[1] != in_chans else x


def prepare(config: Config) -> SegTrainPlan:
    """Load the items, draw the test scenes and build one model: every bad input fails here."""
    config.validate()
    device = resolve_device(config.device)
    data = config.seg_data()
    seg = config.segmentation(data)
    test = data.test_set(config.test_size or 2000)
    model = build_segmenter(seg)
    if config.weights is not None:
        _load_weights(model, config.weights)
    with torch.no_grad():
        model.eval()(_as_model_input(test.images[:2], seg.in_chans))  # the model must take an image of this size
    return SegTrainPlan(config, seg, data, test, device)


def _load_weights(model: nn.Module, path: str) -> None:
    state = read_tensor_file(path, "weights file")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    load_segmenter_state(model, state, path)


def evaluate(model: nn.Module, plan: SegTrainPlan) -> dict:
    """mIoU and pixel accuracy on the fixed test scenes."""
    was_training = model.training
    model.eval()
    images = _as_model_input(plan.test.images, plan.seg.in_chans)
    feats = scene_features(model, images, plan.config.batch_size * 2, plan.device)
    result = scores(evaluate_features(model, feats, plan.test.masks, plan.config.batch_size * 2, plan.device))
    model.train(was_training)
    return {"test_miou": result["miou"], "test_pixel_accuracy": result["pixel_accuracy"]}


class _Batches:
    """A batch source whose images are expanded to the model's input channels."""

    def __init__(self, stream, in_chans: int):
        self.stream, self.in_chans = stream, in_chans

    def __len__(self) -> int:
        return len(self.stream)

    def epoch(self, epoch: int, device=None):
        for x, y in self.stream.epoch(epoch, device):
            yield _as_model_input(x, self.in_chans), y


def run(plan: SegTrainPlan, work: Path, *, progress: bool = True) -> dict:
    c = plan.config
    curves, final = [], []
    for seed in c.seeds:
        torch.manual_seed(seed)
        model = build_segmenter(plan.seg)
        if c.weights is not None:
            _load_weights(model, c.weights)
        run_dir = work / f"seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        meta = {"segmentation": asdict(plan.seg), "data": plan.data.source, "scenes": asdict(plan.data.scenes),
                "seed": seed}
        if c.epochs == 0:  # evaluate given weights as they are, in a checkpoint the other commands read
            atomic_torch_save({"model": model.state_dict(), "epoch": 0, "history": [], "meta": meta},
                              run_dir / "checkpoint.pt")
            final.append({"seed": seed, "train_loss": float("nan"), **evaluate(model.to(plan.device), plan)})
            continue
        stream = plan.data.train_source(c.train_size or 50_000, c.batch_size, seed)
        history = fit(model, _Batches(stream, plan.seg.in_chans), epochs=c.epochs, lr=c.lr, betas=tuple(c.betas),
                      seed=seed, device=plan.device, checkpoint=run_dir / "checkpoint.pt",
                      log_csv=run_dir / "metrics.csv", evaluate=lambda m, _e: evaluate(m, plan),
                      loss_fn=_pixel_cross_entropy, progress=progress, desc=f"seed {seed}",
                      tensorboard=run_dir / "tensorboard", meta=meta)
        curves += [{"seed": seed, **{k: v for k, v in row.items() if k != "seconds"}} for row in history]
        final.append(curves[-1])
    if curves:
        write_csv(work / "curves.csv", curves)
        learning_curves(curves, work / "learning_curve.png", chance=0.0, metric="test_miou",
                        title=f"{c.model} (width {c.width}, {c.padding}) · {describe(plan.data)}")
    metrics = {"miou": summarize([row["test_miou"] for row in final]),
               "pixel_accuracy": summarize([row["test_pixel_accuracy"] for row in final]),
               "checkpoints": [f"seed{s}/checkpoint.pt" for s in c.seeds], "test_images": len(plan.test.images)}
    if curves:
        metrics["train_loss"] = summarize([row["train_loss"] for row in final])
    return metrics
