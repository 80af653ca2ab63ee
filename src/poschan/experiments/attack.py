"""`poschan attack`: the region-specific attack. Zero the channels ranked for one region; does the segmentation
break mostly there? Beside it, a pixel-space masked PGD attack confined to the same region.

For each region R (poschan.regions) and each N, channel sets:
- ``flip`` (R in left/right/top/bottom): the signed flip score ``R`` on rank-split scenes whose items all lie in
  the left (top) half (poschan.ranking, image input: ``left`` = fires more for content on the left);
- ``shift``: the shift score of region R (items pasted in every cell of a grid over the scene canvas);
- ``flip-opposite`` / ``shift-opposite``: the opposite region's channels, same method (control);
- ``random``: N random channels, ``random_seeds`` draws (control);
and ``pgd``: an L∞ PGD perturbation of ``eps`` (raw intensity units) confined to R's pixels (no N), on the
first ``pgd_size`` test scenes (its drops are measured against the clean mIoU of those scenes).
mIoU is measured inside R and outside it on the fixed test scenes, before and after; drop = clean − after;
selectivity = mean drop inside / mean drop outside (null when the outside drop is below 0.001: undefined).
Ranked methods and PGD are repeated over ``seeds`` (each seed draws its own rank scenes / PGD start).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from poschan.control.pgd import masked_pgd
from poschan.data.canvas import canvas_side
from poschan.data.regions import check_region, opposite, region_box, region_mask
from poschan.data.scenes import ITEM_SIDE
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
    scene_features,
    shift_ranking,
)
from poschan.locate.ranking import ranking_order
from poschan.metrics.segmentation import ConfusionMeter
from poschan.report.segmentation_figures import overlays, region_heatmap
from poschan.runtime import resolve_device
from poschan.stats import summarize
from poschan.tables import write_csv
from poschan.taps import masked

EXPERIMENT = "attack"
HELP = "region-specific attack: zero one region's position channels (and masked PGD); mIoU inside vs outside"
METHODS = ("flip", "shift", "flip-opposite", "shift-opposite", "random", "pgd")
FLIP_SIDES = {"left": "left", "right": "left", "top": "top", "bottom": "top"}  # region -> where the rank scenes lie
MIN_OUTSIDE_DROP = 1e-3


@dataclass
class Config(SegEvalConfig):
    region: list[str] = field(default_factory=lambda: ["left", "right"])
    n: list[str] = field(default_factory=lambda: ["25%"])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    grid: int = 3
    eps: float = 0.1
    pgd_steps: int = 10
    pgd_size: int = 500  # PGD runs on the first pgd_size test scenes (its clean mIoU too): a full backward per step

    def validate(self) -> None:
        super().validate()
        if not self.region:
            raise UserError("--region needs at least one region, e.g. left")
        for r in self.region:
            check_region(r, self.grid)
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise UserError(f"unknown methods {unknown}; allowed: {', '.join(METHODS)}")
        if self.eps < 0 or self.pgd_steps < 1 or self.pgd_size < 1:
            raise UserError(f"eps must be >= 0, pgd_steps and pgd_size >= 1, got eps={self.eps}, "
                            f"pgd_steps={self.pgd_steps}, pgd_size={self.pgd_size}")


@dataclass
class AttackPlan:
    config: Config
    loaded: LoadedModel
    channels: int
    counts: list[int]
    test: EvalSet
    device: torch.device


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_eval_arguments(p)
    p.add_argument("--region", type=lambda s: [v for v in s.split(",") if v.strip()],
                   help="regions, comma-separated: left, right, top, bottom, center, q1..q4, cell:I")
    p.add_argument("--methods", type=lambda s: [v for v in s.split(",") if v.strip()],
                   help=f"subset of {','.join(METHODS)}")
    p.add_argument("--grid", type=int, help="k of the k×k grid of cell:I regions and of the shift ranking")
    p.add_argument("--eps", type=float, help="PGD L∞ budget in raw intensity units (images in [0, 1])")
    p.add_argument("--pgd-steps", dest="pgd_steps", type=int, help="PGD steps")
    p.add_argument("--pgd-size", dest="pgd_size", type=int, help="test scenes attacked by PGD (the first N)")


def prepare(config: Config) -> AttackPlan:
    config.validate()
    device = resolve_device(config.device)
    loaded = load_seg_checkpoint(config.checkpoint, device, config.data_root)
    side = loaded.data.scenes.side
    for r in config.region:
        y0, y1, x0, x1 = region_box(r, side, config.grid)
        if y1 <= y0 or x1 <= x0:
            raise UserError(f"region {r!r} is empty on a {side}×{side} scene")
    if loaded.data.synthetic and any(m.startswith("shift") for m in config.methods):
        canvas_side(config.grid, ITEM_SIDE, side)  # the shift ranking pastes items in a grid×grid layout
    test = loaded.data.test_set(config.test_size)
    with torch.no_grad():
        channels = loaded.model.features(test.images[:1].to(device)).shape[1]
    return AttackPlan(config, loaded, channels, parse_counts(config.n, channels), test, device)


class _Rankings:
    """Channel scores per (method, seed), computed on first use."""

    def __init__(self, plan: AttackPlan):
        self.plan, self.cache = plan, {}

    def scores(self, method: str, region: str, seed: int) -> Tensor | None:
        c, loaded = self.plan.config, self.plan.loaded
        if method == "flip":
            if region not in FLIP_SIDES:
                return None
            key = ("flip", FLIP_SIDES[region], seed)
            if key not in self.cache:
                self.cache[key] = flip_ranking(loaded.model, loaded.data, region=FLIP_SIDES[region],
                                               count=c.rank_scenes, seed=seed, batch_size=c.batch_size,
                                               device=self.plan.device)
        else:
            key = ("shift", "", seed)
            if key not in self.cache:
                self.cache[key] = shift_ranking(loaded.model, loaded.data, grid=c.grid, count=c.rank_scenes,
                                                seed=seed, batch_size=c.batch_size, device=self.plan.device)
        scores = self.cache[key]
        return None if scores is None else scores.get(region)


def _in_out(plan: AttackPlan, feats: Tensor, masks: Tensor, inside: Tensor, edit=None) -> tuple[float, float]:
    """mIoU inside and outside the region of the head's predictions from (edited) cached features."""
    meter = evaluate_features(plan.loaded.model, feats, masks, plan.config.batch_size, plan.device, edit,
                              {"in": inside, "out": ~inside})
    return meter.miou("in"), meter.miou("out")


def _pgd_in_out(plan: AttackPlan, inside: Tensor, seed: int) -> tuple[float, float, Tensor]:
    """mIoU inside / outside after masked PGD on the first ``pgd_size`` test scenes; also the adversarial
    predictions of the first 4."""
    c, model = plan.config, plan.loaded.model
    mean, std = (torch.tensor(v, device=plan.device).view(-1, 1, 1) for v in (plan.test.mean, plan.test.std))
    generator = torch.Generator().manual_seed(seed)
    meter = ConfusionMeter(model.num_classes, {"in": inside, "out": ~inside})
    first = None
    for i in range(0, min(c.pgd_size, len(plan.test.images)), c.batch_size):
        end = min(i + c.batch_size, c.pgd_size)
        x, y = plan.test.images[i:end].to(plan.device), plan.test.masks[i:end]
        adv = masked_pgd(model, x, y.to(plan.device), inside.to(plan.device), eps=c.eps / std, steps=c.pgd_steps,
                         lower=(0 - mean) / std, upper=(1 - mean) / std, generator=generator)
        with torch.no_grad():
            pred = model(adv).argmax(1).cpu()
        meter.update(pred, y)
        first = pred[:4] if first is None else first
    return meter.miou("in"), meter.miou("out"), first


def _row(region: str, n: int | None, method: str, clean: tuple[float, float], after: list[tuple[float, float]]) -> dict:
    ins, outs = [a[0] for a in after], [a[1] for a in after]
    drop_in = summarize([clean[0] - v for v in ins])
    drop_out = summarize([clean[1] - v for v in outs])
    selectivity = drop_in["mean"] / drop_out["mean"] if drop_out["mean"] >= MIN_OUTSIDE_DROP else None
    return {"region": region, "n": n, "method": method, "miou_in_clean": clean[0], "miou_out_clean": clean[1],
            "miou_in": summarize(ins), "miou_out": summarize(outs), "drop_in": drop_in, "drop_out": drop_out,
            "selectivity": selectivity}


def run(plan: AttackPlan, work: Path, *, progress: bool = True) -> dict:
    c, model = plan.config, plan.loaded.model
    side = plan.loaded.data.scenes.side
    feats = scene_features(model, plan.test.images, c.batch_size, plan.device)
    rankings = _Rankings(plan)
    rows = []
    for region in c.region:
        inside = region_mask(region, side, c.grid)
        clean = _in_out(plan, feats, plan.test.masks, inside)
        examples = {"clean": None}
        for n in plan.counts:
            for method in c.methods:
                if method == "pgd":
                    continue
                if method == "random":
                    draws = [torch.randperm(plan.channels, generator=torch.Generator().manual_seed(1000 * n + r))[:n]
                             for r in range(c.random_seeds)]
                else:
                    base, _, control = method.partition("-")
                    target = opposite(region, c.grid) if control else region
                    if target is None:
                        continue
                    scored = [rankings.scores(base, target, s) for s in c.seeds]
                    if any(s is None for s in scored):
                        continue
                    draws = [ranking_order(s)[:n] for s in scored]
                after = [_in_out(plan, feats, plan.test.masks, inside, lambda f, d=d: masked(f, d)) for d in draws]
                rows.append({**_row(region, n, method, clean, after), "channels": [d.tolist() for d in draws]})
                if method in ("flip", "shift") and method not in examples:
                    with torch.no_grad():
                        f = masked(feats[:4].to(plan.device), draws[0])
                        examples[method] = model.decode(f, plan.test.masks.shape[-2:]).argmax(1).cpu()
        if "pgd" in c.methods:
            results = [_pgd_in_out(plan, inside, s) for s in c.seeds]
            subset = slice(0, c.pgd_size)
            clean_subset = _in_out(plan, feats[subset], plan.test.masks[subset], inside)
            rows.append(_row(region, None, "pgd", clean_subset, [(r[0], r[1]) for r in results]))
            examples["pgd"] = results[0][2]
        with torch.no_grad():
            examples["clean"] = model.decode(feats[:4].to(plan.device), plan.test.masks.shape[-2:]).argmax(1).cpu()
        overlays(plan.test.images[:4], plan.test.masks[:4], examples, work / f"overlays_{region.replace(':', '')}.png",
                 class_names=plan.test.classes, region=inside)
    write_csv(work / "table.csv", [{"region": r["region"], "n": r["n"], "method": r["method"],
                                    "miou_in_clean": r["miou_in_clean"], "miou_in": r["miou_in"]["mean"],
                                    "miou_out_clean": r["miou_out_clean"], "miou_out": r["miou_out"]["mean"],
                                    "drop_in": r["drop_in"]["mean"], "drop_out": r["drop_out"]["mean"],
                                    "selectivity": r["selectivity"]} for r in rows])
    region_heatmap(rows, work / "regions.png", title=f"{model.spec.model} · {describe(plan.loaded.data)}")
    return {"attack": rows, "channels": plan.channels, "test_images": len(plan.test.images), "eps": c.eps,
            "pgd_steps": c.pgd_steps, "seeds": list(c.seeds), "random_seeds": c.random_seeds}


def print_summary(metrics: dict) -> None:
    print(f"{'region':<8} {'N':>4} {'method':<15} {'mIoU in':>15} {'mIoU out':>15} {'drop in':>8} {'drop out':>8} "
          f"{'select.':>7}")
    for r in metrics["attack"]:
        sel = "—" if r["selectivity"] is None else f"{r['selectivity']:.2f}"
        print(f"{r['region']:<8} {r['n'] if r['n'] is not None else '—':>4} {r['method']:<15} "
              f"{r['miou_in_clean']:.3f}→{r['miou_in']['mean']:.3f} {r['miou_out_clean']:.3f}→{r['miou_out']['mean']:.3f} "
              f"{r['drop_in']['mean']:>8.3f} {r['drop_out']['mean']:>8.3f} {sel:>7}")
