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

The segmenter: a `seg-train` checkpoint, or ``--model`` / ``--weights`` / ``--layer`` (any segmentation network,
poschan.models.segmentation.load_segmenter). The method is ``poschan.control.attack.region_attack``; the
rankings (poschan.locate.segmentation) are saved as ``ranking_flip_<side>.json`` / ``ranking_shift.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from poschan.config import command_defaults, setting
from poschan.control.ablation import SegEval, channel_counts
from poschan.control.attack import MIN_OUTSIDE_DROP, AttackArm, region_attack
from poschan.data.canvas import canvas_side
from poschan.data.regions import check_region, region_box, region_mask
from poschan.data.scenes import ITEM_SIDE
from poschan.errors import UserError
from poschan.experiments.seg_common import LoadedModel, describe, load_model
from poschan.experiments.settings import GridSettings, MethodsSettings, SegEvalSettings
from poschan.locate.ranking import ChannelRanking
from poschan.locate.segmentation import segmenter_ranking
from poschan.report.segmentation_figures import overlays, region_heatmap
from poschan.runtime import resolve_device
from poschan.stats import summarize
from poschan.tables import write_csv

EXPERIMENT = "attack"
HELP = "region-specific attack: zero one region's position channels (and masked PGD); mIoU inside vs outside"
METHODS = ("flip", "shift", "flip-opposite", "shift-opposite", "random", "pgd")
FLIP_SIDES = {"left": "left", "right": "left", "top": "top", "bottom": "top"}  # region -> where the rank scenes lie


@dataclass
@command_defaults
class Config(GridSettings, MethodsSettings, SegEvalSettings):
    DEFAULTS: ClassVar[dict] = {"n": ["25%"], "methods": list(METHODS)}
    FLAGS: ClassVar[dict] = {"methods": {"help": f"subset of {','.join(METHODS)}"},
                             "grid": {"help": "k of the k×k grid of cell:I regions and of the shift ranking"}}

    region: list[str] = setting(["left", "right"],
                                "regions, comma-separated: left, right, top, bottom, center, q1..q4, cell:I")
    eps: float = setting(0.1, "PGD L∞ budget in raw intensity units (images in [0, 1])")
    pgd_steps: int = setting(10, "PGD steps")
    # PGD runs on the first pgd_size test scenes (its clean mIoU too): a full backward per step
    pgd_size: int = setting(500, "test scenes attacked by PGD (the first N)")

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
    counts: list[int]
    device: torch.device


def prepare(config: Config) -> AttackPlan:
    config.validate()
    device = resolve_device(config.device)
    loaded = load_model(config, device)
    data = loaded.data
    side = data.scenes.side
    for r in config.region:
        y0, y1, x0, x1 = region_box(r, side, config.grid)
        if y1 <= y0 or x1 <= x0:
            raise UserError(f"region {r!r} is empty on a {side}×{side} scene")
        if data.synthetic and r in FLIP_SIDES and any(m.startswith("flip") for m in config.methods):
            dataclasses.replace(data.scenes, region=FLIP_SIDES[r]).validate()  # rank scenes: items in that half
    if data.synthetic and any(m.startswith("shift") for m in config.methods):
        canvas_side(config.grid, ITEM_SIDE, side)  # the shift ranking pastes items in a grid×grid layout
    return AttackPlan(config, loaded, channel_counts(config.n, loaded.channels), device)


class _Rankings:
    """The ChannelRanking of each (method, side), computed on first use (every seed) and saved beside the results."""

    def __init__(self, plan: AttackPlan, work: Path):
        self.plan, self.work, self.cache = plan, work, {}

    def get(self, method: str, region: str) -> ChannelRanking | None:
        c, loaded = self.plan.config, self.plan.loaded
        seg = loaded.segmenter
        if method == "flip" and region not in FLIP_SIDES:
            return None
        side = FLIP_SIDES[region] if method == "flip" else None
        if (method, side) not in self.cache:
            ranking = segmenter_ranking(seg.module, seg.layer, loaded.data, method, region=side, grid=c.grid,
                                        count=c.rank_scenes, seeds=c.seeds, batch_size=c.batch_size,
                                        device=self.plan.device, in_chans=seg.in_chans, input_norm=seg.input_norm,
                                        model_name=seg.name)
            if ranking is not None:
                ranking.save(self.work / f"ranking_{method}{'_' + side if side else ''}.json")
            self.cache[(method, side)] = ranking
        return self.cache[(method, side)]


def _row(arm: AttackArm) -> dict:
    ins, outs = [a[0] for a in arm.after], [a[1] for a in arm.after]
    drop_in = summarize(arm.drop_in)
    drop_out = summarize(arm.drop_out)
    selectivity = drop_in["mean"] / drop_out["mean"] if drop_out["mean"] >= MIN_OUTSIDE_DROP else None
    row = {"region": arm.region, "n": arm.n, "method": arm.method, "miou_in_clean": arm.clean[0],
           "miou_out_clean": arm.clean[1], "miou_in": summarize(ins), "miou_out": summarize(outs), "drop_in": drop_in,
           "drop_out": drop_out, "selectivity": selectivity}
    return row if arm.method == "pgd" else {**row, "channels": arm.channels}


def run(plan: AttackPlan, work: Path, *, progress: bool = True) -> dict:
    c, loaded = plan.config, plan.loaded
    seg, test = loaded.segmenter, loaded.model_test
    side = loaded.data.scenes.side
    ev = SegEval(seg.module, seg.layer, test, batch_size=c.batch_size, device=plan.device)
    rankings = _Rankings(plan, work)
    bases = [b for b in ("flip", "shift") if any(m.partition("-")[0] == b for m in c.methods)]
    rows = []
    for region in c.region:
        result = region_attack(seg.module, seg.layer, {b: rankings.get(b, region) for b in bases}, ev, region,
                               plan.counts, grid=c.grid, methods=c.methods, random_draws=c.random_seeds,
                               pgd_eps=c.eps, pgd_steps=c.pgd_steps, pgd_size=c.pgd_size, pgd_seeds=c.seeds,
                               mean=test.mean, std=test.std, examples=4)
        rows += [_row(arm) for arm in result.arms]
        examples = {"clean": result.clean_examples}
        for arm in result.arms:
            if arm.method in ("flip", "shift", "pgd") and arm.method not in examples:
                examples[arm.method] = arm.examples
        overlays(loaded.test.images[:4], loaded.test.masks[:4], examples,
                 work / f"overlays_{region.replace(':', '')}.png", class_names=loaded.test.classes,
                 region=region_mask(region, side, c.grid))
    write_csv(work / "table.csv", [{"region": r["region"], "n": r["n"], "method": r["method"],
                                    "miou_in_clean": r["miou_in_clean"], "miou_in": r["miou_in"]["mean"],
                                    "miou_out_clean": r["miou_out_clean"], "miou_out": r["miou_out"]["mean"],
                                    "drop_in": r["drop_in"]["mean"], "drop_out": r["drop_out"]["mean"],
                                    "selectivity": r["selectivity"]} for r in rows])
    region_heatmap(rows, work / "regions.png", title=f"{loaded.label()} · {describe(loaded.data)}")
    return {"attack": rows, "channels": loaded.channels, "layer": seg.layer, "test_images": len(test.images),
            "eps": c.eps, "pgd_steps": c.pgd_steps, "seeds": list(c.seeds), "random_seeds": c.random_seeds}


def print_summary(metrics: dict) -> None:
    print(f"{'region':<8} {'N':>4} {'method':<15} {'mIoU in':>15} {'mIoU out':>15} {'drop in':>8} {'drop out':>8} "
          f"{'select.':>7}")
    for r in metrics["attack"]:
        sel = "—" if r["selectivity"] is None else f"{r['selectivity']:.2f}"
        print(f"{r['region']:<8} {r['n'] if r['n'] is not None else '—':>4} {r['method']:<15} "
              f"{r['miou_in_clean']:.3f}→{r['miou_in']['mean']:.3f} {r['miou_out_clean']:.3f}→{r['miou_out']['mean']:.3f} "
              f"{r['drop_in']['mean']:>8.3f} {r['drop_out']['mean']:>8.3f} {sel:>7}")
