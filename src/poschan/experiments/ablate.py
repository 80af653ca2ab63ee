"""`poschan ablate`: does a segmenter rely on its position channels, and which ranking finds the channels it relies
on? Zero the top-N channels of each ranking; compare with N random channels and N magnitude-matched random ones.

The segmenters: a `seg-train` run (``--checkpoint RUN``: every ``seed<S>/checkpoint.pt`` in it, one trained network
each) or one checkpoint, or a torchvision segmentation model / a user's factory with its weights (``--model`` /
``--weights`` / ``--layer``; poschan.models.segmentation.load_segmenter). Per network, on images of the rank split
(never the test split), the rankings of ``rankings`` (poschan.locate):

- ``flip``: the paper's score, mean |f(x) − f(hflip x)| of the layer's pooled output (pooled over ``seeds``, each
  ranking seed its own rank scenes; saved as ``ranking.json``, ``network<i>/ranking.json`` for several networks),
  or a ranking file of this network made on another split (``--ranking``, one network only);
- ``position-only``: the same with partners whose items are mirrored in place and then the canvas flipped:
  positions mirrored, content kept (``data.scene_pairs``); the top-N overlaps of the flip, mirror-in-place and
  position-only lists (chance N²/C) are in ``metrics["chirality"]``: a flip list that shares its channels with
  mirror-in-place rather than position-only ranks chirality, not position;
- ``flip-normalised``: the flip score divided by each channel's spread (standard deviation of its pooled value);
- ``shift``: mean |Cohen's d| of the channel between the cells of a grid that an item is pasted in;
- ``dimest``: the channel's share of the position factor (Esser et al.'s dimensionality estimate);
- ``probe``: causal: the rise of a linear cell probe's cross-entropy when the channel alone is knocked out;
- ``knockout``: the reference: the mIoU lost on ``knockout_scenes`` rank images when the channel alone is zeroed
  (poschan.control.channel_sets; the best any ranking of single channels can do there).

For every N of ``n``: each ranking's top N, ``random_seeds`` draws of N uniform random channels (the paper's
control; the same draws for every ranking) and ``matched_draws`` draws of N random channels matched to the ranked
ones in activation magnitude and spread (poschan.control.channel_sets.matched_random).

Statistics (poschan.stats, from per-image confusions on the fixed test images): units are the trained networks (a
control's draws are pooled within its network), so every interval covers training variation and the test images
(with one network, the test images only, as its method says). Drops are clean − masked on the same images; for
every ranking and N the ranked drop minus each control's is a paired comparison with a p-value
(``metrics["comparisons"]``). ``metrics["rankings"]`` compares each ranking with the reference: its shortfall
(reference drop − its drop, averaged over the N, paired), the Spearman correlation of its scores with the
single-channel costs and the overlap of its top 5% with the reference's (chance N²/C).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from scipy import stats as st

from poschan import stats
from poschan.config import command_defaults, setting
from poschan.control.ablation import SegEval, channel_counts, channel_means, random_channels
from poschan.control.channel_sets import knockout_costs, matched_random
from poschan.errors import UserError
from poschan.experiments.seg_common import (
    ITEMS,
    NETWORKS,
    LoadedModel,
    comparison,
    describe,
    load_networks,
    read_ranking,
    score,
)
from poschan.experiments.settings import SegEvalSettings
from poschan.locate.pair_scores import pair_scores, top_overlaps
from poschan.locate.ranking import ranking_order, top_overlap
from poschan.locate.reliance import cell_canvases, pooled, pooled_spread, probe_knockout, spread_normalised
from poschan.locate.segmentation import segmenter_ranking
from poschan.metrics.segmentation import miou_of, pixel_accuracy_of
from poschan.report.segmentation_figures import overlays, reliance_curve
from poschan.results import atomic_write_text
from poschan.runtime import resolve_device
from poschan.tables import comparison_rows, flat_stats, write_csv
from poschan.taps import MASK_MODES

EXPERIMENT = "ablate"
HELP = "zero the top-N channels of several rankings of a segmenter vs random and magnitude-matched channels"
RANKINGS = ("flip", "flip-normalised", "position-only", "shift", "dimest", "probe", "knockout")
REFERENCE = "knockout"
OVERLAP_FRACTION = 0.05  # the paper's size: 100 of 2048 channels
PROBE_ITEMS = 18  # items in every cell of the probe's 3×3 grid, once to fit and once to test
SCENE_ONLY = ("position-only", "shift", "dimest", "probe")  # rankings that move or mirror items inside scenes


@dataclass
@command_defaults
class Config(SegEvalSettings):
    DEFAULTS: ClassVar[dict] = {"n": ["1%", "2%", "5%", "10%", "25%", "50%"]}
    FLAGS: ClassVar[dict] = {"checkpoint": {"help": "a seg-train run (every seed<S>/checkpoint.pt in it) or one "
                                                    "checkpoint"}}

    ranking: str | None = setting(None, "ranking.json of this checkpoint made on another split: its flip ranking")
    rankings: list[str] = setting(list(RANKINGS), f"rankings to compare, comma-separated: {', '.join(RANKINGS)}")
    matched_draws: int = setting(3, "draws of magnitude-matched random channels per ranking and N")
    knockout_scenes: int = setting(300, "rank images on which each channel's own knock-out cost is measured")
    mode: str = setting("zero", "zero or mean (replace by the channel's mean on the rank images)")

    def validate(self) -> None:
        super().validate()
        if self.mode not in MASK_MODES:
            raise UserError(f"unknown mode {self.mode!r}; allowed: {', '.join(MASK_MODES)}")
        if not self.n:
            raise UserError("--n needs at least one channel count, e.g. 5%,10%,25%,50%")
        unknown = sorted(set(self.rankings) - set(RANKINGS))
        if unknown or not self.rankings:
            raise UserError(f"unknown rankings {unknown}; allowed: {', '.join(RANKINGS)}")
        if self.matched_draws < 1 or self.knockout_scenes < 3:
            raise UserError(f"matched_draws must be >= 1 and knockout_scenes >= 3, got {self.matched_draws} and "
                            f"{self.knockout_scenes}")


@dataclass
class AblatePlan:
    config: Config
    networks: list[LoadedModel]
    sources: list[str]  # each network's checkpoint, or the --model
    rankings: list[str]  # those of the config that the data allows
    counts: list[int]
    device: torch.device


def prepare(config: Config) -> AblatePlan:
    config.validate()
    device = resolve_device(config.device)
    networks, sources = load_networks(config, device)
    if config.ranking and len(networks) > 1:
        raise UserError(f"--ranking belongs to one network; {config.checkpoint} holds {len(networks)}")
    first = networks[0]
    if config.ranking:
        read_ranking(config.ranking, first)
    rankings = [r for r in config.rankings if first.data.synthetic or r not in SCENE_ONLY]
    return AblatePlan(config, networks, sources, rankings, channel_counts(config.n, first.channels), device)


@dataclass
class Network:
    """One trained network's rankings (name -> channel scores) and its controls' inputs."""

    scores: dict[str, torch.Tensor]
    magnitude: torch.Tensor
    spread: torch.Tensor
    ev: SegEval
    means: torch.Tensor | None
    overlaps: list[dict]  # top-N overlaps of the flip pair constructions (locate.pair_scores.top_overlaps)


def _rank(plan: AblatePlan, net: LoadedModel, folder: Path) -> Network:
    """Every ranking of ``net`` on the rank split (scores saved in ``folder/scores.json``), the flip pair
    constructions' top-list overlaps, and its channels' magnitude and spread there."""
    c, seg, data = plan.config, net.segmenter, net.data
    folder.mkdir(parents=True, exist_ok=True)
    kw = dict(batch_size=c.batch_size, device=plan.device, in_chans=seg.in_chans, input_norm=seg.input_norm)
    rank_images = data.rank_images(c.rank_scenes, seed=c.seeds[0]).for_model(seg.in_chans, seg.input_norm).images
    magnitude, spread = pooled_spread(pooled(seg.module, seg.layer, rank_images, batch_size=c.batch_size,
                                             device=plan.device))
    pair_means, overlaps = _flip_pairs(plan, net, folder)
    scores = {"flip": pair_means["canvas"], "flip-normalised": spread_normalised(pair_means["canvas"], spread),
              **({"position-only": pair_means["position-only"]} if "position-only" in pair_means else {})}
    for method, key in (("shift", "overall"), ("dimest", "position")):
        if method in plan.rankings:
            ranking = segmenter_ranking(seg.module, seg.layer, data, method, count=c.rank_scenes, seeds=c.seeds,
                                        model_name=seg.name, **kw)
            scores[method] = ranking.scores[key]
    if "probe" in plan.rankings:
        scores["probe"] = _probe_scores(plan, net)
    if "knockout" in plan.rankings:
        ranked = data.rank_set(c.knockout_scenes, seed=c.seeds[0]).for_model(seg.in_chans, seg.input_norm)
        scores["knockout"] = knockout_costs(SegEval(seg.module, seg.layer, ranked, batch_size=c.batch_size,
                                                    device=plan.device))
    scores = {name: scores[name].double() for name in plan.rankings}
    atomic_write_text(folder / "scores.json", json.dumps({"checkpoint": net.segmenter.name, "layer": seg.layer,
                                                        **{k: v.tolist() for k, v in scores.items()}}) + "\n")
    means = (channel_means(seg.module, seg.layer, rank_images, batch_size=c.batch_size, device=plan.device)
             if c.mode == "mean" else None)
    ev = SegEval(seg.module, seg.layer, net.model_test, batch_size=c.batch_size, device=plan.device)
    return Network(scores, magnitude, spread, ev, means, overlaps)


def _flip_pairs(plan: AblatePlan, net: LoadedModel, folder: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The paper's flip ranking (``canvas``: given by ``--ranking``, or ranked here and saved as
    ``folder/ranking.json``, locate.ranking.ChannelRanking), on scenes the other flip pair constructions
    (locate.pair_scores; mean over the ranking seeds, each its own rank scenes) and the overlaps of their top-N
    lists for every N."""
    c, seg, data = plan.config, net.segmenter, net.data
    kw = dict(batch_size=c.batch_size, device=plan.device, in_chans=seg.in_chans, input_norm=seg.input_norm)
    if c.ranking:
        flip = read_ranking(c.ranking, net)
    else:
        flip = segmenter_ranking(seg.module, seg.layer, data, "flip", count=c.rank_scenes, seeds=c.seeds,
                                 model_name=seg.name, **kw)
        flip.save(folder / "ranking.json")
    scores = {"canvas": flip.scores["overall"]}
    if not data.synthetic:
        return scores, []
    others = ("mirror-in-place", "position-only")
    per_seed = [pair_scores(seg.module, seg.layer, data.rank_pairs(c.rank_scenes, seed, pairs=others), **kw)
                for seed in c.seeds]
    scores.update({name: sum(p[name] for p in per_seed) / len(per_seed) for name in others})
    return scores, [row for n in plan.counts for row in top_overlaps(scores, n)]


def _probe_scores(plan: AblatePlan, net: LoadedModel) -> torch.Tensor:
    """The probe knock-out score: ``rank_scenes`` (at least PROBE_ITEMS) rank-split items in the cells of a 3×3 grid
    of the scene canvas, the even rows to fit the cell probe, the odd ones to measure its cross-entropy rise per
    knocked-out channel."""
    c, seg, data = plan.config, net.segmenter, net.data
    items = data.rank_items(max(c.rank_scenes, PROBE_ITEMS))
    canvases, cells = cell_canvases(items, 3, data.scenes.side, in_chans=seg.in_chans, input_norm=seg.input_norm)
    features = pooled(seg.module, seg.layer, canvases, batch_size=c.batch_size, device=plan.device)
    return probe_knockout(features[0::2], cells[0::2], features[1::2], cells[1::2], seed=c.seeds[0])


@dataclass
class Masked:
    """Per network: per-image IoU counts with the ranked channels masked, and the controls' (draws pooled)."""

    ranked: dict[tuple[str, int], np.ndarray]
    channels: dict[tuple[str, int], list[int]]  # the ranked sets
    random: dict[int, np.ndarray]
    random_sets: dict[int, list[list[int]]]  # the random control's draws, this network's own
    matched: dict[tuple[str, int], np.ndarray]
    clean: np.ndarray


def _mask(plan: AblatePlan, net: Network, index: int) -> Masked:
    """Network ``index``'s masked counts; its random control draws are its own (keyed by ``index``)."""
    c, ev = plan.config, net.ev
    kw = dict(mode=c.mode, means=net.means)
    ranked, channels, random, random_sets, matched = {}, {}, {}, {}, {}
    for n in plan.counts:
        draws = random_channels(ev.channels, n, c.random_seeds, index)
        random[n] = np.mean([ev.meter(s, **kw).counts() for s in draws], 0)
        random_sets[n] = [d.tolist() for d in draws]
        for name, scores in net.scores.items():
            top = ranking_order(scores)[:n]
            channels[(name, n)] = top.tolist()
            ranked[(name, n)] = ev.meter(top, **kw).counts()
            if 2 * n <= ev.channels:
                sets = matched_random(top, net.magnitude, net.spread, c.matched_draws, seed=n)
                matched[(name, n)] = np.mean([ev.meter(s, **kw).counts() for s in sets], 0)
    return Masked(ranked, channels, random, random_sets, matched, ev.meter().counts())


def _unit_note(networks: int) -> str:
    return ("" if networks > 1 else
            "; one trained network: the variation between training seeds is not covered")


def _score(groups: list[np.ndarray], metric=miou_of) -> dict:
    out = score(groups, NETWORKS, metric)
    out["method"] += _unit_note(len(groups))
    return out


def _difference(a: list[np.ndarray], b: list[np.ndarray], metric=miou_of) -> dict:
    """metric(a) − metric(b) on the same networks and images."""
    out = stats.paired_difference(a, b, metric, bounds=(-1.0, 1.0), unit=NETWORKS, item=ITEMS)
    out["method"] += _unit_note(len(a))
    return out


def _blocks_miou(means: np.ndarray, blocks: int) -> np.ndarray:
    """Mean over ``blocks`` equal column blocks (one per N) of their mIoU."""
    return np.mean([miou_of(b) for b in np.split(means, blocks, axis=-1)], axis=0)


def _reliance(plan: AblatePlan, masked: list[Masked], names: list[str]) -> tuple[list[dict], list[dict]]:
    """The rows (ranking, N) and their comparisons with the two controls."""
    clean = [m.clean for m in masked]
    rows, comparisons = [], []
    channels = plan.networks[0].channels
    for name in names:
        for n in plan.counts:
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
                comparisons.append(comparison(
                    _difference(control, ranked), key, f"top {n} {name} channels masked: mIoU drop",
                    f"{label}: mIoU drop", f"Does masking the top {n} {name} channels lower the mIoU more than "
                    f"masking {label.removesuffix(' masked')}?"))
            rows.append(row)
    return rows, comparisons


def _versus_reference(plan: AblatePlan, masked: list[Masked], networks: list[Network], names: list[str]) -> list[dict]:
    """Each ranking against the single-channel knock-out costs: shortfall, Spearman correlation, top-5% overlap."""
    if REFERENCE not in names:
        return []
    counts, channels = plan.counts, plan.networks[0].channels
    top = max(1, round(OVERLAP_FRACTION * channels))
    reference = [np.concatenate([m.ranked[(REFERENCE, n)] for n in counts], axis=1) for m in masked]
    out = []
    for name in names:
        if name == REFERENCE:
            continue
        mine = [np.concatenate([m.ranked[(name, n)] for n in counts], axis=1) for m in masked]
        shortfall = _difference(mine, reference, lambda means: _blocks_miou(means, len(counts)))
        shortfall["method"] += f"; reference drop − this ranking's drop, averaged over N = {counts}"
        rho = [float(st.spearmanr(net.scores[name], net.scores[REFERENCE]).statistic) for net in networks
               if net.scores[name].unique().numel() > 1 and net.scores[REFERENCE].unique().numel() > 1]
        overlap = [top_overlap(net.scores[name], net.scores[REFERENCE], top) for net in networks]
        out.append({"ranking": name, "shortfall": shortfall,
                    "spearman": stats.summarize(rho, bounds=(-1.0, 1.0), unit=NETWORKS) if rho else
                    {"estimable": False, "reason": "constant scores: no rank correlation"},
                    "overlap": stats.summarize(overlap, bounds=(0.0, float(top)), unit=NETWORKS),
                    "overlap_n": top, "overlap_chance": top * top / channels})
    return out


def _chirality(networks: list[Network]) -> list[dict]:
    """Per pair of flip constructions and N: the overlap of their top-N lists over the networks (mean, t-interval
    cut to [0, N]), chance N²/C and each network's hypergeometric p-value of an overlap at least as large."""
    groups: dict[tuple, list[dict]] = {}
    for net in networks:
        for row in net.overlaps:
            groups.setdefault((row["a"], row["b"], row["n"]), []).append(row)
    return [{"a": a, "b": b, "n": n, "chance": rows[0]["chance"],
             "overlap": stats.summarize([r["overlap"] for r in rows], bounds=(0.0, float(n)), unit=NETWORKS),
             "p_values": [r["p_value"] for r in rows]} for (a, b, n), rows in groups.items()]


def run(plan: AblatePlan, work: Path, *, progress: bool = True) -> dict:
    c = plan.config
    many = len(plan.networks) > 1
    networks = [_rank(plan, net, work / f"network{i}" if many else work) for i, net in enumerate(plan.networks)]
    masked = [_mask(plan, net, i) for i, net in enumerate(networks)]
    names = list(networks[0].scores)
    rows, comparisons = _reliance(plan, masked, names)
    versus = _versus_reference(plan, masked, networks, names)
    closest = min(versus, key=lambda v: v["shortfall"]["mean"])["ranking"] if versus else None
    write_csv(work / "table.csv", [_table_row(row, comparisons) for row in rows])
    write_csv(work / "rankings.csv", [{"ranking": v["ranking"], "shortfall": v["shortfall"]["mean"],
                                       "shortfall_lo": v["shortfall"]["ci95"][0],
                                       "shortfall_hi": v["shortfall"]["ci95"][1],
                                       "shortfall_p": v["shortfall"]["p_value"], "spearman": v["spearman"].get("mean"),
                                       "overlap": v["overlap"]["mean"], "overlap_chance": v["overlap_chance"]}
                                      for v in versus])
    write_csv(work / "comparisons.csv", comparison_rows(comparisons))
    chirality = _chirality(networks)
    if chirality:
        write_csv(work / "chirality.csv", [flat_stats({"a": r["a"], "b": r["b"], "n": r["n"], "overlap": r["overlap"],
                                                       "chance": r["chance"], "max_p": max(r["p_values"])})
                                            for r in chirality])
    first = plan.networks[0]
    clean = _score([m.clean for m in masked])
    reliance_curve(rows, work / "reliance.png", title=f"{first.label(width=True)} · {describe(first.data)} · "
                    f"{len(networks)} network(s)", clean=clean["mean"])
    _example_overlays(plan, networks[0], work / "overlays.png")
    return {"miou_clean": clean, "pixel_accuracy_clean": _score([m.clean for m in masked], pixel_accuracy_of),
            "networks": len(networks), "checkpoints": plan.sources,
            "channels": first.channels, "mode": c.mode, "layer": first.layer,
            "ranking": {"source": c.ranking or "ranking.json", "seeds": list(c.seeds)}, "rankings": versus,
            "rankings_left_out": sorted(set(c.rankings) - set(plan.rankings)),
            "closest_to_reference": closest, "test_images": len(first.test.images), "random_seeds": c.random_seeds,
            "matched_draws": c.matched_draws, "chirality": chirality, "reliance": rows, "comparisons": comparisons}


def _table_row(row: dict, comparisons: list[dict]) -> dict:
    by_name = {p["name"]: p for p in comparisons}
    out = {"ranking": row["ranking"], "n": row["n"], "fraction": round(row["fraction"], 4)}
    for control in ("random", "matched"):
        p = by_name.get(f"{row['ranking']}_vs_{control}_drop_n{row['n']}")
        out.update({f"ranked_minus_{control}": p and p["mean"], f"ranked_minus_{control}_lo": p and p["ci95"][0],
                    f"ranked_minus_{control}_hi": p and p["ci95"][1], f"ranked_minus_{control}_p": p and p["p_value"]})
    return {**out, "ranked_drop": row["ranked_drop"]["mean"], "random_drop": row["random_drop"]["mean"],
            "matched_drop": row["matched_drop"]["mean"] if "matched_drop" in row else None}


def _example_overlays(plan: AblatePlan, net: Network, path: Path) -> None:
    """Predictions of the first network on four test scenes: clean, its first ranking's top 25% zeroed, as many
    random channels zeroed."""
    c, test, ev = plan.config, plan.networks[0].test, net.ev
    n = max(1, ev.channels // 4)
    name, scores = next(iter(net.scores.items()))
    (rand,) = random_channels(ev.channels, n, 1)
    four = slice(0, 4)
    kw = dict(mode=c.mode, means=net.means, index=four)
    preds = {"clean": ev.predict(index=four), f"top {n} {name}": ev.predict(ranking_order(scores)[:n], **kw),
             f"{n} random": ev.predict(rand, **kw)}
    overlays(test.images[:4], test.masks[:4], preds, path, class_names=test.classes)


def print_summary(metrics: dict) -> None:
    clean = metrics["miou_clean"]
    print(f"clean mIoU {clean['mean']:.3f} [{clean['ci95'][0]:.3f}, {clean['ci95'][1]:.3f}] ({metrics['networks']} "
          f"network(s), {metrics['test_images']} test images, {metrics['channels']} channels, mode {metrics['mode']})")
    by_name = {p["name"]: p for p in metrics["comparisons"]}
    print(f"{'ranking':<16} {'N':>4} {'ranked drop':>12} {'ranked − random drop':>30} {'ranked − matched drop':>30}")
    for row in metrics["reliance"]:
        cells = []
        for control in ("random", "matched"):
            p = by_name.get(f"{row['ranking']}_vs_{control}_drop_n{row['n']}")
            cells.append(f"{p['mean']:>+8.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] {stats.p_text(p)}"
                         if p else f"{'—':>30}")
        print(f"{row['ranking']:<16} {row['n']:>4} {row['ranked_drop']['mean']:>12.3f} {cells[0]:>30} {cells[1]:>30}")
    for v in metrics["rankings"]:
        s = v["shortfall"]
        print(f"{v['ranking']:<16} shortfall vs knockout {s['mean']:+.3f} [{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}], "
              f"Spearman {v['spearman'].get('mean', float('nan')):+.2f}, top-{v['overlap_n']} overlap {v['overlap']['mean']:.1f} "
              f"(chance {v['overlap_chance']:.1f})")
    if metrics["closest_to_reference"]:
        print(f"closest to the knock-out reference: {metrics['closest_to_reference']}")
