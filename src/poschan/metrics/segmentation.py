"""Segmentation metrics over pixel masks: confusion matrix, mean IoU, pixel accuracy.

Conventions: a confusion matrix is (K, K) int64 with rows = target class, columns = predicted class. The mean IoU
averages IoU = tp / (tp + fp + fn) over the classes PRESENT, i.e. seen in the target or in the prediction of the
counted pixels; a class absent from both has no defined IoU and is left out (as torchmetrics leaves out its NaN
classes and the VOC protocol averages over present classes). A class predicted but absent from the target counts
with IoU 0. An empty confusion (no pixel counted) gives NaN. Target pixels labelled IGNORE_INDEX (255, e.g.
VOC's void border, Cityscapes' unlabelled classes) are never counted.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from poschan.data.segsets import IGNORE_INDEX
from poschan.errors import UserError


def confusion(pred: Tensor, target: Tensor, num_classes: int, mask: Tensor | None = None) -> Tensor:
    """(K, K) int64 confusion of ``pred`` against ``target`` (same shape, ints in 0..K-1) over the pixels where
    ``mask`` (bool, broadcastable to them: (S, S) or (B, S, S)) is True; all pixels when ``mask`` is None.
    Target pixels equal to IGNORE_INDEX are left out."""
    # Hand-written (one bincount) rather than torchmetrics: the ablation sweeps need one confusion per
    # (N, draw) and mask, and torchmetrics' JaccardIndex selects pixels only through an ignore label.
    if pred.shape != target.shape:
        raise UserError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}; "
                        "they must be equal")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise UserError(f"mask must be bool, got {mask.dtype}")
        try:
            mask = torch.broadcast_to(mask, target.shape)
        except RuntimeError:
            raise UserError(f"mask shape {tuple(mask.shape)} does not broadcast to the labels' "
                            f"{tuple(target.shape)}; use (S, S) or (B, S, S)") from None
        pred, target = pred[mask], target[mask]
    scored = target != IGNORE_INDEX
    pred, target = pred[scored], target[scored]
    k = num_classes
    if target.numel() and not (0 <= min(int(target.min()), int(pred.min()))
                               and max(int(target.max()), int(pred.max())) < k):
        raise UserError(f"labels and predictions must lie in 0..{k - 1}")
    counts = torch.bincount((target.reshape(-1) * k + pred.reshape(-1)).long(), minlength=k * k)
    return counts.reshape(k, k)


def iou_per_class(conf: Tensor) -> Tensor:
    """(K,) float64 IoU of each class; NaN for a class absent from both target and prediction."""
    conf = conf.double()
    tp = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))


def miou(conf: Tensor) -> float:
    """Mean IoU over the classes present (see the module docstring); NaN for an empty confusion."""
    ious = iou_per_class(conf)
    present = ~ious.isnan()
    return float(ious[present].mean()) if bool(present.any()) else math.nan


def pixel_accuracy(conf: Tensor) -> float:
    """Fraction of counted pixels predicted correctly; NaN for an empty confusion."""
    total = int(conf.sum())
    return int(conf.diagonal().sum()) / total if total else math.nan


class ConfusionMeter:
    """Running confusions over several named (S, S) bool masks at once; ``"all"`` (the whole image) is always one."""

    def __init__(self, num_classes: int, masks: dict[str, Tensor] | None = None) -> None:
        masks = dict(masks or {})
        if "all" in masks:
            raise UserError("mask name 'all' is reserved for the whole image; choose another name")
        self.num_classes = num_classes
        self.masks: dict[str, Tensor | None] = {"all": None, **masks}
        self.confusions = {name: torch.zeros(num_classes, num_classes, dtype=torch.int64) for name in self.masks}

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of (B, S, S) predictions and targets to every mask's confusion."""
        for name, mask in self.masks.items():
            m = None if mask is None else mask.to(target.device)
            self.confusions[name] += confusion(pred, target, self.num_classes, m).cpu()

    def _conf(self, name: str) -> Tensor:
        if name not in self.confusions:
            raise UserError(f"unknown mask {name!r}; known: {', '.join(self.confusions)}")
        return self.confusions[name]

    def miou(self, name: str = "all") -> float:
        return miou(self._conf(name))

    def pixel_accuracy(self, name: str = "all") -> float:
        return pixel_accuracy(self._conf(name))


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int, device: torch.device | str) -> Tensor:
    """(N, S, S) int64 argmax predictions of ``model`` (logits (B, K, S, S)) on ``images`` (N, C, S, S), run on
    ``device`` in batches of ``batch_size``; returned on the device of ``images``. Setting eval mode is the
    caller's job."""
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    out = [model(images[i:i + batch_size].to(device)).argmax(dim=1).to(images.device)
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, *images.shape[2:], dtype=torch.int64, device=images.device)
