"""`poschan ablate`: does a segmenter rely on its position channels? Zero the top-N, compare with N random ones.

The segmenter: a `seg-train` checkpoint, a torchvision segmentation model or a user's factory with its weights
(``--model`` / ``--weights`` / ``--layer``; poschan.models.segmentation.load_segmenter). The method is
``poschan.control.ablation.ablation_curve`` (a seg-train SegNet's features are computed once and only its head
re-run per mask; any other model runs with the masking hook on the layer). Ranking: the paper's flip score
``overall`` (mean |f(x) − f(hflip x)| of the layer's pooled output) on images drawn from the rank split, one
ranking per seed of ``seeds`` (each seed its own rank scenes), saved in ``ranking.json``
(poschan.locate.ranking.ChannelRanking); or a ranking file of these weights and this layer made on another split
(``--ranking``, e.g. by `poschan rank`). Random control: ``random_seeds`` draws of N channels.

Statistics (poschan.stats, from per-image confusions): every mIoU, pixel accuracy and drop has a bootstrap 95%
interval over its units (ranking seeds for ranked channels, random draws for random ones) and the test images;
the clean scores over the test images. Drops are clean − ablated on the same images (paired differences). Each N's
ranked drop − random drop is a comparison of its own (``metrics["comparisons"]``, with a p-value), and the ratio of
the two drops is estimated only where the random drop's interval excludes 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from poschan.config import setting
from poschan.control.ablation import SegEval, ablation_curve, channel_counts, channel_means, random_channels
from poschan.errors import UserError
from poschan.experiments.seg_common import (
    LoadedModel,
    comparison,
    describe,
    drop,
    drop_ratio,
    load_model,
    one_model,
    ranked_minus_random,
    read_ranking,
    score,
)
from poschan.experiments.settings import SegEvalSettings
from poschan.locate.ranking import ChannelRanking
from poschan.locate.segmentation import segmenter_ranking
from poschan.metrics.segmentation import miou_of, pixel_accuracy_of
from poschan.report.segmentation_figures import overlays, reliance_curve
from poschan.runtime import resolve_device
from poschan.tables import comparison_rows, write_csv
from poschan.taps import MASK_MODES

EXPERIMENT = "ablate"
HELP = "zero the top-N position channels of a segmenter's backbone vs N random channels: mIoU and its drop"


@dataclass
class Config(SegEvalSettings):
    ranking: str | None = setting(None, "ranking.json for this checkpoint, made on another split (default: rank here)")
    mode: str = setting("zero", "zero or mean (replace by the channel's mean on the rank images)")
    # unused since the clean interval comes from the per-image bootstrap; kept while configs/ablate.yaml sets it

    def validate(self) -> None:
        super().validate()
        if self.mode not in MASK_MODES:
            raise UserError(f"unknown mode {self.mode!r}; allowed: {', '.join(MASK_MODES)}")
        if not self.n:
            raise UserError("--n needs at least one channel count, e.g. 5%,10%,25%,50%")


@dataclass
class AblatePlan:
    config: Config
    loaded: LoadedModel
    counts: list[int]
    ranking: ChannelRanking | None
    device: torch.device


def prepare(config: Config) -> AblatePlan:
    config.validate()
    device = resolve_device(config.device)
    loaded = load_model(config, device)
    ranking = read_ranking(config.ranking, loaded) if config.ranking else None
    return AblatePlan(config, loaded, channel_counts(config.n, loaded.channels), ranking, device)


def rank_here(plan: AblatePlan) -> ChannelRanking:
    """The flip ranking of the layer on rank images, one pass per seed (poschan.locate.segmentation)."""
    c, seg = plan.config, plan.loaded.segmenter
    return segmenter_ranking(seg.module, seg.layer, plan.loaded.data, "flip", count=c.rank_scenes, seeds=c.seeds,
                             batch_size=c.batch_size, device=plan.device, in_chans=seg.in_chans,
                             input_norm=seg.input_norm, model_name=seg.name)


def run(plan: AblatePlan, work: Path, *, progress: bool = True) -> dict:
    c, loaded = plan.config, plan.loaded
    seg = loaded.segmenter
    ranking = plan.ranking
    if ranking is None:
        ranking = rank_here(plan)
        ranking.save(work / "ranking.json")
    means = None
    if c.mode == "mean":  # each channel's mean over rank-split images (seed 0)
        images = loaded.data.rank_images(c.rank_scenes, seed=0).for_model(seg.in_chans, seg.input_norm).images
        means = channel_means(seg.module, seg.layer, images, batch_size=c.batch_size, device=plan.device)
    ev = SegEval(seg.module, seg.layer, loaded.model_test, batch_size=c.batch_size, device=plan.device)
    curve = ablation_curve(seg.module, seg.layer, ranking, ev, plan.counts, random_draws=c.random_seeds,
                           mode=c.mode, means=means)
    clean = curve.clean_counts
    rows, table, comparisons = [], [], []
    for point in curve.points:
        n = point.n
        row = {"n": n, "fraction": n / curve.channels, "random_channels": point.random_channels}
        for name, unit in (("ranked", "ranking seeds"), ("random", "random draws")):
            groups = getattr(point, f"{name}_counts")
            row[name] = one_model(score(groups, unit))
            row[f"{name}_drop"] = one_model(drop(clean, groups, unit))
            row[f"{name}_pixel_accuracy"] = one_model(score(groups, unit, pixel_accuracy_of))
        row["drop_ratio"] = drop_ratio(clean, point.ranked_counts, point.random_counts)
        versus = comparison(ranked_minus_random(point.ranked_counts, point.random_counts, miou_of, bounds=(-1.0, 1.0)),
                            f"ranked_vs_random_drop_n{n}", f"top {n} ranked channels masked: mIoU drop",
                            f"{n} random channels masked: mIoU drop",
                            f"Does masking the top {n} ranked channels lower the mIoU more than masking {n} random "
                            "channels?")
        rows.append(row)
        comparisons.append(versus)
        ratio = row["drop_ratio"].get("mean")
        table.append({"n": n, "fraction": round(n / curve.channels, 4), "ranked_miou": row["ranked"]["mean"],
                      "ranked_lo": row["ranked"]["ci95"][0], "ranked_hi": row["ranked"]["ci95"][1],
                      "random_miou": row["random"]["mean"], "random_lo": row["random"]["ci95"][0],
                      "random_hi": row["random"]["ci95"][1], "drop_difference": versus["mean"],
                      "drop_difference_lo": versus["ci95"][0], "drop_difference_hi": versus["ci95"][1],
                      "drop_difference_p": versus["p_value"], "drop_ratio": ratio})
    write_csv(work / "table.csv", table)
    write_csv(work / "comparisons.csv", comparison_rows(comparisons))
    title = f"{loaded.label(width=True)} · {describe(loaded.data)} · {c.mode}"
    reliance_curve(rows, work / "reliance.png", title=title, clean=curve.miou_clean)
    _example_overlays(plan, ev, ranking, means, work / "overlays.png")
    return {"miou_clean": score([clean], "training seeds"),
            "pixel_accuracy_clean": score([clean], "training seeds", pixel_accuracy_of),
            "miou_clean_all": curve.miou_clean, "channels": curve.channels, "mode": c.mode, "layer": curve.layer,
            "ranking": {"source": c.ranking or "ranking.json", "seeds": sorted(curve.seeds)},
            "test_images": len(ev), "random_seeds": c.random_seeds, "reliance": rows, "comparisons": comparisons}


def _example_overlays(plan: AblatePlan, ev: SegEval, ranking: ChannelRanking, means: torch.Tensor | None,
                      path: Path) -> None:
    """Predictions on four test scenes: clean, top-25% ranked channels zeroed, as many random ones zeroed."""
    c, test = plan.config, plan.loaded.test
    n = max(1, ev.channels // 4)
    seeds = list(ranking.per_seed)
    first = ranking.top("overall", n, seed=seeds[0] if seeds else None)
    (rand,) = random_channels(ev.channels, n, 1)
    four = slice(0, 4)
    preds = {"clean": ev.predict(index=four),
             f"top {n} ranked": ev.predict(first, mode=c.mode, means=means, index=four),
             f"{n} random": ev.predict(rand, mode=c.mode, means=means, index=four)}
    overlays(test.images[:4], test.masks[:4], preds, path, class_names=test.classes)


def print_summary(metrics: dict) -> None:
    clean = metrics["miou_clean"]
    print(f"clean mIoU {clean['mean']:.3f} [{clean['ci95'][0]:.3f}, {clean['ci95'][1]:.3f}] "
          f"({metrics['test_images']} test images, {metrics['channels']} channels, mode {metrics['mode']})")
    print(f"{'N':>5} {'ranked mIoU':>24} {'random mIoU':>24} {'ranked − random drop':>30} {'p':>6}")
    for row, versus in zip(metrics["reliance"], metrics["comparisons"]):
        r, q = row["ranked"], row["random"]
        print(f"{row['n']:>5} {r['mean']:>8.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] "
              f"{q['mean']:>8.3f} [{q['ci95'][0]:.3f}, {q['ci95'][1]:.3f}] "
              f"{versus['mean']:>+12.3f} [{versus['ci95'][0]:+.3f}, {versus['ci95'][1]:+.3f}] {versus['p_value']:>6.3f}")
