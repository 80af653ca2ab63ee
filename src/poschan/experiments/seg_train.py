"""`poschan seg-train`: train a DeepLabv3-style segmenter on Fashion-MNIST scenes (poschan.data.scenes) or, by
path, on PASCAL VOC 2012 / Cityscapes (poschan.data.segsets; ``--data voc:PATH``).

One model per seed in ``seed<S>/checkpoint.pt`` (weights, optimizer, epoch, history and, under "meta", the model
and data settings that `poschan ablate` / `attack` rebuild it from). Training scenes are redrawn every epoch
from the train items; the test scenes are fixed and drawn from the test items (real data: the val split).
``flip`` (auto, on, off): random horizontal flips of the training images and masks, each image with probability
1/2. auto flips where a mirror keeps the layout: real data, the top-bottom layout, or no layout prior (uniform
placement); not a left-right layout with a prior > 0, where a flip would swap the home regions and so erase the
prior itself. The resolved choice is recorded as "hflip" in each checkpoint's "meta" and in the metrics, with
``hflip_rule`` saying how it was decided.
Test mIoU and pixel accuracy: each seed's final model over the test scenes, with an interval over the seeds and the
shared test images (poschan.stats, from per-image confusions); ``train_loss``: each seed's last epoch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poschan.config import check_at_least, command_defaults, setting
from poschan.control.ablation import SegEval
from poschan.data.scenes import SceneSpec
from poschan.data.segdata import EvalSet, SegData
from poschan.data.segsets import IGNORE_INDEX
from poschan.data.sources import model_input
from poschan.engine import fit
from poschan.errors import UserError
from poschan.experiments.settings import (
    DataSettings,
    FitSettings,
    NetworkSettings,
    PaddingSettings,
    RunSettings,
    SceneSettings,
)
from poschan.metrics.segmentation import miou_of, pixel_accuracy_of, score
from poschan.models.segmentation import SEG_MODELS, SegSpec, build_segmenter, load_segmenter_state, seg_input
from poschan.models.segmenters import SCENE_FIELDS, describe
from poschan.models.weights import read_state_dict
from poschan.report.figures import learning_curves
from poschan.results import atomic_torch_save
from poschan.runtime import eval_mode, resolve_device
from poschan.tables import write_csv

EXPERIMENT = "seg-train"
HELP = "train a DeepLabv3-style segmenter over a dilated backbone on Fashion-MNIST scenes"
FLIPS = ("auto", "on", "off")


@dataclass
@command_defaults
class Config(RunSettings, FitSettings, PaddingSettings, NetworkSettings, SceneSettings, DataSettings):
    # precision fp32: no paired fp32-vs-bf16 check covers segmentation training yet (scripts/precision_check.py)
    DEFAULTS: ClassVar[dict] = {"data": "scenes", "batch_size": 32, "betas": [0.9, 0.999], "seeds": [0],
                                "pretrained": True, "precision": "fp32"}
    FLAGS: ClassVar[dict] = {
        "data": {"help": "scenes (Fashion-MNIST scenes, default), voc:PATH or cityscapes:PATH"},
        "model": {"help": f"backbone: {', '.join(SEG_MODELS)}"},
        "width": {"help": "width multiplier of resnet18-paper (64 = full)"},
        "pretrained": {"help": "start efficientnet-lite0 from its packaged ImageNet weights (the default; other "
                               "models: from scratch)",
                       "negative": "--no-pretrained", "negative_help": "train efficientnet-lite0 from scratch"},
        "weights": {"help": "state dict to start from (tv:deeplabv3_resnet50: torchvision key names)"},
        "epochs": {"help": "training epochs (0: evaluate --weights as they are)"},
        "train_size": {"help": "training scenes per epoch (default 50000; real data: the first N train images)"},
        "test_size": {"help": "test scenes (default 2000; real data: the first N val images)"},
    }

    dilate_last: int = setting(1, "stages with dilation instead of stride")
    aspp_channels: int = setting(256, "width of the ASPP head")
    atrous_rates: list[int] | None = setting(None, "dilation rates of the ASPP branches (default: 2, 4, 6 over the "
                                             "stride-8 resnet18-paper; 1, 2, 3 over stride-16 efficientnet-lite0)",
                                             cli=False)
    flip: str = setting("auto", "random horizontal flips of training images and masks: auto (on, except for scenes "
                        "with a left-right layout prior > 0), on or off")

    def validate(self) -> None:
        if self.batch_size < 1 or self.epochs < 0:
            raise UserError(f"batch_size must be >= 1 and epochs >= 0, got {self.batch_size} and {self.epochs}")
        if self.epochs == 0 and self.weights is None:
            raise UserError("epochs 0 (evaluate as is) needs --weights PATH")
        check_at_least(self, 1, "train_size", "test_size", optional=True)
        if self.lr <= 0 or len(self.betas) != 2:
            raise UserError(f"lr must be > 0 and betas two numbers, got lr={self.lr}, betas={self.betas}")
        if self.flip not in FLIPS:
            raise UserError(f"unknown flip {self.flip!r}; allowed: {', '.join(FLIPS)}")
        # resolved as used (and so recorded): only efficientnet-lite0 has packaged weights, the others train from scratch
        self.pretrained = self.pretrained and self.model == "efficientnet-lite0"

    def segmentation(self, data: SegData) -> SegSpec:
        in_chans = seg_input(self.model)[0] or (1 if data.synthetic else 3)
        rates = self.atrous_rates or ([1, 2, 3] if self.model == "efficientnet-lite0" else [2, 4, 6])
        spec = SegSpec(self.model, data.num_classes(), in_chans, self.width, self.padding, self.dilate_last,
                       self.aspp_channels, list(rates))
        spec.validate()
        return spec

    def seg_data(self) -> SegData:
        scenes = SceneSpec(**{key: getattr(self, key) for key in SCENE_FIELDS})
        scenes.validate()
        data = SegData(self.data, scenes, self.data_root)
        data.validate()
        return data


def resolve_flip(flip: str, data: SegData) -> tuple[bool, str]:
    """(whether training flips, how that was decided) for a valid ``flip`` setting (auto, on, off) on ``data``."""
    if flip != "auto":
        return flip == "on", f"set: flip {flip}"
    if not data.synthetic:
        return True, "auto: real data"
    if data.scenes.layout == "top-bottom":
        return True, "auto: top-bottom layout (a horizontal flip keeps it)"
    if data.scenes.layout_prior == 0:
        return True, "auto: layout prior 0 (uniform placement)"
    return False, f"auto: left-right layout prior {data.scenes.layout_prior} (a flip would swap the home regions)"


@dataclass
class SegTrainPlan:
    config: Config
    seg: SegSpec
    data: SegData
    test: EvalSet  # as the data gives it
    device: torch.device
    hflip: bool
    hflip_rule: str

    def model_input(self, x: Tensor) -> Tensor:
        """Images of the data (normalised as ``test``) as the model takes them: its input channels and, for a
        pretrained backbone, its normalisation."""
        return model_input(x, self.test.mean, self.test.std, self.seg.in_chans, seg_input(self.seg.model)[1])


def _pixel_cross_entropy(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x), y, ignore_index=IGNORE_INDEX)


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
    plan = SegTrainPlan(config, seg, data, test, device, *resolve_flip(config.flip, data))
    with torch.no_grad():
        model.eval()(plan.model_input(test.images[:2]))  # the model must take an image of this size
    return plan


def _load_weights(model: nn.Module, path: str) -> None:
    load_segmenter_state(model, read_state_dict(path), path)


def counts_on_test(model: nn.Module, plan: SegTrainPlan) -> np.ndarray:
    """(test images, 3K) per-image IoU counts of ``model`` on the fixed test scenes (metrics.segmentation)."""
    images = plan.model_input(plan.test.images)
    with eval_mode(model):
        return SegEval(model, model.feature_layer, (images, plan.test.masks), batch_size=plan.config.batch_size * 2,
                       device=plan.device).meter().counts()


def evaluate(model: nn.Module, plan: SegTrainPlan) -> dict:
    """mIoU and pixel accuracy on the fixed test scenes."""
    counts = counts_on_test(model, plan).mean(axis=0)
    return {"test_miou": float(miou_of(counts)), "test_pixel_accuracy": float(pixel_accuracy_of(counts))}


class _Batches:
    """A batch source whose images are converted to the model's input (``SegTrainPlan.model_input``)."""

    def __init__(self, stream, plan: SegTrainPlan):
        self.stream, self.plan = stream, plan

    def __len__(self) -> int:
        return len(self.stream)

    def epoch(self, epoch: int, device=None):
        for x, y in self.stream.epoch(epoch, device):
            yield self.plan.model_input(x), y


def run(plan: SegTrainPlan, work: Path, *, progress: bool = True) -> dict:
    c = plan.config
    curves, counts, losses = [], [], []
    for seed in c.seeds:
        torch.manual_seed(seed)
        model = build_segmenter(plan.seg, pretrained=c.pretrained)
        if c.weights is not None:
            _load_weights(model, c.weights)
        run_dir = work / f"seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        meta = {"segmentation": asdict(plan.seg), "data": plan.data.source, "scenes": asdict(plan.data.scenes),
                "seed": seed, "hflip": plan.hflip}
        if c.epochs == 0:  # evaluate given weights as they are, in a checkpoint the other commands read
            atomic_torch_save({"model": model.state_dict(), "epoch": 0, "history": [], "meta": meta},
                              run_dir / "checkpoint.pt")
            model.to(plan.device)
        else:
            stream = plan.data.train_source(c.train_size or 50_000, c.batch_size, seed, plan.hflip)
            history = fit(model, _Batches(stream, plan), epochs=c.epochs, **c.fit_options(plan.device),
                          seed=seed, device=plan.device, checkpoint=run_dir / "checkpoint.pt",
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
               "checkpoints": [f"seed{s}/checkpoint.pt" for s in c.seeds], "test_images": len(plan.test.images),
               "hflip": plan.hflip, "hflip_rule": plan.hflip_rule}
    if curves:
        metrics["train_loss"] = losses  # per seed, last epoch (a training quantity: no interval)
    return metrics
