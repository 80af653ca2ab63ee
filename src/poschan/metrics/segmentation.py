"""Segmentation metrics over pixel masks: confusion matrices (whole and per image), mean IoU, pixel accuracy,
frequency-weighted IoU.

Conventions: a confusion matrix is (K, K) int64 with rows = target class, columns = predicted class. IoU =
tp / (tp + fp + fn). The mean IoU (``miou``, ``miou_of``) averages it over the classes PRESENT, i.e. seen in the
target or in the prediction of the counted pixels; a class absent from both has no defined IoU and is left out (as
torchmetrics leaves out its NaN classes and the VOC protocol averages over present classes). A class predicted but
absent from the target counts with IoU 0 there. ``miou_present_of`` averages over the classes of the TARGET alone,
so that a stray predicted pixel of an absent class cannot move it (the mIoU of an image region, which holds few
classes); ``fw_iou_of`` weights those classes' IoU by their share of the target pixels. An empty confusion (no pixel
counted) gives NaN. Target pixels labelled IGNORE_INDEX (255, e.g. VOC's void border, Cityscapes' unlabelled
classes) are never counted.

For intervals over test images (``poschan.stats``), each image is one row of *IoU counts* (``iou_counts``): per
class its true positives, then its target pixels, then its predicted pixels (3K numbers, all that these metrics
read from a confusion). ``miou_of``, ``miou_present_of``, ``fw_iou_of`` and ``pixel_accuracy_of`` score the mean
of such rows, vectorised over leading axes; the mean over images scores as the summed confusion does. ``score``,
``drop`` and ``ranked_minus_random`` give their statistics over units (networks, ranking seeds, random draws) and
the test images (``poschan.stats``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from poschan import stats
from poschan.data.segsets import IGNORE_INDEX
from poschan.errors import UserError

ITEMS = "test images"  # the items of every segmentation statistic
NETWORKS = "trained networks"  # the units of a study of several networks


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
    """(..., K, K) confusions -> (..., 3K) float64: each class's true positives, then its target pixels, then its
    predicted pixels (the rows that ``miou_of``, ``miou_present_of``, ``fw_iou_of`` and ``pixel_accuracy_of``
    score)."""
    c = confusions.detach().cpu().double().numpy() if isinstance(confusions, Tensor) else np.asarray(
        confusions, dtype=np.float64)
    return np.concatenate([np.diagonal(c, axis1=-2, axis2=-1), c.sum(-1), c.sum(-2)], axis=-1)


def _split(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(..., 3K) IoU counts -> true positives, target pixels, predicted pixels, each (..., K)."""
    counts = np.asarray(counts, dtype=np.float64)
    k = counts.shape[-1] // 3
    return counts[..., :k], counts[..., k:2 * k], counts[..., 2 * k:]


def _class_ious(counts: np.ndarray) -> np.ndarray:
    """(..., 3K) IoU counts -> (..., K) IoU of each class, NaN for a class absent from target and prediction."""
    tp, target, pred = _split(counts)
    union = target + pred - tp  # tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)


def _mean_over(ious: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of the IoUs over the last axis, NaN where every weight is 0 (IoUs of weight 0 ignored)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weights > 0, ious * weights, 0.0).sum(-1) / weights.sum(-1)


def miou_of(counts: np.ndarray) -> np.ndarray:
    """Mean IoU of (..., 3K) IoU counts (or their means over images) over the classes present in the target or the
    prediction, vectorised over the leading axes; NaN where nothing is counted."""
    ious = _class_ious(counts)
    return _mean_over(ious, (~np.isnan(ious)).astype(np.float64))


def miou_present_of(counts: np.ndarray) -> np.ndarray:
    """Mean IoU of (..., 3K) IoU counts over the classes present in the target (a class only predicted is left
    out), vectorised over the leading axes; NaN where no target pixel is counted."""
    return _mean_over(_class_ious(counts), (_split(counts)[1] > 0).astype(np.float64))


def fw_iou_of(counts: np.ndarray) -> np.ndarray:
    """Frequency-weighted IoU of (..., 3K) IoU counts: sum over classes of (target pixels / all target pixels) ·
    IoU, vectorised over the leading axes; NaN where nothing is counted."""
    return _mean_over(_class_ious(counts), _split(counts)[1])


def pixel_accuracy_of(counts: np.ndarray) -> np.ndarray:
    """Fraction of counted pixels predicted correctly, from (..., 3K) IoU counts; NaN where nothing is counted."""
    tp, target, _ = _split(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp.sum(-1) / target.sum(-1)


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
        self.add(self.batch(pred, target))

    def batch(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Each mask's (B, K, K) per-image confusions of a batch, to :meth:`add` (here, or on another rank's meter)."""
        return {name: image_confusions(pred, target, self.num_classes,
                                       None if mask is None else mask.to(target.device)).cpu()
                for name, mask in self.masks.items()}

    def add(self, confusions: dict[str, Tensor]) -> None:
        """Append a batch's per-image confusions (from :meth:`batch`) after the images seen so far."""
        for name in self.masks:
            self._batches[name].append(confusions[name])

    def images(self, name: str = "all") -> Tensor:
        """(N, K, K) confusion of each image seen so far, in order, over mask ``name``."""
        if name not in self._batches:
            raise UserError(f"unknown mask {name!r}; known: {', '.join(self._batches)}")
        k = self.num_classes
        return torch.cat(self._batches[name]) if self._batches[name] else torch.zeros(0, k, k, dtype=torch.int64)

    def counts(self, name: str = "all") -> np.ndarray:
        """(N, 3K) IoU counts of each image over mask ``name`` (rows for ``poschan.stats``)."""
        return iou_counts(self.images(name))

    @property
    def confusions(self) -> dict[str, Tensor]:
        """Each mask's (K, K) confusion summed over the images."""
        return {name: self.images(name).sum(0) for name in self.masks}

    def miou(self, name: str = "all") -> float:
        return miou(self.images(name).sum(0))

    def pixel_accuracy(self, name: str = "all") -> float:
        return pixel_accuracy(self.images(name).sum(0))


def labels_of(logits: Tensor) -> Tensor:
    """(B, H, W) int64: the class of the largest logit of (B, K, H, W) ``logits`` at each pixel (the first on ties,
    as ``argmax``). ``max(1).indices``, not ``argmax(1)``: on CPU torch's argmax over the strided class dimension is
    several times slower, and it dominated the ablation sweeps."""
    return logits.max(dim=1).indices


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int, device: torch.device | str) -> Tensor:
    """(N, S, S) int64 argmax predictions of ``model`` (logits (B, K, S, S)) on ``images`` (N, C, S, S), run on
    ``device`` in batches of ``batch_size``; returned on the device of ``images``. Setting eval mode is the
    caller's job."""
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    out = [labels_of(model(images[i:i + batch_size].to(device))).to(images.device)
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, *images.shape[2:], dtype=torch.int64, device=images.device)


# -- statistics over units and test images -------------------------------------------------------------------------

def one_model(stat: dict, networks: int = 1, word: str = "model") -> dict:
    """``stat`` with its method saying that it is of one trained ``word`` (model, network), when ``networks`` is 1."""
    if "method" in stat and networks == 1:
        stat["method"] += f"; one trained {word}: the variation between training seeds is not covered"
    return stat


def score(groups: list[np.ndarray], unit: str, metric: stats.Metric = miou_of) -> dict:
    """mIoU (or ``metric``, in [0, 1]) of each unit's per-image IoU counts (n_images, 3K), with its 95% interval over
    the ``unit`` and the test images."""
    return stats.estimate(groups, metric, bounds=(0.0, 1.0), unit=unit, item=ITEMS)


def drop(clean: list[np.ndarray], after: list[np.ndarray], unit: str, metric: stats.Metric = miou_of) -> dict:
    """Clean mIoU (or ``metric``, in [0, 1]) − that after an edit, per unit (each with its clean counts), on the
    same test images: a paired difference in [-1, 1]."""
    return stats.paired_difference(clean, after, metric, bounds=(-1.0, 1.0), unit=unit, item=ITEMS)


def ranked_minus_random(ranked: list[np.ndarray], random: list[np.ndarray], metric: stats.Metric, *,
                        bounds: tuple[float, float], ranked_unit: str = "ranking seeds",
                        random_unit: str = "random draws", networks: int = 1) -> dict:
    """Drop of ``metric`` (clean − after) with the ranked channels masked minus that with the control's, with its
    interval and p-value: computed as ``metric``(control) − ``metric``(ranked) on the same images (the clean score
    cancels), the units paired by ``stats.paired_units``."""
    a, b, unit, note = stats.paired_units(ranked, random, ranked_unit, random_unit)
    out = stats.paired_difference(b, a, metric, bounds=bounds, unit=unit, item=ITEMS)
    out["method"] += note + "; ranked drop − control drop = control-masked − ranked-masked score"
    return one_model(out, networks)
