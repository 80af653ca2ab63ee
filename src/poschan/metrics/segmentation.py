"""Segmentation metrics over pixel masks: confusion matrices (whole and per image), mean IoU, pixel accuracy.

Conventions: a confusion matrix is (K, K) int64 with rows = target class, columns = predicted class. The mean IoU
averages IoU = tp / (tp + fp + fn) over the classes PRESENT, i.e. seen in the target or in the prediction of the
counted pixels; a class absent from both has no defined IoU and is left out (as torchmetrics leaves out its NaN
classes and the VOC protocol averages over present classes). A class predicted but absent from the target counts
with IoU 0. An empty confusion (no pixel counted) gives NaN. Target pixels labelled IGNORE_INDEX (255, e.g.
VOC's void border, Cityscapes' unlabelled classes) are never counted.

For intervals over test images (``poschan.stats``), each image is one row of *IoU counts* (``iou_counts``): per
class its true positives, then its target plus predicted pixels (2K numbers, all that mIoU and pixel accuracy
read from a confusion). ``miou_of`` / ``pixel_accuracy_of`` score the mean of such rows, vectorised over leading
axes; the mean over images scores as the summed confusion does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from poschan.data.segsets import IGNORE_INDEX
from poschan.errors import UserError


def _confusions(pred: Tensor, target: Tensor, num_classes: int, mask: Tensor | None, per_image: bool) -> Tensor:
    # Hand-written (one bincount) rather than torchmetrics: the ablation sweeps need one confusion per
    # (N, draw), mask and image, and torchmetrics' JaccardIndex selects pixels only through an ignore label.
    if pred.shape != target.shape:
        raise UserError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}; "
                        "they must be equal")
    scored = target != IGNORE_INDEX
    if mask is not None:
        if mask.dtype != torch.bool:
            raise UserError(f"mask must be bool, got {mask.dtype}")
        try:
            scored = scored & torch.broadcast_to(mask, target.shape)
        except RuntimeError:
            raise UserError(f"mask shape {tuple(mask.shape)} does not broadcast to the labels' "
                            f"{tuple(target.shape)}; use (S, S) or (B, S, S)") from None
    p, t = pred[scored].long(), target[scored].long()
    k = num_classes
    if t.numel() and not (0 <= min(int(t.min()), int(p.min())) and max(int(t.max()), int(p.max())) < k):
        raise UserError(f"labels and predictions must lie in 0..{k - 1}")
    images = len(target) if per_image else 1
    cell = t * k + p
    if per_image:
        index = torch.arange(images, device=target.device).view(-1, *[1] * (target.dim() - 1))
        cell = cell + torch.broadcast_to(index, target.shape)[scored] * (k * k)
    return torch.bincount(cell, minlength=images * k * k).reshape(images, k, k)


def confusion(pred: Tensor, target: Tensor, num_classes: int, mask: Tensor | None = None) -> Tensor:
    """(K, K) int64 confusion of ``pred`` against ``target`` (same shape, ints in 0..K-1) over the pixels where
    ``mask`` (bool, broadcastable to them: (S, S) or (B, S, S)) is True; all pixels when ``mask`` is None.
    Target pixels equal to IGNORE_INDEX are left out."""
    return _confusions(pred, target, num_classes, mask, per_image=False)[0]


def image_confusions(pred: Tensor, target: Tensor, num_classes: int, mask: Tensor | None = None) -> Tensor:
    """(B, K, K) int64: the ``confusion`` of each image of (B, S, S) ``pred`` and ``target``."""
    return _confusions(pred, target, num_classes, mask, per_image=True)


def iou_counts(confusions: Tensor | np.ndarray) -> np.ndarray:
    """(..., K, K) confusions -> (..., 2K) float64: each class's true positives, then its target + predicted
    pixels (the rows that ``miou_of`` and ``pixel_accuracy_of`` score)."""
    c = confusions.detach().cpu().double().numpy() if isinstance(confusions, Tensor) else np.asarray(
        confusions, dtype=np.float64)
    return np.concatenate([np.diagonal(c, axis1=-2, axis2=-1), c.sum(-1) + c.sum(-2)], axis=-1)


def _class_ious(counts: np.ndarray) -> np.ndarray:
    """(..., 2K) IoU counts -> (..., K) IoU of each class, NaN for a class absent from target and prediction."""
    k = counts.shape[-1] // 2
    tp, both = counts[..., :k], counts[..., k:]
    union = both - tp  # tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)


def miou_of(counts: np.ndarray) -> np.ndarray:
    """Mean IoU of (..., 2K) IoU counts (or their means over images) over the classes present, vectorised over the
    leading axes; NaN where nothing is counted."""
    ious = _class_ious(np.asarray(counts, dtype=np.float64))
    present = ~np.isnan(ious)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present, ious, 0.0).sum(-1) / present.sum(-1)


def pixel_accuracy_of(counts: np.ndarray) -> np.ndarray:
    """Fraction of counted pixels predicted correctly, from (..., 2K) IoU counts; NaN where nothing is counted."""
    counts = np.asarray(counts, dtype=np.float64)
    k = counts.shape[-1] // 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2 * counts[..., :k].sum(-1) / counts[..., k:].sum(-1)  # every pixel counts once as target, once as pred


def iou_per_class(conf: Tensor) -> Tensor:
    """(K,) float64 IoU of each class; NaN for a class absent from both target and prediction."""
    return torch.from_numpy(_class_ious(iou_counts(conf)))


def miou(conf: Tensor) -> float:
    """Mean IoU over the classes present (see the module docstring); NaN for an empty confusion."""
    return float(miou_of(iou_counts(conf)))


def pixel_accuracy(conf: Tensor) -> float:
    """Fraction of counted pixels predicted correctly; NaN for an empty confusion."""
    return float(pixel_accuracy_of(iou_counts(conf)))


class ConfusionMeter:
    """Per-image confusions over several named (S, S) bool masks at once; ``"all"`` (the whole image) is always
    one."""

    def __init__(self, num_classes: int, masks: dict[str, Tensor] | None = None) -> None:
        masks = dict(masks or {})
        if "all" in masks:
            raise UserError("mask name 'all' is reserved for the whole image; choose another name")
        self.num_classes = num_classes
        self.masks: dict[str, Tensor | None] = {"all": None, **masks}
        self._batches: dict[str, list[Tensor]] = {name: [] for name in self.masks}

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of (B, S, S) predictions and targets to every mask's confusions."""
        for name, mask in self.masks.items():
            m = None if mask is None else mask.to(target.device)
            self._batches[name].append(image_confusions(pred, target, self.num_classes, m).cpu())

    def images(self, name: str = "all") -> Tensor:
        """(N, K, K) confusion of each image seen so far, in order, over mask ``name``."""
        if name not in self._batches:
            raise UserError(f"unknown mask {name!r}; known: {', '.join(self._batches)}")
        k = self.num_classes
        return torch.cat(self._batches[name]) if self._batches[name] else torch.zeros(0, k, k, dtype=torch.int64)

    def counts(self, name: str = "all") -> np.ndarray:
        """(N, 2K) IoU counts of each image over mask ``name`` (rows for ``poschan.stats``)."""
        return iou_counts(self.images(name))

    @property
    def confusions(self) -> dict[str, Tensor]:
        """Each mask's (K, K) confusion summed over the images."""
        return {name: self.images(name).sum(0) for name in self.masks}

    def miou(self, name: str = "all") -> float:
        return miou(self.images(name).sum(0))

    def pixel_accuracy(self, name: str = "all") -> float:
        return pixel_accuracy(self.images(name).sum(0))


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
