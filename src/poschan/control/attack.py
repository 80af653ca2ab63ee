"""The region-specific attack of any segmenter: mask the channels ranked for one image region; does the
segmentation break mostly inside it? mIoU inside and outside the region, before and after, against two controls
(as many random channels; the channels of the opposite region) and, beside it, a pixel-space masked PGD attack
confined to the same region (``control.pgd.masked_pgd``). A region's mIoU averages over the classes present in its
target (``metrics.segmentation.miou_present_of``): a stray predicted pixel of a class absent from the region does
not move it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from poschan.control.ablation import SegEval, channel_counts, evaluation, random_channels, ranked_orders
from poschan.control.pgd import masked_pgd
from poschan.data.regions import opposite, region_mask
from poschan.errors import UserError
from poschan.locate.ranking import ChannelRanking
from poschan.metrics.segmentation import ConfusionMeter, labels_of, miou_present_of
from poschan.models.segmentation import logits_of
from poschan.runtime import eval_mode

Counts = dict[str, np.ndarray]  # "in" / "out": (n_images, 3K) IoU counts (metrics.segmentation.iou_counts)


@dataclass
class AttackArm:
    """One channel-set family (or PGD) on one region: mIoU over the classes present in the target (inside,
    outside) before (``clean``) and after, one ``after`` per channel set (ranking seed or random draw) or PGD seed;
    ``*_counts``: the per-image IoU counts behind them, for intervals (of any metric)."""

    region: str
    method: str  # a ranking's name ("flip"), its control ("flip-opposite"), "random" or "pgd"
    n: int | None  # channels masked (None: pgd)
    clean: tuple[float, float]
    after: list[tuple[float, float]]
    channels: list[list[int]]  # the masked sets (empty for pgd)
    examples: Tensor | None = None  # argmax predictions of the first images after the edit (first set or seed)
    clean_counts: Counts = field(default_factory=dict, compare=False, repr=False)
    after_counts: list[Counts] = field(default_factory=list, compare=False, repr=False)

    @property
    def drop_in(self) -> list[float]:
        return [self.clean[0] - a[0] for a in self.after]

    @property
    def drop_out(self) -> list[float]:
        return [self.clean[1] - a[1] for a in self.after]


@dataclass
class RegionAttack:
    layer: str
    channels: int  # of the layer
    region: str
    arms: list[AttackArm]  # for each N: the methods in order; then pgd
    clean_examples: Tensor | None = None

    def arm(self, method: str, n: int | None = None) -> AttackArm | None:
        return next((a for a in self.arms if a.method == method and a.n == n), None)


class _Logits(nn.Module):
    """A segmenter whose forward gives the logits tensor (for PGD's loss)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return logits_of(self.net(x))


def _in_out(meter: ConfusionMeter) -> tuple[float, float]:
    """The mIoU over the classes present in the target inside and outside the region."""
    inside, outside = (float(miou_present_of(meter.counts(side).sum(0))) for side in ("in", "out"))
    return inside, outside


def _counts(meter: ConfusionMeter) -> Counts:
    return {"in": meter.counts("in"), "out": meter.counts("out")}


def region_attack(model: nn.Module, layer: str, ranking: ChannelRanking | Mapping[str, ChannelRanking | None],
                  data: object, region: str | Tensor = "left", n: Sequence[int | str] | int | str = "25%", *,
                  grid: int = 3, methods: Sequence[str] | None = None, random_draws: int = 5, control_seed: int = 0,
                  pgd_eps: float | None = None, pgd_steps: int = 10, pgd_size: int | None = None,
                  pgd_seeds: Sequence[int] = (0,), mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, key: str | None = None, examples: int = 0,
                  batch_size: int = 64, device: torch.device | str | None = None) -> RegionAttack:
    """mIoU (over the classes present in the target) of ``model`` on ``data`` inside and outside ``region`` before
    and after masking (zeroing) the top-N channels of ``layer`` that a ranking scores for that region, for every N
    of ``n`` (counts or percentages).

    ``ranking``: a ChannelRanking whose keys include the region (flip: left/right/top/bottom; shift: those,
    center, q1..q4, cell:I), or several by name (e.g. {"flip": ..., "shift": ...}); one channel set per ranking
    seed when it keeps per-seed scores. ``region``: a name of ``poschan.data.regions`` (cells of a
    ``grid``×``grid`` grid) on the square images, or an (H, W) bool mask. ``methods`` (default: all): each
    ranking's name, its control ``NAME-opposite`` (the opposite region's channels; none for a region that is its
    own mirror or a mask), ``random`` (``random_draws`` sets of N random channels keyed by ``control_seed``) and
    ``pgd`` (with ``pgd_eps``: an L∞ masked PGD of ``pgd_steps`` steps confined to the region, on the first
    ``pgd_size`` images, once per seed of ``pgd_seeds``; its clean mIoU is that of those images). ``mean`` / ``std``: the images'
    per-channel normalisation, so that ``pgd_eps`` is in raw intensity units and the adversarial images stay in
    [0, 1] (None: normalised units, unbounded). ``key``: the ranking key of the region (default its name; give
    one for a mask). A method whose ranking lacks the key is left out. ``examples``: keep the argmax predictions
    of the first ``examples`` images, clean and after each ranked method's first channel set and PGD's first seed.
    ``data``: (images, masks) as the model takes them, a dataset / DataLoader of pairs, or a prepared SegEval.
    """
    rankings = {ranking.method: ranking} if isinstance(ranking, ChannelRanking) else dict(ranking)
    known = [*rankings, *(f"{r}-opposite" for r in rankings), "random", "pgd"]
    if methods is None:
        methods = [m for m in known if m != "pgd" or pgd_eps is not None]
    unknown = sorted(set(methods) - set(known))
    if unknown:
        raise UserError(f"unknown attack methods {unknown}; allowed here: {', '.join(known)}")
    if "pgd" in methods and (pgd_eps is None or pgd_eps < 0 or pgd_steps < 1):
        raise UserError(f"pgd needs pgd_eps >= 0 and pgd_steps >= 1, got {pgd_eps} and {pgd_steps}")
    ev: SegEval = evaluation(model, layer, data, batch_size=batch_size, device=device)
    height, width = ev.masks.shape[-2:]
    if isinstance(region, Tensor):
        if region.dtype != torch.bool or tuple(region.shape) != (height, width):
            raise UserError(f"a region mask must be (H, W) = {(height, width)} bool, got {tuple(region.shape)} "
                            f"{region.dtype}")
        name, inside, mirror = "mask", region.cpu(), None
    else:
        if height != width:
            raise UserError(f"named regions need square images, got {height}×{width}; pass an (H, W) bool mask")
        name, inside, mirror = region, region_mask(region, width, grid), opposite(region, grid)
    if not inside.any():
        raise UserError(f"region {name!r} is empty on {height}×{width} images")
    regions = {"in": inside, "out": ~inside}
    clean_meter = ev.meter(regions=regions)
    clean, clean_counts = _in_out(clean_meter), _counts(clean_meter)
    first = slice(0, min(examples, len(ev)))
    arms = []
    for count in channel_counts(n, ev.channels):
        for method in methods:
            if method == "pgd":
                continue
            if method == "random":
                if random_draws < 1:
                    continue
                sets = random_channels(ev.channels, count, random_draws, control_seed)
            else:
                base, _, control = method.partition("-")
                target = mirror if control else (key or name)
                ranked = rankings.get(base)
                if ranked is None or target is None or target not in ranked.scores:
                    continue
                sets = [order[:count] for order in ranked_orders(ranked, target).values()]
            meters = [ev.meter(s, regions=regions) for s in sets]
            shown = ev.predict(sets[0], index=first) if examples and method in rankings else None
            arms.append(AttackArm(name, method, count, clean, [_in_out(m) for m in meters], [s.tolist() for s in sets],
                                  shown, clean_counts, [_counts(m) for m in meters]))
    if "pgd" in methods:
        arms.append(_pgd_arm(ev, name, inside, pgd_eps, pgd_steps, pgd_size, pgd_seeds, mean, std, examples))
    clean_examples = ev.predict(index=first) if examples else None
    return RegionAttack(layer, ev.channels, name, arms, clean_examples)


def _pgd_arm(ev: SegEval, name: str, inside: Tensor, eps: float, steps: int, size: int | None,
             seeds: Sequence[int], mean: Sequence[float] | None, std: Sequence[float] | None,
             examples: int) -> AttackArm:
    """Masked PGD on the first ``size`` images, once per seed: mIoU inside / outside after, against the clean
    mIoU of the same images."""
    if not seeds:
        raise UserError("pgd needs at least one seed")
    size = len(ev) if size is None else min(size, len(ev))
    if size < 1:
        raise UserError(f"pgd_size must be >= 1, got {size}")
    device, regions = ev.device, {"in": inside, "out": ~inside}
    clean_meter = ev.meter(regions=regions, index=slice(0, size))
    budget, lower, upper = torch.as_tensor(eps, dtype=torch.float32), None, None
    if std is not None:
        s = torch.tensor(std, device=device).view(-1, 1, 1)
        m = torch.tensor(mean if mean is not None else [0.0] * len(std), device=device).view(-1, 1, 1)
        budget, lower, upper = eps / s, (0 - m) / s, (1 - m) / s
    net = _Logits(ev.model)
    meters, shown = [], None
    with eval_mode(ev.model):
        for seed in seeds:
            generator = torch.Generator().manual_seed(seed)
            meter = ConfusionMeter(ev.num_classes, regions)
            for i in range(0, size, ev.batch_size):
                end = min(i + ev.batch_size, size)
                x, y = ev.images[i:end].to(device), ev.masks[i:end]
                adv = masked_pgd(net, x, y.to(device), inside.to(device), eps=budget, steps=steps, lower=lower,
                                 upper=upper, generator=generator)
                with torch.no_grad():
                    pred = labels_of(net(adv)).cpu()
                meter.update(pred, y)
                if shown is None and examples:
                    shown = pred[:examples]
            meters.append(meter)
    return AttackArm(name, "pgd", None, _in_out(clean_meter), [_in_out(m) for m in meters], [], shown,
                     _counts(clean_meter), [_counts(m) for m in meters])
