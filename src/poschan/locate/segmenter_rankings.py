"""The rankings a segmentation study compares, of a loaded segmenter's layer (``models.segmenters``) on rank-split
images of its data (never the evaluation split):

- ``flip``: the paper's score, mean |f(x) − f(hflip x)| of the layer's pooled output (``locate.segmentation``,
  pooled over the ranking seeds, each its own rank scenes), or a ranking file of this network (``read_ranking``);
- ``position-only``: the same with partners whose items are mirrored in place and then the canvas flipped:
  positions mirrored, content kept (``locate.pair_scores``, scenes only); the top-N overlaps of the flip,
  mirror-in-place and position-only lists (chance N²/C) tell position from chirality;
- ``flip-normalised``: the flip score divided by each channel's spread (standard deviation of its pooled value);
- ``shift``: mean |Cohen's d| of the channel between the cells of a grid that an item is pasted in;
- ``dimest``: the channel's share of the position factor (Esser et al.'s dimensionality estimate);
- ``probe``: causal: the rise of a linear cell probe's cross-entropy when the channel alone is knocked out;
- ``knockout``: the reference: the mIoU lost on rank images when the channel alone is zeroed
  (``control.channel_sets.knockout_costs``; the best any ranking of single channels can do there).

``region_rankings``: the flip rankings of image halves and the shift ranking of every region, for region attacks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from poschan.control.ablation import SegEval, channel_counts, channel_means
from poschan.control.channel_sets import knockout_costs
from poschan.data.canvas import canvas_side
from poschan.data.fingerprint import image_fingerprint
from poschan.data.regions import region_box
from poschan.data.scenes import ITEM_SIDE
from poschan.errors import UserError
from poschan.locate.pair_scores import pair_scores, top_overlaps
from poschan.locate.ranking import ChannelRanking
from poschan.locate.reliance import cell_canvases, pooled, pooled_spread, probe_knockout, spread_normalised
from poschan.locate.segmentation import segmenter_ranking
from poschan.models.segmenters import LoadedSegmenter

REFERENCE = "knockout"  # the ranking compare_rankings measures the others against: each channel's own knock-out cost
RANKINGS = ("flip", "flip-normalised", "position-only", "shift", "dimest", "probe", REFERENCE)
SCENE_ONLY = ("position-only", "shift", "dimest", "probe")  # rankings that move or mirror items inside scenes
PROBE_ITEMS = 18  # items in every cell of the probe's 3×3 grid, once to fit and once to test
FLIP_SIDES = {"left": "left", "right": "left", "top": "top", "bottom": "top"}  # region -> where the rank scenes lie


def read_ranking(path: str | Path, net: LoadedSegmenter) -> ChannelRanking:
    """A ranking file (locate.ranking.ChannelRanking) of this network's layer, its channel count and weights, not
    computed on the evaluation split (by name) nor on the evaluation images (by content); else a UserError."""
    ranking = ChannelRanking.load(path)
    ranking.check_for(net.layer, net.channels, weights=net.fingerprint, eval_images=image_fingerprint(net.test.images),
                      source=f"ranking {path}")
    eval_split = net.data.eval_split
    if ranking.data.get("split") == eval_split:
        raise UserError(f"ranking {path} was computed on the evaluation split {eval_split!r}; rank on another split")
    return ranking


def available_rankings(names: Sequence[str], net: LoadedSegmenter) -> list[str]:
    """Those of ``names`` (of RANKINGS) that the network's data allows: real images have no items to move."""
    unknown = sorted(set(names) - set(RANKINGS))
    if unknown or not names:
        raise UserError(f"unknown rankings {unknown}; allowed: {', '.join(RANKINGS)}")
    return [r for r in names if net.data.synthetic or r not in SCENE_ONLY]


@dataclass
class SegmenterRankings:
    """One network's rankings (name -> (C,) float64 channel scores, in the order asked) and what the controls of
    ``control.ranking_comparison.compare_rankings`` read on the same rank images: each channel's activation ``magnitude``
    and ``spread`` (the matched control), its ``means`` (the fill of mask mode "mean"; None for "zero"), and the
    top-N ``overlaps`` of the flip pair constructions (scenes only). ``flip``: the flip ranking (given or made)."""

    scores: dict[str, Tensor]
    magnitude: Tensor
    spread: Tensor
    means: Tensor | None
    overlaps: list[dict]
    flip: ChannelRanking


def segmenter_rankings(net: LoadedSegmenter, rankings: Sequence[str] = RANKINGS, *, count: int,
                       seeds: Sequence[int] = (0,), n: Sequence[int | str] = ("5%", "10%", "25%", "50%"),
                       knockout_count: int = 300, flip: ChannelRanking | None = None, mode: str = "zero",
                       batch_size: int = 64, device: torch.device | str = "cpu") -> SegmenterRankings:
    """Every ranking of ``rankings`` that the data allows (``available_rankings``) of ``net``'s layer: ``count``
    rank images per ranking seed of ``seeds``, ``knockout_count`` for the reference; ``flip``: a ranking of this
    network to use instead of ranking it here (``read_ranking``). ``n``: the top-list sizes (counts or
    percentages of the channels) of the flip constructions' overlaps; ``mode``: the mask mode of the study."""
    names = available_rankings(rankings, net)
    seg, data = net.segmenter, net.data
    kw = dict(batch_size=batch_size, device=device, in_chans=seg.in_chans, input_norm=seg.input_norm)
    rank_images = data.rank_images(count, seed=seeds[0]).for_model(seg.in_chans, seg.input_norm).images
    magnitude, spread = pooled_spread(pooled(seg.module, seg.layer, rank_images, batch_size=batch_size,
                                             device=device))
    if flip is None:
        flip = segmenter_ranking(seg.module, seg.layer, data, "flip", count=count, seeds=seeds, model_name=seg.name,
                                 **kw)
    pair_means, overlaps = _flip_pairs(net, flip, count, seeds, channel_counts(n, net.channels), kw)
    scores = {"flip": pair_means["canvas"], "flip-normalised": spread_normalised(pair_means["canvas"], spread),
              **({"position-only": pair_means["position-only"]} if "position-only" in pair_means else {})}
    for method, key in (("shift", "overall"), ("dimest", "position")):
        if method in names:
            scores[method] = segmenter_ranking(seg.module, seg.layer, data, method, count=count, seeds=seeds,
                                               model_name=seg.name, **kw).scores[key]
    if "probe" in names:
        scores["probe"] = _probe_scores(net, count, seeds[0], batch_size, device)
    if REFERENCE in names:
        ranked = data.rank_set(knockout_count, seed=seeds[0]).for_model(seg.in_chans, seg.input_norm)
        scores[REFERENCE] = knockout_costs(SegEval(seg.module, seg.layer, ranked, batch_size=batch_size,
                                                   device=device))
    means = (channel_means(seg.module, seg.layer, rank_images, batch_size=batch_size, device=device)
             if mode == "mean" else None)
    return SegmenterRankings({name: scores[name].double() for name in names}, magnitude, spread, means, overlaps,
                             flip)


def _flip_pairs(net: LoadedSegmenter, flip: ChannelRanking, count: int, seeds: Sequence[int], counts: list[int],
                kw: dict) -> tuple[dict[str, Tensor], list[dict]]:
    """The flip scores (``canvas``), on scenes those of the other flip pair constructions (mean over the ranking
    seeds, each its own rank scenes) and the overlaps of their top-N lists for every N of ``counts``."""
    seg, data = net.segmenter, net.data
    scores = {"canvas": flip.scores["overall"]}
    if not data.synthetic:
        return scores, []
    others = ("mirror-in-place", "position-only")
    per_seed = [pair_scores(seg.module, seg.layer, data.rank_pairs(count, seed, pairs=others), **kw) for seed in seeds]
    scores.update({name: sum(p[name] for p in per_seed) / len(per_seed) for name in others})
    return scores, [row for n in counts for row in top_overlaps(scores, n)]


def _probe_scores(net: LoadedSegmenter, count: int, seed: int, batch_size: int, device: torch.device | str) -> Tensor:
    """The probe knock-out score: ``count`` (at least PROBE_ITEMS) rank-split items in the cells of a 3×3 grid of
    the scene canvas, the even rows to fit the cell probe, the odd ones to measure its cross-entropy rise per
    knocked-out channel."""
    seg, data = net.segmenter, net.data
    items = data.rank_items(max(count, PROBE_ITEMS))
    canvases, cells = cell_canvases(items, 3, data.scenes.side, in_chans=seg.in_chans, input_norm=seg.input_norm)
    features = pooled(seg.module, seg.layer, canvases, batch_size=batch_size, device=device)
    return probe_knockout(features[0::2], cells[0::2], features[1::2], cells[1::2], seed=seed)


@dataclass
class RegionRankings:
    """One network's rankings for region attacks by (method, side): ``flip`` of rank scenes whose items all lie in
    one half (side "left" or "top"; its keys rank both halves of that axis), ``shift`` (side None) of every region.
    None: the data cannot be ranked so (shift on real images)."""

    methods: list[str]  # flip and / or shift
    rankings: dict[tuple[str, str | None], ChannelRanking | None]

    def for_region(self, region: str) -> dict[str, ChannelRanking | None]:
        """Method -> the ranking whose key ``region`` it masks (``control.attack.region_attack``'s ``ranking``;
        None for flip on a region that is not a half)."""
        return {m: self.rankings.get((m, FLIP_SIDES.get(region) if m == "flip" else None)) for m in self.methods}

    def files(self) -> dict[str, ChannelRanking]:
        """File name -> ranking, of those made (``ranking_flip_left.json``, ``ranking_shift.json``)."""
        return {f"ranking_{method}{'_' + side if side else ''}.json": ranking
                for (method, side), ranking in self.rankings.items() if ranking is not None}


def check_regions(net: LoadedSegmenter, regions: Sequence[str], methods: Sequence[str], grid: int = 3) -> None:
    """Refuse a region empty on the network's scenes, a half whose rank scenes cannot hold every item (flip) and a
    grid whose cells cannot hold an item (shift)."""
    data = net.data
    side = data.scenes.side
    for r in regions:
        y0, y1, x0, x1 = region_box(r, side, grid)
        if y1 <= y0 or x1 <= x0:
            raise UserError(f"region {r!r} is empty on a {side}×{side} scene")
        if data.synthetic and r in FLIP_SIDES and any(m.startswith("flip") for m in methods):
            dataclasses.replace(data.scenes, region=FLIP_SIDES[r]).validate()  # rank scenes: items in that half
    if data.synthetic and any(m.startswith("shift") for m in methods):
        canvas_side(grid, ITEM_SIDE, side)  # the shift ranking pastes items in a grid×grid layout


def region_rankings(net: LoadedSegmenter, regions: Sequence[str], methods: Sequence[str], *, grid: int = 3,
                    count: int, seeds: Sequence[int] = (0,), batch_size: int = 64,
                    device: torch.device | str = "cpu") -> RegionRankings:
    """The rankings that the attack ``methods`` (flip, shift and their ``-opposite`` controls) of ``regions`` mask:
    ``segmenter_ranking`` with ``count`` rank images per seed of ``seeds``; flip only for the halves
    (left / right / top / bottom)."""
    check_regions(net, regions, methods, grid)
    seg = net.segmenter
    bases = [b for b in ("flip", "shift") if any(m.partition("-")[0] == b for m in methods)]
    found: dict[tuple[str, str | None], ChannelRanking | None] = {}
    for region in regions:
        for method in bases:
            if method == "flip" and region not in FLIP_SIDES:
                continue
            side = FLIP_SIDES[region] if method == "flip" else None
            if (method, side) not in found:
                found[method, side] = segmenter_ranking(seg.module, seg.layer, net.data, method, region=side,
                                                        grid=grid, count=count, seeds=seeds, batch_size=batch_size,
                                                        device=device, in_chans=seg.in_chans,
                                                        input_norm=seg.input_norm, model_name=seg.name)
    return RegionRankings(bases, found)
