"""Channel ablation of any segmenter: mIoU with a set of channels of a named layer masked, against as many random
channels (``ablation_curve``; the study of `poschan ablate` built on it is ``control.ranking_comparison``).

A segmenter is any ``nn.Module`` whose forward gives per-pixel logits (B, K, H, W), or a dict with key "out" (as
torchvision's segmentation models). Channels are masked by the one rule of poschan (``poschan.taps.masked``):
through the ``mask_channels`` hook on the layer, or, for poschan's own ``SegNet`` masked at its feature layer,
on its backbone features computed once and decoded per mask (the same numbers, bit for bit, in less time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from poschan.data.segdata import segmentation_pairs
from poschan.data.segsets import IGNORE_INDEX
from poschan.distributed import gather_in_order, shard
from poschan.errors import UserError
from poschan.locate.ranking import ChannelRanking
from poschan.metrics.segmentation import (
    ConfusionMeter,
    labels_of,
)
from poschan.models.segmentation import SegNet, logits_of
from poschan.runtime import eval_mode, model_device, seeded_generator, to_device
from poschan.taps import capture, check_mask_mode, get_layer, mask_channels, masked

Channels = Sequence[int] | Tensor | None


def channel_counts(values: Sequence[int | str] | int | str, channels: int) -> list[int]:
    """``["5%", "10", 3, ...]`` -> channel counts (a percentage of ``channels``, rounded, at least 1), each count
    once: values that resolve to the same N (1% and 2% of 32 channels are both 1) are one condition."""
    counts = []
    for v in [values] if isinstance(values, (int, str)) else values:
        text = str(v).strip()
        try:
            n = max(1, round(float(text[:-1]) / 100 * channels)) if text.endswith("%") else int(text)
        except ValueError:
            raise UserError(f"--n takes channel counts or percentages like 5%,10%,25%, got {text!r}") from None
        if not 1 <= n <= channels:
            raise UserError(f"N = {text} is outside 1..{channels} (the channel count of the feature layer)")
        counts.append(n)
    return list(dict.fromkeys(counts))


def random_channels(channels: int, n: int, draws: int, seed: int = 0) -> list[Tensor]:
    """The random control: ``draws`` sets of ``n`` of ``channels`` channels, draw r from a generator keyed by
    (``seed``, n, r): reproducible, and different for each network given its own ``seed`` (so that the draws'
    variation enters the between-network spread, hence the interval)."""
    return [torch.randperm(channels, generator=seeded_generator(seed, n, r))[:n] for r in range(draws)]


class SegEval:
    """Fixed images and masks evaluated by one segmenter with channels of one layer masked.

    ``data``: a pair (images (N, C, H, W) as the model takes them, masks (N, H, W) class ids, IGNORE_INDEX not
    scored), an EvalSet, a dataset of (image, mask) pairs or a DataLoader. Build one to reuse it across calls of
    ``ablation_curve`` / ``region_attack`` (pass it as their ``data``): a SegNet masked at its ``feature_layer``
    then computes its features once. ``fast=False`` forces the hook path.
    """

    def __init__(self, model: nn.Module, layer: str, data: object, *, batch_size: int = 64,
                 device: torch.device | str | None = None, fast: bool = True):
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        get_layer(model, layer)
        self.model, self.layer, self.batch_size = model, layer, batch_size
        self.device = torch.device(device) if device is not None else model_device(model)
        self.images, self.masks = segmentation_pairs(data)
        if not len(self.images):
            raise UserError("no images given")
        self.features: Tensor | None = None
        with torch.no_grad(), eval_mode(model):
            if fast and isinstance(model, SegNet) and layer == model.feature_layer:
                self.features = torch.cat([model.features(self.images[i:i + batch_size].to(self.device)).cpu()
                                           for i in range(0, len(self.images), batch_size)])
                self.channels = self.features.shape[1]
                self.num_classes = model.num_classes
            else:
                with capture(model, [layer]) as store:
                    logits = logits_of(model(self.images[:1].to(self.device)))
                fmap = store[layer]
                if not isinstance(fmap, Tensor) or fmap.dim() != 4:
                    raise UserError(f"layer {layer!r} does not output a (B, C, H, W) feature map; pick a "
                                    "convolutional layer")
                self.channels, self.num_classes = fmap.shape[1], logits.shape[1]
        labels = self.masks[self.masks != IGNORE_INDEX]
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise UserError(f"the masks hold class ids up to {int(labels.max())}, the segmenter predicts "
                            f"{self.num_classes} classes")

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def predict(self, channels: Channels = None, *, mode: str = "zero", means: Tensor | None = None,
                index: Tensor | slice | None = None) -> Tensor:
        """(n, H, W) argmax labels (on the CPU) of the images ``index`` (all when None) with ``channels`` masked."""
        return torch.cat(gather_in_order([(k, pred) for k, pred, _ in self._batches(channels, mode, means, index)]))

    @torch.no_grad()
    def meter(self, channels: Channels = None, *, mode: str = "zero", means: Tensor | None = None,
              regions: Mapping[str, Tensor] | None = None, index: Tensor | slice | None = None) -> ConfusionMeter:
        """Confusions ("all", and one per pixel region of ``regions``: (H, W) bool) of the images ``index``
        (batches of ``batch_size`` from its first image) with ``channels`` (None or empty: none) masked. Under
        torchrun each rank takes every world-th batch and the per-image confusions are gathered in image order."""
        meter = ConfusionMeter(self.num_classes, dict(regions or {}))
        batches = [(k, meter.batch(pred, target)) for k, pred, target in self._batches(channels, mode, means, index)]
        for confusions in gather_in_order(batches):
            meter.add(confusions)
        return meter

    def scores(self, channels: Channels = None, **kwargs) -> dict[str, float]:
        """``{"miou", "pixel_accuracy"}`` over the images (see ``meter``)."""
        m = self.meter(channels, **kwargs)
        return {"miou": m.miou(), "pixel_accuracy": m.pixel_accuracy()}

    def _batches(self, channels: Channels, mode: str, means: Tensor | None, index: Tensor | slice | None):
        check_mask_mode(mode, means)
        idx = None if channels is None else torch.as_tensor(channels, dtype=torch.long).flatten()
        if idx is not None and not len(idx):
            idx = None
        index = slice(None) if index is None else index
        masks = self.masks[index]
        size = masks.shape[-2:]
        starts = range(0, len(masks), self.batch_size)
        with eval_mode(self.model):
            if self.features is not None:
                feats = self.features[index]
                for k, i in shard(starts):
                    f = to_device(feats[i:i + self.batch_size], self.device)
                    if idx is not None:
                        f = masked(f, idx, mode=mode, means=means)
                    yield k, labels_of(self.model.decode(f, size)).cpu(), masks[i:i + self.batch_size]
                return
            images = self.images[index]
            hook = (mask_channels(self.model, self.layer, idx, mode=mode, means=means) if idx is not None
                    else nullcontext())
            with hook:
                for k, i in shard(starts):
                    logits = logits_of(self.model(to_device(images[i:i + self.batch_size], self.device)))
                    yield k, labels_of(logits).cpu(), masks[i:i + self.batch_size]


def evaluation(model: nn.Module, layer: str, data: object, *, batch_size: int = 64,
               device: torch.device | str | None = None) -> SegEval:
    """``data`` itself when it is a SegEval of ``model`` and ``layer``, else a new SegEval."""
    if isinstance(data, SegEval):
        if data.model is not model or data.layer != layer:
            raise UserError(f"the prepared evaluation is of layer {data.layer!r} of another model; build a SegEval "
                            "of this model and layer")
        return data
    return SegEval(model, layer, data, batch_size=batch_size, device=device)


@torch.no_grad()
def channel_means(model: nn.Module, layer: str, images: Tensor, *, batch_size: int = 64,
                  device: torch.device | str | None = None) -> Tensor:
    """(C,) mean of ``layer``'s output over ``images`` (as the model takes them) and positions: the fill of mask
    mode ``mean``."""
    device = torch.device(device) if device is not None else model_device(model)
    maps = []
    with eval_mode(model), capture(model, [layer]) as store:
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size].to(device))
            maps.append(store[layer].cpu())
    return torch.cat(maps).mean(dim=(0, 2, 3))


def ranked_orders(ranking: ChannelRanking | Tensor | Sequence[int], key: str = "overall") -> dict[int, Tensor]:
    """Ranking seed -> channel order (best first): each seed of a ChannelRanking that keeps per-seed scores (in its
    order), else its pooled order as seed 0; a plain order (tensor or list of channels) as seed 0."""
    if isinstance(ranking, ChannelRanking):
        if ranking.per_seed:
            return {seed: ranking.order(key, seed=seed) for seed in ranking.per_seed}
        return {0: ranking.order(key)}
    order = torch.as_tensor(ranking)
    if order.dim() != 1 or order.is_floating_point():
        raise UserError("a ranking is a ChannelRanking or a channel order (a 1-D list of channel indices)")
    return {0: order.long()}


@dataclass
class AblationPoint:
    """Masking ``n`` channels: per ranking seed (``ranked_*``, of the ranking ``ranking``) and per random draw
    (``random_*``; the same draws for every ranking); ``*_counts``: the per-image IoU counts (n_images, 3K) of each
    seed or draw (``metrics.segmentation.iou_counts``), for intervals."""

    ranking: str
    n: int
    ranked_channels: list[list[int]]
    ranked_miou: list[float]
    ranked_pixel_accuracy: list[float]
    random_channels: list[list[int]]
    random_miou: list[float]
    random_pixel_accuracy: list[float]
    ranked_drop: list[float] = field(default_factory=list)  # clean mIoU − ranked mIoU
    random_drop: list[float] = field(default_factory=list)
    # the scores above are functions of these arrays (compared through them, not element-wise)
    ranked_counts: list[np.ndarray] = field(default_factory=list, compare=False, repr=False)
    random_counts: list[np.ndarray] = field(default_factory=list, compare=False, repr=False)


@dataclass
class AblationCurve:
    """mIoU of a segmenter as more of its top-ranked channels of ``layer`` are masked, and as many random ones."""

    layer: str
    channels: int
    mode: str
    key: str
    seeds: list[int]  # the ranking seeds of ranked_* (of the first ranking)
    miou_clean: float
    pixel_accuracy_clean: float
    points: list[AblationPoint]  # for each N, each ranking's
    clean_counts: np.ndarray | None = field(default=None, compare=False, repr=False)  # (n_images, 3K), unmasked

    def point(self, ranking: str, n: int) -> AblationPoint:
        return next(p for p in self.points if p.ranking == ranking and p.n == n)


RankingLike = ChannelRanking | Tensor | Sequence[int]


def ablation_curve(model: nn.Module, layer: str, ranking: RankingLike | Mapping[str, RankingLike], data: object,
                   n: Sequence[int | str] | int | str = ("5%", "10%", "25%", "50%"), *, random_draws: int = 5,
                   control_seed: int = 0, mode: str = "zero", means: Tensor | None = None, key: str = "overall",
                   batch_size: int = 64, device: torch.device | str | None = None) -> AblationCurve:
    """mIoU of ``model`` on ``data`` with the top-N channels of ``layer`` masked (``mode`` zero, or mean: each
    channel replaced by ``means``, see ``channel_means``), for every N of ``n`` (counts or percentages of the
    layer's channels), against ``random_draws`` sets of N random channels (``random_channels`` keyed by
    ``control_seed``: give each network of a study its own).

    ``ranking``: a ChannelRanking of this layer (score ``key``; one top-N per ranking seed when it keeps per-seed
    scores) or a channel order; or several by name (one point per N and name, the random draws shared). ``data``:
    (images, masks) as the model takes them, a dataset / DataLoader of (image, mask) pairs, or a prepared
    ``SegEval``. Scores are over all images (their confusions summed); drops are clean − masked, per seed or draw;
    the per-image IoU counts behind every score are kept for intervals.
    """
    if random_draws < 0:
        raise UserError(f"random_draws must be >= 0, got {random_draws}")
    check_mask_mode(mode, means)
    ev = evaluation(model, layer, data, batch_size=batch_size, device=device)
    named = dict(ranking) if isinstance(ranking, Mapping) else {
        ranking.method if isinstance(ranking, ChannelRanking) else "ranking": ranking}
    orders = {name: _orders(r, key, ev, layer) for name, r in named.items()}
    clean = ev.meter()
    clean_miou = clean.miou()
    points = []
    for count in channel_counts(n, ev.channels):
        random_sets = random_channels(ev.channels, count, random_draws, control_seed)
        random = [ev.meter(c, mode=mode, means=means) for c in random_sets]
        for name, by_seed in orders.items():
            ranked_sets = [order[:count] for order in by_seed.values()]
            ranked = [ev.meter(c, mode=mode, means=means) for c in ranked_sets]
            points.append(AblationPoint(
                name, count, [c.tolist() for c in ranked_sets], [m.miou() for m in ranked],
                [m.pixel_accuracy() for m in ranked], [c.tolist() for c in random_sets], [m.miou() for m in random],
                [m.pixel_accuracy() for m in random], [clean_miou - m.miou() for m in ranked],
                [clean_miou - m.miou() for m in random], [m.counts() for m in ranked], [m.counts() for m in random]))
    return AblationCurve(layer, ev.channels, mode, key, list(next(iter(orders.values()))), clean_miou,
                         clean.pixel_accuracy(), points, clean.counts())


def _orders(ranking: RankingLike, key: str, ev: SegEval, layer: str) -> dict[int, Tensor]:
    """``ranked_orders`` of a ranking of ``ev``'s layer, checked against its channel count."""
    if isinstance(ranking, ChannelRanking) and ranking.channels != ev.channels:
        raise UserError(f"the ranking has {ranking.channels} channels, layer {layer!r} has {ev.channels}")
    orders = ranked_orders(ranking, key)
    if any(len(o) != ev.channels for o in orders.values()):
        raise UserError(f"a channel order must list all {ev.channels} channels of layer {layer!r}")
    return orders
