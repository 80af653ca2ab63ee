"""`poschan ablate`: does a segmenter rely on its position channels, and which ranking finds the channels it relies
on? Zero the top-N channels of each ranking; compare with N random channels and N magnitude-matched random ones.

The segmenters: a `seg-train` run (``--checkpoint RUN``: every ``seed<S>/checkpoint.pt``, one trained network each),
one checkpoint, or ``--model`` / ``--weights`` / ``--layer`` (``models.segmenters.load_segmenters``). Per network
the rankings of ``rankings`` on rank-split images (``locate.segmenter_rankings``; the flip ranking saved as
``ranking.json``, all scores as ``scores.json``, in ``network<i>/`` for several networks; ``--ranking``: a ranking
file of the one network, made on another split); then ``control.ranking_comparison.compare_rankings``, whose docstring says
what is measured and how the statistics are made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from poschan.config import command_defaults, setting
from poschan.control.ablation import channel_counts
from poschan.control.ranking_comparison import compare_rankings
from poschan.errors import UserError
from poschan.experiments.settings import MaskModeSettings, RankingFileSettings, SegEvalSettings
from poschan.locate.ranking import ChannelRanking
from poschan.locate.segmenter_rankings import RANKINGS, available_rankings, read_ranking, segmenter_rankings
from poschan.models.segmenters import SCENE_FIELDS, LoadedSegmenter, describe, load_segmenters
from poschan.report.segmentation_figures import overlays, reliance_curve
from poschan.results import atomic_write_text
from poschan.runtime import resolve_device
from poschan.tables import comparison_rows, flat_stats, format_stat, print_comparisons, write_csv

EXPERIMENT = "ablate"
HELP = "zero the top-N channels of several rankings of a segmenter vs random and magnitude-matched channels"


@dataclass
@command_defaults
class Config(SegEvalSettings, MaskModeSettings, RankingFileSettings):
    DEFAULTS: ClassVar[dict] = {"n": ["1%", "2%", "5%", "10%", "25%", "50%"]}
    FLAGS: ClassVar[dict] = {"checkpoint": {"help": "a seg-train run (every seed<S>/checkpoint.pt in it) or one "
                                                    "checkpoint"},
                             "ranking": {"help": "ranking.json of this checkpoint made on another split: its flip "
                                                 "ranking"},
                             "mode": {"help": "zero or mean (replace by the channel's mean on the rank images)"}}

    rankings: list[str] = setting(list(RANKINGS), f"rankings to compare, comma-separated: {', '.join(RANKINGS)}")
    matched_draws: int = setting(3, "draws of magnitude-matched random channels per ranking and N")
    knockout_scenes: int = setting(300, "rank images on which each channel's own knock-out cost is measured")

    def validate(self) -> None:
        super().validate()
        if not self.n:
            raise UserError("--n needs at least one channel count, e.g. 5%,10%,25%,50%")
        unknown = sorted(set(self.rankings) - set(RANKINGS))
        if unknown or not self.rankings:
            raise UserError(f"unknown rankings {unknown}; allowed: {', '.join(RANKINGS)}")
        if self.matched_draws < 1 or self.knockout_scenes < 3:
            raise UserError(f"matched_draws must be >= 1 and knockout_scenes >= 3, got {self.matched_draws} and "
                            f"{self.knockout_scenes}")


def load_networks(c: SegEvalSettings, device: torch.device) -> list[LoadedSegmenter]:
    """The networks a config names (`ablate` and `attack`)."""
    return load_segmenters(checkpoint=c.checkpoint, model=c.model, weights=c.weights, layer=c.layer, data=c.data,
                           scenes={key: getattr(c, key) for key in SCENE_FIELDS}, data_root=c.data_root,
                           test_size=c.test_size, seed=c.seeds[0], device=device)


@dataclass
class AblatePlan:
    config: Config
    networks: list[LoadedSegmenter]
    flip: ChannelRanking | None  # given by --ranking
    counts: list[int]
    device: torch.device


def prepare(config: Config) -> AblatePlan:
    config.validate()
    device = resolve_device(config.device)
    networks = load_networks(config, device)
    if config.ranking and len(networks) > 1:
        raise UserError(f"--ranking belongs to one network; {config.checkpoint} holds {len(networks)}")
    flip = read_ranking(config.ranking, networks[0]) if config.ranking else None
    return AblatePlan(config, networks, flip, channel_counts(config.n, networks[0].channels), device)


def run(plan: AblatePlan, work: Path, *, progress: bool = True) -> dict:
    c, first = plan.config, plan.networks[0]
    kw = dict(batch_size=c.batch_size, device=plan.device)
    ranked = []
    for i, net in enumerate(plan.networks):
        folder = work / f"network{i}" if len(plan.networks) > 1 else work
        folder.mkdir(parents=True, exist_ok=True)
        ranked.append(segmenter_rankings(net, c.rankings, count=c.rank_scenes, seeds=c.seeds, n=plan.counts,
                                         knockout_count=c.knockout_scenes, flip=plan.flip, mode=c.mode, **kw))
        if plan.flip is None:
            ranked[-1].flip.save(folder / "ranking.json")
        atomic_write_text(folder / "scores.json", json.dumps({"checkpoint": net.segmenter.name, "layer": net.layer, **{
            k: v.tolist() for k, v in ranked[-1].scores.items()}}) + "\n")
    result = compare_rankings(plan.networks, ranked, plan.counts, random_draws=c.random_seeds,
                              matched_draws=c.matched_draws, mode=c.mode, examples=4, **kw)
    by_name = {p["name"]: p for p in result.comparisons}
    write_csv(work / "table.csv", [flat_stats({
        "ranking": r["ranking"], "n": r["n"], "fraction": round(r["fraction"], 4),
        **{f"ranked_minus_{k}": by_name.get(f"{r['ranking']}_vs_{k}_drop_n{r['n']}") for k in ("random", "matched")},
        **{f"{k}_drop": r.get(f"{k}_drop") for k in ("ranked", "random", "matched")}}) for r in result.reliance])
    write_csv(work / "rankings.csv", [flat_stats({
        "ranking": v["ranking"], "shortfall": v["shortfall"], "spearman": v["spearman"] if "mean" in v["spearman"] else None,
        "overlap": v["overlap"], "overlap_chance": v["overlap_chance"]}) for v in result.rankings])
    write_csv(work / "comparisons.csv", comparison_rows(result.comparisons))
    if result.chirality:
        write_csv(work / "chirality.csv", [flat_stats({**{k: r[k] for k in ("a", "b", "n", "overlap", "chance")},
                                                       "max_p": max(r["p_values"])}) for r in result.chirality])
    reliance_curve(result.reliance, work / "reliance.png", clean=result.miou_clean["mean"],
                   title=f"{first.label(width=True)} · {describe(first.data)} · {result.networks} network(s)")
    overlays(first.test.images[:4], first.test.masks[:4], result.examples, work / "overlays.png",
             class_names=first.test.classes)
    return {"miou_clean": result.miou_clean, "pixel_accuracy_clean": result.pixel_accuracy_clean,
            "networks": result.networks, "checkpoints": [net.source for net in plan.networks],
            "channels": result.channels, "mode": c.mode, "layer": result.layer,
            "ranking": {"source": c.ranking or "ranking.json", "seeds": list(c.seeds)}, "rankings": result.rankings,
            "rankings_left_out": sorted(set(c.rankings) - set(available_rankings(c.rankings, first))),
            "closest_to_reference": result.closest_to_reference, "test_images": len(first.test.images),
            "random_seeds": c.random_seeds, "matched_draws": c.matched_draws, "chirality": result.chirality,
            "reliance": result.reliance, "comparisons": result.comparisons}


def print_summary(metrics: dict) -> None:
    print(f"clean mIoU {format_stat(metrics['miou_clean'])} ({metrics['networks']} network(s), "
          f"{metrics['test_images']} test images, {metrics['channels']} channels, mode {metrics['mode']})")
    for row in metrics["reliance"]:
        print(f"{row['ranking']:<16} N {row['n']:>4}: mIoU drop {format_stat(row['ranked_drop'], signed=True)}")
    print_comparisons(metrics["comparisons"])
    for v in metrics["rankings"]:
        rho = format_stat(v["spearman"], 2, signed=True) if "mean" in v["spearman"] else "—"
        print(f"{v['ranking']:<16} shortfall vs knockout {format_stat(v['shortfall'], signed=True)}, Spearman {rho}, "
              f"top-{v['overlap_n']} overlap {format_stat(v['overlap'], 1)} (chance {v['overlap_chance']:.1f})")
    if metrics["closest_to_reference"]:
        print(f"closest to the knock-out reference: {metrics['closest_to_reference']}")
