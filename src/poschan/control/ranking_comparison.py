"""Which of several rankings finds the channels that trained segmenters rely on (the study of `poschan ablate`,
``compare_rankings``): each ranking's top N masked, against random and magnitude-matched random channels, and
against the single-channel knock-out reference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from scipy import stats as st
from torch import Tensor

from poschan import stats
from poschan.control.ablation import SegEval, ablation_curve, channel_counts, random_channels
from poschan.control.channel_sets import matched_random
from poschan.errors import UserError
from poschan.locate.pair_scores import overlaps_over_networks
from poschan.locate.ranking import ranking_order, top_overlap
from poschan.locate.segmenter_rankings import REFERENCE
from poschan.metrics.segmentation import ITEMS, NETWORKS, miou_of, one_model, pixel_accuracy_of, score
from poschan.models.segmenters import LoadedSegmenter

OVERLAP_FRACTION = 0.05  # the top share whose overlap with the reference's top is reported (the paper's 100 of 2048)


class RankedChannels(Protocol):
    """What ``compare_rankings`` reads of one network's rankings (``locate.segmenter_rankings.SegmenterRankings``)."""

    scores: dict[str, Tensor]  # name -> (C,) scores; REFERENCE, when there, the single-channel knock-out costs
    magnitude: Tensor  # (C,) activation magnitude and spread on rank images: the matched control's
    spread: Tensor
    means: Tensor | None  # (C,) the fill of mask mode "mean"
    overlaps: list[dict]  # top-N overlaps of the flip pair constructions (locate.pair_scores.top_overlaps)


@dataclass
class RankingComparison:
    """``compare_rankings``' answer: every number a ``poschan.stats`` statistic (``{"mean", "ci95", "n", "values",
    "method"}``, comparisons with their p-value) whose units are the networks, its items the test images.

    ``reliance``: per ranking and N, the mIoU with its top N masked (``ranked``), with N random channels
    (``random``, a network's draws pooled) and N magnitude-matched ones (``matched``, where 2N <= C), each one's
    drop (clean − masked) and the channel sets; ``comparisons``: each ranked drop minus each control's;
    ``rankings``: each ranking against the reference (its shortfall, Spearman correlation and top-5% overlap);
    ``chirality``: the overlaps of the flip constructions' top lists; ``examples``: argmax predictions of the
    first network's first images (clean, its first ranking's top 25% masked, as many random channels)."""

    layer: str
    channels: int
    mode: str
    networks: int
    miou_clean: dict
    pixel_accuracy_clean: dict
    reliance: list[dict]
    comparisons: list[dict]
    rankings: list[dict]
    closest_to_reference: str | None
    chirality: list[dict]
    examples: dict[str, Tensor] = field(default_factory=dict, compare=False, repr=False)


def compare_rankings(networks: Sequence[LoadedSegmenter], rankings: Sequence[RankedChannels],
                     n: Sequence[int | str] | int | str = ("5%", "10%", "25%", "50%"), *, random_draws: int = 5,
                     matched_draws: int = 3, mode: str = "zero", examples: int = 0, batch_size: int = 64,
                     device: torch.device | str | None = None) -> RankingComparison:
    """Does a segmenter rely on the channels each ranking puts first? For every N of ``n`` and every ranking of
    ``rankings[i]`` (network i's, ``locate.segmenter_rankings``): its top N channels masked (``mode``) on network
    i's test images (``ablation_curve``), against ``random_draws`` draws of N uniform random channels (keyed by
    network i: its own; the same for every ranking) and ``matched_draws`` draws of N random channels matched to
    the ranked ones in activation magnitude and spread (``control.channel_sets.matched_random``; 0: none).

    Statistics over the networks (a control's draws pooled within its network) and the test images: with one
    network, the test images only, as each method says. Each ranking is compared with REFERENCE when it is ranked:
    its shortfall (reference drop − its drop, averaged over the N, paired), the Spearman correlation of its scores
    with the single-channel costs and the overlap of its top 5% with the reference's (chance N²/C).
    """
    if not networks or len(networks) != len(rankings):
        raise UserError(f"give one ranking set per network, got {len(rankings)} for {len(networks)} networks")
    if random_draws < 1 or matched_draws < 0:
        raise UserError(f"random_draws must be >= 1 and matched_draws >= 0, got {random_draws} and {matched_draws}")
    first = networks[0]
    counts = channel_counts(n, first.channels)
    evs = [SegEval(net.module, net.layer, net.model_test, batch_size=batch_size, device=device) for net in networks]
    masked = [_mask(ev, ranked, counts, random_draws, matched_draws, mode, i)
              for i, (ev, ranked) in enumerate(zip(evs, rankings))]
    names = list(rankings[0].scores)
    rows, comparisons = _reliance(masked, names, counts, first.channels)
    versus = _versus_reference(masked, rankings, names, counts, first.channels)
    return RankingComparison(
        first.layer, first.channels, mode, len(networks), _score([m.clean for m in masked]),
        _score([m.clean for m in masked], pixel_accuracy_of), rows, comparisons, versus,
        min(versus, key=lambda v: v["shortfall"]["mean"])["ranking"] if versus else None,
        overlaps_over_networks([r.overlaps for r in rankings]),
        _examples(evs[0], rankings[0], mode, examples) if examples else {})


@dataclass
class _Masked:
    """Per network: per-image IoU counts with the ranked channels masked, and the controls' (draws pooled)."""

    ranked: dict[tuple[str, int], np.ndarray]
    channels: dict[tuple[str, int], list[int]]  # the ranked sets
    random: dict[int, np.ndarray]
    random_sets: dict[int, list[list[int]]]  # the random control's draws, this network's own
    matched: dict[tuple[str, int], np.ndarray]
    clean: np.ndarray


def _mask(ev: SegEval, ranked: RankedChannels, counts: list[int], random_draws: int, matched_draws: int, mode: str,
          index: int) -> _Masked:
    """Network ``index``'s masked counts; its random control draws are its own (keyed by ``index``)."""
    curve = ablation_curve(ev.model, ev.layer, {name: ranking_order(s) for name, s in ranked.scores.items()}, ev,
                           counts, random_draws=random_draws, control_seed=index, mode=mode, means=ranked.means)
    out = _Masked({}, {}, {}, {}, {}, curve.clean_counts)
    for p in curve.points:
        out.random[p.n], out.random_sets[p.n] = np.mean(p.random_counts, 0), p.random_channels
        out.ranked[p.ranking, p.n], out.channels[p.ranking, p.n] = p.ranked_counts[0], p.ranked_channels[0]
        if matched_draws and 2 * p.n <= ev.channels:
            sets = matched_random(torch.tensor(p.ranked_channels[0]), ranked.magnitude, ranked.spread, matched_draws,
                                  seed=p.n)
            out.matched[p.ranking, p.n] = np.mean([ev.meter(s, mode=mode, means=ranked.means).counts() for s in sets],
                                                  0)
    return out


def _score(groups: list[np.ndarray], metric: stats.Metric = miou_of) -> dict:
    return one_model(score(groups, NETWORKS, metric), len(groups), "network")


def _difference(a: list[np.ndarray], b: list[np.ndarray], metric: stats.Metric = miou_of) -> dict:
    """metric(a) − metric(b) on the same networks and images."""
    out = stats.paired_difference(a, b, metric, bounds=(-1.0, 1.0), unit=NETWORKS, item=ITEMS)
    return one_model(out, len(a), "network")


def _blocks_miou(means: np.ndarray, blocks: int) -> np.ndarray:
    """Mean over ``blocks`` equal column blocks (one per N) of their mIoU."""
    return np.mean([miou_of(b) for b in np.split(means, blocks, axis=-1)], axis=0)


def _reliance(masked: list[_Masked], names: list[str], counts: list[int], channels: int
              ) -> tuple[list[dict], list[dict]]:
    """The rows (ranking, N) and their comparisons with the two controls."""
    clean = [m.clean for m in masked]
    rows, comparisons = [], []
    for name in names:
        for n in counts:
            ranked = [m.ranked[(name, n)] for m in masked]
            random = [m.random[n] for m in masked]
            row = {"ranking": name, "n": n, "fraction": n / channels,
                   "ranked_channels": [m.channels[(name, n)] for m in masked],
                   "random_channels": [m.random_sets[n] for m in masked],
                   "ranked": _score(ranked),
                   "random": _score(random), "ranked_drop": _difference(clean, ranked),
                   "random_drop": _difference(clean, random),
                   "ranked_pixel_accuracy": _score(ranked, pixel_accuracy_of)}
            versus = [(f"{name}_vs_random_drop_n{n}", random, f"{n} uniform random channels masked")]
            if all((name, n) in m.matched for m in masked):
                matched = [m.matched[(name, n)] for m in masked]
                row["matched"], row["matched_drop"] = _score(matched), _difference(clean, matched)
                versus.append((f"{name}_vs_matched_drop_n{n}", matched,
                               f"{n} random channels matched in magnitude and spread masked"))
            for key, control, label in versus:
                comparisons.append(stats.comparison(
                    _difference(control, ranked), key, f"top {n} {name} channels masked: mIoU drop",
                    f"{label}: mIoU drop", f"Does masking the top {n} {name} channels lower the mIoU more than "
                    f"masking {label.removesuffix(' masked')}?"))
            rows.append(row)
    return rows, comparisons


def _versus_reference(masked: list[_Masked], rankings: Sequence[RankedChannels], names: list[str], counts: list[int],
                      channels: int) -> list[dict]:
    """Each ranking against the single-channel knock-out costs: shortfall, Spearman correlation, top-5% overlap."""
    if REFERENCE not in names:
        return []
    top = max(1, round(OVERLAP_FRACTION * channels))
    reference = [np.concatenate([m.ranked[(REFERENCE, n)] for n in counts], axis=1) for m in masked]
    out = []
    for name in names:
        if name == REFERENCE:
            continue
        mine = [np.concatenate([m.ranked[(name, n)] for n in counts], axis=1) for m in masked]
        shortfall = _difference(mine, reference, lambda means: _blocks_miou(means, len(counts)))
        shortfall["method"] += f"; reference drop − this ranking's drop, averaged over N = {counts}"
        rho = [float(st.spearmanr(r.scores[name], r.scores[REFERENCE]).statistic) for r in rankings
               if r.scores[name].unique().numel() > 1 and r.scores[REFERENCE].unique().numel() > 1]
        overlap = [top_overlap(r.scores[name], r.scores[REFERENCE], top) for r in rankings]
        out.append({"ranking": name, "shortfall": shortfall,
                    "spearman": stats.summarize(rho, bounds=(-1.0, 1.0), unit=NETWORKS) if rho else
                    {"estimable": False, "reason": "constant scores: no rank correlation"},
                    "overlap": stats.summarize(overlap, bounds=(0.0, float(top)), unit=NETWORKS),
                    "overlap_n": top, "overlap_chance": top * top / channels})
    return out


def _examples(ev: SegEval, ranked: RankedChannels, mode: str, examples: int) -> dict[str, Tensor]:
    """Predictions of the first ``examples`` images: clean, the first ranking's top 25% masked, as many random
    channels masked."""
    n = max(1, ev.channels // 4)
    name, scores = next(iter(ranked.scores.items()))
    (rand,) = random_channels(ev.channels, n, 1)
    kw = dict(mode=mode, means=ranked.means, index=slice(0, examples))
    return {"clean": ev.predict(index=slice(0, examples)),
            f"top {n} {name}": ev.predict(ranking_order(scores)[:n], **kw), f"{n} random": ev.predict(rand, **kw)}
