"""`poschan seg-train`: train a DeepLabv3-style segmenter on Fashion-MNIST scenes (poschan.data.scenes) or, by
path, on PASCAL VOC 2012 / Cityscapes (poschan.data.segsets; ``--data voc:PATH``).

One model per seed in ``seed<S>/checkpoint.pt`` (weights, optimizer, epoch, history and, under "meta", the model
and data settings that `poschan ablate` / `attack` rebuild it from). Training scenes are redrawn every epoch
from the train items; the test scenes are fixed and drawn from the test items (real data: the val split).
Test mIoU and pixel accuracy: each seed's final model over the test scenes, with a two-level bootstrap interval over
the seeds and the test images (poschan.stats, from per-image confusions); ``train_loss``: each seed's last epoch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poschan.config import command_defaults, setting
from poschan.control.ablation import SegEval
from poschan.data.segdata import EvalSet, SegData
from poschan.data.segsets import IGNORE_INDEX
from poschan.engine import fit
from poschan.errors import UserError
from poschan.experiments.seg_common import describe, scene_spec, score
from poschan.experiments.settings import (
    DataSettings,
    FitSettings,
    ModelSettings,
    PaddingSettings,
    RunSettings,
    SceneSettings,
    WidthSettings,
)
from poschan.metrics.segmentation import miou_of, pixel_accuracy_of
from poschan.models.segmentation import SEG_MODELS, SegSpec, build_segmenter, load_segmenter_state
from poschan.models.weights import read_state_dict
from poschan.report.figures import learning_curves
from poschan.results import atomic_torch_save
from poschan.runtime import eval_mode, resolve_device
from poschan.tables import write_csv

EXPERIMENT = "seg-train"
HELP = "train a DeepLabv3-style segmenter over a dilated backbone on Fashion-MNIST scenes"


@dataclass
@command_defaults
class Config(RunSettings, FitSettings, PaddingSettings, WidthSettings, ModelSettings, SceneSettings, DataSettings):
    DEFAULTS: ClassVar[dict] = {"data": "scenes", "batch_size": 32, "betas": [0.9, 0.999], "seeds": [0]}
    FLAGS: ClassVar[dict] = {
        "data": {"help": "scenes (Fashion-MNIST scenes, default), voc:PATH or cityscapes:PATH"},
        "model": {"help": f"backbone: {', '.join(SEG_MODELS)}"},
        "width": {"help": "width multiplier of resnet18-paper (64 = full)"},
        "weights": {"help": "state dict to start from (tv:deeplabv3_resnet50: torchvision key names)"},
        "epochs": {"help": "training epochs (0: evaluate --weights as they are)"},
        "train_size": {"help": "training scenes per epoch (default 50000; real data: the first N train images)"},
        "test_size": {"help": "test scenes (default 2000; real data: the first N val images)"},
    }

    dilate_last: int = setting(1, "stages with dilation instead of stride")
    aspp_channels: int = setting(256, "width of the ASPP head")
    atrous_rates: list[int] = setting([2, 4, 6], "dilation rates of the ASPP branches", cli=False)

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
    load_segmenter_state(model, read_state_dict(path), path)


def counts_on_test(model: nn.Module, plan: SegTrainPlan) -> np.ndarray:
    """(test images, 2K) per-image IoU counts of ``model`` on the fixed test scenes (metrics.segmentation)."""
    images = _as_model_input(plan.test.images, plan.seg.in_chans)
    with eval_mode(model):
        return SegEval(model, model.feature_layer, (images, plan.test.masks), batch_size=plan.config.batch_size * 2,
                       device=plan.device).meter().counts()


def evaluate(model: nn.Module, plan: SegTrainPlan) -> dict:
    """mIoU and pixel accuracy on the fixed test scenes."""
    counts = counts_on_test(model, plan).mean(axis=0)
    return {"test_miou": float(miou_of(counts)), "test_pixel_accuracy": float(pixel_accuracy_of(counts))}


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
    curves, counts, losses = [], [], []
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
            model.to(plan.device)
        else:
            stream = plan.data.train_source(c.train_size or 50_000, c.batch_size, seed)
            history = fit(model, _Batches(stream, plan.seg.in_chans), epochs=c.epochs, lr=c.lr,
                          betas=tuple(c.betas), seed=seed, device=plan.device, checkpoint=run_dir / "checkpoint.pt",
                          log_csv=run_dir / "metrics.csv", evaluate=lambda m, _e: evaluate(m, plan),
                          loss_fn=_pixel_cross_entropy, progress=progress, desc=f"seed {seed}",
                          tensorboard=run_dir / "tensorboard", meta=meta)
            curves += [{"seed": seed, **{k: v for k, v in row.items() if k != "seconds"}} for row in history]
            losses.append(history[-1]["train_loss"])
        counts.append(counts_on_test(model, plan))  # the final model's, image by image (resumed or not)
    if curves:
        write_csv(work / "curves.csv", curves)
        learning_curves(curves, work / "learning_curve.png", chance=0.0, metric="test_miou",
                        title=f"{c.model} (width {c.width}, {c.padding}) · {describe(plan.data)}")
    metrics = {"miou": score(counts, "training seeds"),
               "pixel_accuracy": score(counts, "training seeds", pixel_accuracy_of),
               "checkpoints": [f"seed{s}/checkpoint.pt" for s in c.seeds], "test_images": len(plan.test.images)}
    if curves:
        metrics["train_loss"] = losses  # per seed, last epoch (a training quantity: no interval)
    return metrics
