"""`poschan ablate`: does a segmenter rely on its position channels? Zero the top-N, compare with N random ones.

The backbone output of every test scene is computed once; each N and each channel draw only re-runs the head on
the masked features (``poschan.taps.masked``, the same rule the masking hook applies). Ranking: the paper's flip
score ``overall`` (mean |f(x) − f(hflip x)| of the pooled backbone output) on scenes drawn from the rank split,
one ranking per seed of ``seeds`` (each seed its own rank scenes), saved in ``ranking.json``; or a ranking file
made for this checkpoint on another split (``--ranking``). Random control: ``random_seeds`` draws of N channels.

Statistics: clean mIoU over ``folds`` disjoint folds of the test scenes; ranked over the ranking seeds; random
over the random draws (each a Student-t 95% interval). Drops are clean − ablated, per seed or draw.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from poschan.errors import UserError
from poschan.experiments.seg_common import (
    EvalSet,
    LoadedModel,
    SegEvalConfig,
    add_eval_arguments,
    describe,
    evaluate_features,
    flip_ranking,
    load_seg_checkpoint,
    parse_counts,
    ranking_record,
    read_ranking,
    scene_features,
    scores,
)
from poschan.locate.ranking import ranking_order
from poschan.metrics.segmentation import miou, pixel_accuracy
from poschan.report.segmentation_figures import overlays, reliance_curve
from poschan.results import atomic_write_text
from poschan.runtime import resolve_device
from poschan.stats import summarize
from poschan.tables import write_csv
from poschan.taps import MASK_MODES, masked

EXPERIMENT = "ablate"
HELP = "zero the top-N position channels of a segmenter's backbone vs N random channels: mIoU and its drop"


@dataclass
class Config(SegEvalConfig):
    ranking: str | None = None
    n: list[str] = field(default_factory=lambda: ["5%", "10%", "25%", "50%"])
    mode: str = "zero"
    folds: int = 5

    def validate(self) -> None:
        super().validate()
        if self.mode not in MASK_MODES:
            raise UserError(f"unknown mode {self.mode!r}; allowed: {', '.join(MASK_MODES)}")
        if self.folds < 2 or self.test_size < self.folds:
            raise UserError(f"need folds >= 2 and test_size >= folds, got folds={self.folds}, test_size={self.test_size}")
        if not self.n:
            raise UserError("--n needs at least one channel count, e.g. 5%,10%,25%,50%")


@dataclass
class AblatePlan:
    config: Config
    loaded: LoadedModel
    channels: int
    counts: list[int]
    ranking: dict | None
    test: EvalSet
    device: torch.device


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_eval_arguments(p)
    p.add_argument("--ranking", help="ranking.json for this checkpoint, made on another split (default: rank here)")
    p.add_argument("--mode", help="zero or mean (replace by the channel's mean on the rank images)")


def prepare(config: Config) -> AblatePlan:
    config.validate()
    device = resolve_device(config.device)
    loaded = load_seg_checkpoint(config.checkpoint, device, config.data_root)
    test = loaded.data.test_set(config.test_size)
    with torch.no_grad():
        channels = loaded.model.features(test.images[:1].to(device)).shape[1]
    ranking = read_ranking(config.ranking, loaded, channels, test.images) if config.ranking else None
    return AblatePlan(config, loaded, channels, parse_counts(config.n, channels), ranking, test, device)


def channel_means(plan: AblatePlan) -> Tensor:
    """Per-channel mean of the backbone output over rank-split images (the fill of mode ``mean``)."""
    c = plan.config
    images = plan.loaded.data.rank_images(c.rank_scenes, seed=0).images
    return scene_features(plan.loaded.model, images, c.batch_size, plan.device).mean(dim=(0, 2, 3))


def ranked_orders(plan: AblatePlan, work: Path) -> dict[int, Tensor]:
    """seed -> ``overall`` channel order: from --ranking, or one flip ranking per seed (saved as ranking.json)."""
    c = plan.config
    if plan.ranking is not None:
        per_seed = plan.ranking.get("seed_orders") or {"0": plan.ranking["keys"]["overall"]["order"]}
        return {int(s): torch.tensor(order) for s, order in per_seed.items()}
    keys = {s: flip_ranking(plan.loaded.model, plan.loaded.data, region=None, count=c.rank_scenes, seed=s,
                            batch_size=c.batch_size, device=plan.device) for s in c.seeds}
    merged = {k: sum(keys[s][k] for s in c.seeds) / len(c.seeds) for k in keys[c.seeds[0]]}
    record = ranking_record(plan.loaded, "flip", list(c.seeds), c.rank_scenes, merged, plan.channels)
    orders = {s: ranking_order(keys[s]["overall"]) for s in c.seeds}
    record["seed_orders"] = {str(s): o.tolist() for s, o in orders.items()}
    atomic_write_text(work / "ranking.json", json.dumps(record) + "\n")
    return orders


def run(plan: AblatePlan, work: Path, *, progress: bool = True) -> dict:
    c, model = plan.config, plan.loaded.model
    orders = ranked_orders(plan, work)
    means = channel_means(plan) if c.mode == "mean" else None
    feats = scene_features(model, plan.test.images, c.batch_size, plan.device)

    def evaluate(channels: Tensor) -> dict[str, float]:
        edit = (lambda f: masked(f, channels, mode=c.mode, means=means)) if len(channels) else None
        return scores(evaluate_features(model, feats, plan.test.masks, c.batch_size, plan.device, edit))

    folds = torch.arange(len(feats)).chunk(c.folds)
    fold_meters = [evaluate_features(model, feats[f], plan.test.masks[f], c.batch_size, plan.device) for f in folds]
    clean_folds = [scores(m) for m in fold_meters]
    whole = sum((m.confusions["all"] for m in fold_meters), torch.zeros_like(fold_meters[0].confusions["all"]))
    clean = {"miou": miou(whole), "pixel_accuracy": pixel_accuracy(whole)}  # all test images: the folds summed
    rows, table = [], []
    for n in plan.counts:
        ranked = [evaluate(order[:n]) for order in orders.values()]
        draws = [torch.randperm(plan.channels, generator=torch.Generator().manual_seed(1000 * n + r))[:n]
                 for r in range(c.random_seeds)]
        random = [evaluate(d) for d in draws]
        row = {"n": n, "fraction": n / plan.channels, "random_channels": [d.tolist() for d in draws]}
        for name, results in (("ranked", ranked), ("random", random)):
            row[name] = summarize([r["miou"] for r in results])
            row[f"{name}_drop"] = summarize([clean["miou"] - r["miou"] for r in results])
            row[f"{name}_pixel_accuracy"] = summarize([r["pixel_accuracy"] for r in results])
        row["drop_ratio"] = row["ranked_drop"]["mean"] / row["random_drop"]["mean"] if row["random_drop"]["mean"] > 0 \
            else None
        rows.append(row)
        table.append({"n": n, "fraction": round(n / plan.channels, 4), "ranked_miou": row["ranked"]["mean"],
                      "ranked_lo": row["ranked"]["ci95"][0], "ranked_hi": row["ranked"]["ci95"][1],
                      "random_miou": row["random"]["mean"], "random_lo": row["random"]["ci95"][0],
                      "random_hi": row["random"]["ci95"][1], "drop_ratio": row["drop_ratio"]})
    write_csv(work / "table.csv", table)
    title = f"{model.spec.model} w{model.spec.width} · {describe(plan.loaded.data)} · {c.mode}"
    reliance_curve(rows, work / "reliance.png", title=title, clean=clean["miou"])
    _example_overlays(plan, feats, orders, means, work / "overlays.png")
    return {"miou_clean": summarize([f["miou"] for f in clean_folds]),
            "pixel_accuracy_clean": summarize([f["pixel_accuracy"] for f in clean_folds]),
            "miou_clean_all": clean["miou"], "channels": plan.channels, "mode": c.mode,
            "ranking": {"source": c.ranking or "ranking.json", "seeds": sorted(orders)},
            "test_images": len(feats), "random_seeds": c.random_seeds, "reliance": rows}


@torch.no_grad()
def _example_overlays(plan: AblatePlan, feats: Tensor, orders: dict[int, Tensor], means: Tensor | None,
                      path: Path) -> None:
    """Predictions on four test scenes: clean, top-25% ranked channels zeroed, as many random ones zeroed."""
    c, model = plan.config, plan.loaded.model
    f = feats[:4].to(plan.device)
    n = max(1, plan.channels // 4)
    first = next(iter(orders.values()))[:n]
    rand = torch.randperm(plan.channels, generator=torch.Generator().manual_seed(0))[:n]
    size = plan.test.masks.shape[-2:]
    preds = {"clean": model.decode(f, size).argmax(1).cpu(),
             f"top {n} ranked": model.decode(masked(f, first, mode=c.mode, means=means), size).argmax(1).cpu(),
             f"{n} random": model.decode(masked(f, rand, mode=c.mode, means=means), size).argmax(1).cpu()}
    overlays(plan.test.images[:4], plan.test.masks[:4], preds, path, class_names=plan.test.classes)


def print_summary(metrics: dict) -> None:
    clean = metrics["miou_clean"]
    print(f"clean mIoU {clean['mean']:.3f} [{clean['ci95'][0]:.3f}, {clean['ci95'][1]:.3f}] "
          f"({metrics['test_images']} test images, {metrics['channels']} channels, mode {metrics['mode']})")
    print(f"{'N':>5} {'ranked mIoU':>24} {'random mIoU':>24} {'drop ratio':>10}")
    for row in metrics["reliance"]:
        r, q = row["ranked"], row["random"]
        ratio = "—" if row["drop_ratio"] is None else f"{row['drop_ratio']:.2f}"
        print(f"{row['n']:>5} {r['mean']:>8.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] "
              f"{q['mean']:>8.3f} [{q['ci95'][0]:.3f}, {q['ci95'][1]:.3f}] {ratio:>10}")
