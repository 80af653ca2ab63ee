"""The region-specific attack of any segmenter: mask the channels ranked for one image region; does the
segmentation break mostly inside it? mIoU inside and outside the region, before and after, against two controls
(as many random channels; the channels of the opposite region) and, beside it, a pixel-space masked PGD attack
confined to the same region (``control.pgd.masked_pgd``). A region's mIoU averages over the classes present in its
target (``metrics.segmentation.miou_present_of``): a stray predicted pixel of a class absent from the region does
not move it. ``compare_regions``: the study of `poschan attack`, over the networks of a seg-train run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from poschan import stats
from poschan.control.ablation import SegEval, channel_counts, evaluation, random_channels, ranked_orders
from poschan.control.pgd import masked_pgd
from poschan.data.regions import opposite, region_mask
from poschan.errors import UserError
from poschan.locate.ranking import ChannelRanking
from poschan.locate.segmenter_rankings import RegionRankings
from poschan.metrics.segmentation import (
    ITEMS,
    NETWORKS,
    ConfusionMeter,
    drop,
    fw_iou_of,
    labels_of,
    miou_present_of,
    one_model,
    pixel_accuracy_of,
    ranked_minus_random,
    score,
)
from poschan.models.segmentation import logits_of
from poschan.models.segmenters import LoadedSegmenter
from poschan.runtime import eval_mode

Counts = dict[str, np.ndarray]  # "in" / "out": (n_images, 3K) IoU counts (metrics.segmentation.iou_counts)
METRICS: dict[str, stats.Metric] = {"miou": miou_present_of, "pixel_accuracy": pixel_accuracy_of, "fw_iou": fw_iou_of}
SELECTIVITY = stats.halves_difference_of(miou_present_of)  # of beside(in, out) rows: mIoU inside − mIoU outside
UNITS = {"random": "random draws", "pgd": "PGD seeds"}  # else: ranking seeds


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


# -- the study of `poschan attack`: every network, every region, with intervals -----------------------------------------

@dataclass
class RegionComparison:
    """``compare_regions``' answer. ``rows``: per region, N and method (an arm), each metric (``METRICS``) inside
    and outside the region, clean and after (``miou_in_clean``, ``miou_in`` ...), its drops (``drop_in``,
    ``pixel_accuracy_drop_out`` ...) and selectivity (drop inside − drop outside, with its p-value), the mIoU
    ``drop_ratio`` (inside / outside) and the masked channels; ``comparisons``: each ranked method against the
    random control (mIoU drop inside, selectivity) and its opposite control (selectivity). Every number a
    ``poschan.stats`` statistic over the units (the networks; with one network its ranking seeds, random draws or
    PGD seeds) and the test images. ``examples``: per region, the first network's predictions of its first
    images, clean and after the first set of each ranked method and PGD."""

    layer: str
    channels: int
    networks: int
    rows: list[dict]
    comparisons: list[dict]
    examples: dict[str, dict[str, Tensor]] = field(default_factory=dict, compare=False, repr=False)


def compare_regions(networks: Sequence[LoadedSegmenter], rankings: Sequence[RegionRankings], regions: Sequence[str],
                    n: Sequence[int | str] | int | str = "25%", *, grid: int = 3, methods: Sequence[str] | None = None,
                    random_draws: int = 5, pgd_eps: float | None = None, pgd_steps: int = 10,
                    pgd_size: int | None = None, pgd_seeds: Sequence[int] = (0,), examples: int = 0,
                    batch_size: int = 64, device: torch.device | str | None = None) -> RegionComparison:
    """``region_attack`` of every network (``rankings[i]``: network i's, ``locate.segmenter_rankings.
    region_rankings``; its random draws keyed by i) on every region of ``regions`` on its test images, PGD in raw
    intensity units of the images' normalisation; the arms' statistics over the networks (each one's seeds or
    draws pooled) and the test images, and the comparisons of each ranked method with its controls."""
    if not networks or len(networks) != len(rankings):
        raise UserError(f"give one ranking set per network, got {len(rankings)} for {len(networks)} networks")
    first = networks[0]
    counts = channel_counts(n, first.channels)
    evs = [SegEval(net.module, net.layer, net.model_test, batch_size=batch_size, device=device) for net in networks]
    rows, comparisons, shown = [], [], {}
    for region in regions:
        results = [region_attack(net.module, net.layer, ranked.for_region(region), ev, region, counts, grid=grid,
                                 methods=methods, random_draws=random_draws, control_seed=i, pgd_eps=pgd_eps,
                                 pgd_steps=pgd_steps, pgd_size=pgd_size, pgd_seeds=pgd_seeds,
                                 mean=net.model_test.mean, std=net.model_test.std, examples=examples)
                   for i, (net, ranked, ev) in enumerate(zip(networks, rankings, evs))]
        arms = [list(same) for same in zip(*(r.arms for r in results))]  # per arm: that arm of every network
        clean: dict[bool, dict] = {}  # the clean estimates of the test images, and of PGD's
        for same in arms:
            pgd = same[0].method == "pgd"
            if pgd not in clean:
                clean[pgd] = _clean(same)
            rows.append(_row(same, clean[pgd]))
        comparisons += _comparisons(arms)
        if examples:
            shown[region] = {"clean": results[0].clean_examples}
            for arm in results[0].arms:
                if arm.method in ("flip", "shift", "pgd") and arm.method not in shown[region]:
                    shown[region][arm.method] = arm.examples
    return RegionComparison(first.layer, first.channels, len(networks), rows, comparisons, shown)


@dataclass
class _Units:
    """One arm (region, method, N) over the units of its statistics: with one network its ranking seeds, random
    draws or PGD seeds; with several, the networks (each one's seeds or draws pooled: their mean counts)."""

    clean: list[Counts]  # per unit: the clean per-image counts inside / outside
    after: list[Counts]  # per unit: after the edit
    unit: str
    networks: int

    @classmethod
    def of(cls, arms: list[AttackArm]) -> _Units:
        """``arms``: the same arm of every network."""
        if len(arms) == 1:
            (arm,) = arms
            return cls([arm.clean_counts] * len(arm.after_counts), arm.after_counts,
                       UNITS.get(arm.method, "ranking seeds"), 1)
        after = [{side: np.mean([a[side] for a in arm.after_counts], axis=0) for side in ("in", "out")}
                 for arm in arms]
        return cls([arm.clean_counts for arm in arms], after, NETWORKS, len(arms))

    def sides(self) -> list[np.ndarray]:
        """Per unit: the per-image counts inside the region beside those outside, after the edit."""
        return [stats.beside(a["in"], a["out"]) for a in self.after]

    def note(self, stat: dict) -> dict:
        return one_model(stat, self.networks)


def metric_prefix(metric: str) -> str:
    """The prefix of a metric's drop and selectivity keys: none for mIoU (``drop_in``, ``selectivity``)."""
    return "" if metric == "miou" else f"{metric}_"


def _row(arms: list[AttackArm], clean: dict) -> dict:
    """The statistics of one arm over its units; ``clean``: the clean scores of its images (``_clean``)."""
    arm, u = arms[0], _Units.of(arms)
    after = {side: [a[side] for a in u.after] for side in ("in", "out")}
    # clean beside after, per unit: halves_difference_of(metric) is the metric's drop
    pairs = {side: [stats.beside(c[side], a[side]) for c, a in zip(u.clean, u.after)] for side in ("in", "out")}
    row = {"region": arm.region, "n": arm.n, "method": arm.method, **clean}
    for name, metric in METRICS.items():
        for side in ("in", "out"):
            row[f"{name}_{side}"] = u.note(score(after[side], u.unit, metric))
            row[f"{metric_prefix(name)}drop_{side}"] = u.note(drop([c[side] for c in u.clean], after[side], u.unit, metric))
        row[f"{metric_prefix(name)}selectivity"] = u.note(stats.paired_difference(
            pairs["in"], pairs["out"], stats.halves_difference_of(metric), bounds=(-2.0, 2.0), unit=u.unit,
            item=ITEMS))
    row["drop_ratio"] = u.note(stats.ratio(pairs["in"], pairs["out"], SELECTIVITY, unit=u.unit, item=ITEMS))
    return row if arm.method == "pgd" else {**row, "channels": arm.channels if len(arms) == 1 else
                                            [a.channels for a in arms]}


def _clean(arms: list[AttackArm]) -> dict:
    """Each metric inside and outside the region on the arm's images, unedited (``miou_in_clean`` ...), over the
    networks."""
    unit = NETWORKS if len(arms) > 1 else "training seeds"
    return {f"{name}_{side}_clean": score([arm.clean_counts[side] for arm in arms], unit, metric)
            for name, metric in METRICS.items() for side in ("in", "out")}


def _comparisons(arms: list[list[AttackArm]]) -> list[dict]:
    """Each ranked method against the random control (mIoU drop inside, selectivity) and against its opposite
    control (selectivity), at the same region and N; ``arms``: per arm, that arm of every network."""
    out = []
    units = {(a[0].method, a[0].n): _Units.of(a) for a in arms}
    for same in arms:
        arm = same[0]
        if arm.method in ("random", "pgd") or "-" in arm.method:
            continue
        where = f"region {arm.region}, N = {arm.n}"
        label = f"{arm.method} channels of the region"
        mine = units[arm.method, arm.n]
        random, mirror = units.get(("random", arm.n)), units.get((f"{arm.method}-opposite", arm.n))
        versus = dict(ranked_unit=mine.unit, networks=mine.networks)
        if random is not None:
            out.append(stats.comparison(
                ranked_minus_random([a["in"] for a in mine.after], [a["in"] for a in random.after], miou_present_of,
                                    bounds=(-1.0, 1.0), random_unit=random.unit, **versus),
                f"{arm.region}_n{arm.n}_{arm.method}_vs_random_drop_in", f"{label}: mIoU drop inside",
                f"{arm.n} random channels: mIoU drop inside",
                f"Do the {arm.method} channels of {where} lower the mIoU inside it more than as many random ones?"))
            out.append(stats.comparison(
                ranked_minus_random(mine.sides(), random.sides(), SELECTIVITY, bounds=(-2.0, 2.0),
                                    random_unit=random.unit, **versus),
                f"{arm.region}_n{arm.n}_{arm.method}_vs_random_selectivity", f"{label}: drop inside − outside",
                f"{arm.n} random channels: drop inside − outside",
                f"Is masking the {arm.method} channels of {where} more selective for it than as many random ones?"))
        if mirror is not None:
            out.append(stats.comparison(
                ranked_minus_random(mine.sides(), mirror.sides(), SELECTIVITY, bounds=(-2.0, 2.0),
                                    random_unit=mirror.unit, **versus),
                f"{arm.region}_n{arm.n}_{arm.method}_vs_opposite_selectivity", f"{label}: drop inside − outside",
                f"{arm.method} channels of the opposite region: drop inside − outside",
                f"Is masking the {arm.method} channels of {where} more selective for it than masking the "
                "opposite region's?"))
    return out
