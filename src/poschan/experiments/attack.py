"""`poschan attack`: the region-specific attack. Zero the channels ranked for one region; does the segmentation
break mostly there? Beside it, a pixel-space masked PGD attack confined to the same region.

For each region R (poschan.regions) and each N, channel sets:
- ``flip`` (R in left/right/top/bottom): the signed flip score ``R`` on rank-split scenes whose items all lie in
  the left (top) half (poschan.ranking, image input: ``left`` = fires more for content on the left);
- ``shift``: the shift score of region R (items pasted in every cell of a grid over the scene canvas);
- ``flip-opposite`` / ``shift-opposite``: the opposite region's channels, same method (control);
- ``random``: N random channels, ``random_seeds`` draws (control);
and ``pgd``: an L∞ PGD perturbation of ``eps`` (raw intensity units) confined to R's pixels (no N), on the
first ``pgd_size`` test scenes (its drops are measured against the clean scores of those scenes).
Three metrics are measured inside R and outside it on the fixed test scenes, before and after: ``miou`` (the mean IoU
over the classes present in that part's target, metrics.segmentation.miou_present_of: a half of a scene holds few
classes, and a stray predicted pixel of an absent one must not move its score), ``pixel_accuracy`` and ``fw_iou``
(frequency-weighted IoU). For each, drop = clean − after (a paired difference on the same images) and selectivity =
drop inside − drop outside (a paired estimate with its p-value); the row keys ``miou_in`` / ``miou_in_clean`` ...,
``drop_in`` / ``drop_out`` / ``selectivity`` (mIoU) and ``pixel_accuracy_drop_in`` ..., ``fw_iou_selectivity``.
``drop_ratio`` = mIoU drop inside / drop outside where the outside drop's interval excludes 0. Ranked methods and PGD
are repeated over ``seeds`` (each seed draws its own rank scenes / PGD start). Every interval is a bootstrap over the
units and the test images (poschan.stats, from per-image confusions): the trained networks of a seg-train run
(``--checkpoint RUN``: every ``seed<S>/checkpoint.pt``; each network's seeds or draws pooled), so that intervals
cover training variation; with one network, its ranking seeds, random draws or PGD seeds (as the method says).
``metrics["comparisons"]``: for each ranked method, its mIoU drop inside and its mIoU selectivity minus the random
control's, and its selectivity minus its opposite control's, with p-values.

The segmenters: a `seg-train` run or checkpoint, or ``--model`` / ``--weights`` / ``--layer`` (any segmentation network,
poschan.models.segmentation.load_segmenter). The method is ``poschan.control.attack.region_attack``; the
rankings (poschan.locate.segmentation) are saved as ``ranking_flip_<side>.json`` / ``ranking_shift.json`` (in
``network<i>/`` when there are several networks).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from poschan import stats
from poschan.config import command_defaults, setting
from poschan.control.ablation import SegEval, channel_counts
from poschan.control.attack import AttackArm, region_attack
from poschan.data.canvas import canvas_side
from poschan.data.regions import check_region, region_box, region_mask
from poschan.data.scenes import ITEM_SIDE
from poschan.errors import UserError
from poschan.experiments.seg_common import (
    ITEMS,
    NETWORKS,
    LoadedModel,
    beside,
    comparison,
    describe,
    drop,
    halves_difference_of,
    load_networks,
    one_model,
    ranked_minus_random,
    score,
)
from poschan.experiments.settings import GridSettings, MethodsSettings, SegEvalSettings
from poschan.locate.ranking import ChannelRanking
from poschan.locate.segmentation import segmenter_ranking
from poschan.metrics.segmentation import fw_iou_of, miou_present_of, pixel_accuracy_of
from poschan.report.segmentation_figures import overlays, region_heatmap
from poschan.runtime import resolve_device
from poschan.tables import comparison_rows, write_csv

EXPERIMENT = "attack"
HELP = "region-specific attack: zero one region's position channels (and masked PGD); mIoU inside vs outside"
METRICS: dict[str, stats.Metric] = {"miou": miou_present_of, "pixel_accuracy": pixel_accuracy_of, "fw_iou": fw_iou_of}
SELECTIVITY = halves_difference_of(miou_present_of)  # of beside(in, out) rows: mIoU inside − mIoU outside
METHODS = ("flip", "shift", "flip-opposite", "shift-opposite", "random", "pgd")
FLIP_SIDES = {"left": "left", "right": "left", "top": "top", "bottom": "top"}  # region -> where the rank scenes lie


@dataclass
@command_defaults
class Config(GridSettings, MethodsSettings, SegEvalSettings):
    DEFAULTS: ClassVar[dict] = {"n": ["25%"], "methods": list(METHODS)}
    FLAGS: ClassVar[dict] = {"methods": {"help": f"subset of {','.join(METHODS)}"},
                             "checkpoint": {"help": "a seg-train run (every seed<S>/checkpoint.pt in it) or one "
                                                    "checkpoint"},
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
    networks: list[LoadedModel]
    sources: list[str]  # each network's checkpoint, or the --model
    counts: list[int]
    device: torch.device


def prepare(config: Config) -> AttackPlan:
    config.validate()
    device = resolve_device(config.device)
    networks, sources = load_networks(config, device)
    loaded = networks[0]
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
    return AttackPlan(config, networks, sources, channel_counts(config.n, loaded.channels), device)


class _Rankings:
    """One network's ChannelRanking of each (method, side), computed on first use (every seed) and saved in
    ``work``."""

    def __init__(self, plan: AttackPlan, loaded: LoadedModel, work: Path):
        self.plan, self.loaded, self.work, self.cache = plan, loaded, work, {}

    def get(self, method: str, region: str) -> ChannelRanking | None:
        c, loaded = self.plan.config, self.loaded
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
                self.work.mkdir(parents=True, exist_ok=True)
                ranking.save(self.work / f"ranking_{method}{'_' + side if side else ''}.json")
            self.cache[(method, side)] = ranking
        return self.cache[(method, side)]


UNITS = {"random": "random draws", "pgd": "PGD seeds"}  # else: ranking seeds


@dataclass
class _Units:
    """One arm (region, method, N) over the units of its statistics: with one network its ranking seeds, random
    draws or PGD seeds; with several, the networks (each one's seeds or draws pooled: their mean counts)."""

    clean: list[dict[str, np.ndarray]]  # per unit: the clean per-image counts inside / outside
    after: list[dict[str, np.ndarray]]  # per unit: after the edit
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
        return [beside(a["in"], a["out"]) for a in self.after]

    def note(self, stat: dict) -> dict:
        return one_model(stat, self.networks)


def _prefix(metric: str) -> str:
    """The prefix of a metric's drop and selectivity keys: none for mIoU (``drop_in``, ``selectivity``)."""
    return "" if metric == "miou" else f"{metric}_"


def _row(arms: list[AttackArm], clean: dict) -> dict:
    """The statistics of one arm over its units; ``clean``: the clean scores of its images (``_clean``)."""
    arm, u = arms[0], _Units.of(arms)
    after = {side: [a[side] for a in u.after] for side in ("in", "out")}
    # clean beside after, per unit: halves_difference_of(metric) is the metric's drop
    pairs = {side: [beside(c[side], a[side]) for c, a in zip(u.clean, u.after)] for side in ("in", "out")}
    row = {"region": arm.region, "n": arm.n, "method": arm.method, **clean}
    for name, metric in METRICS.items():
        for side in ("in", "out"):
            row[f"{name}_{side}"] = u.note(score(after[side], u.unit, metric))
            row[f"{_prefix(name)}drop_{side}"] = u.note(drop([c[side] for c in u.clean], after[side], u.unit, metric))
        row[f"{_prefix(name)}selectivity"] = u.note(stats.paired_difference(
            pairs["in"], pairs["out"], halves_difference_of(metric), bounds=(-2.0, 2.0), unit=u.unit, item=ITEMS))
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
            out.append(comparison(
                ranked_minus_random([a["in"] for a in mine.after], [a["in"] for a in random.after], miou_present_of,
                                    bounds=(-1.0, 1.0), random_unit=random.unit, **versus),
                f"{arm.region}_n{arm.n}_{arm.method}_vs_random_drop_in", f"{label}: mIoU drop inside",
                f"{arm.n} random channels: mIoU drop inside",
                f"Do the {arm.method} channels of {where} lower the mIoU inside it more than as many random ones?"))
            out.append(comparison(
                ranked_minus_random(mine.sides(), random.sides(), SELECTIVITY, bounds=(-2.0, 2.0),
                                    random_unit=random.unit, **versus),
                f"{arm.region}_n{arm.n}_{arm.method}_vs_random_selectivity", f"{label}: drop inside − outside",
                f"{arm.n} random channels: drop inside − outside",
                f"Is masking the {arm.method} channels of {where} more selective for it than as many random ones?"))
        if mirror is not None:
            out.append(comparison(
                ranked_minus_random(mine.sides(), mirror.sides(), SELECTIVITY, bounds=(-2.0, 2.0),
                                    random_unit=mirror.unit, **versus),
                f"{arm.region}_n{arm.n}_{arm.method}_vs_opposite_selectivity", f"{label}: drop inside − outside",
                f"{arm.method} channels of the opposite region: drop inside − outside",
                f"Is masking the {arm.method} channels of {where} more selective for it than masking the "
                "opposite region's?"))
    return out


def _table_row(row: dict) -> dict:
    """A row of table.csv: per metric its clean and after means inside and outside, drops and selectivity (with its
    interval and p-value); the mIoU drop ratio."""
    out = {key: row[key] for key in ("region", "n", "method")}
    for name in METRICS:
        p = _prefix(name)
        out |= {key: row[key]["mean"] for key in (f"{name}_in_clean", f"{name}_in", f"{name}_out_clean",
                                                  f"{name}_out", f"{p}drop_in", f"{p}drop_out", f"{p}selectivity")}
        sel = row[f"{p}selectivity"]
        out |= {f"{p}selectivity_lo": sel["ci95"][0], f"{p}selectivity_hi": sel["ci95"][1],
                f"{p}selectivity_p": sel["p_value"]}
    return {**out, "drop_ratio": row["drop_ratio"].get("mean")}


def run(plan: AttackPlan, work: Path, *, progress: bool = True) -> dict:
    c, first = plan.config, plan.networks[0]
    side = first.data.scenes.side
    many = len(plan.networks) > 1
    bases = [b for b in ("flip", "shift") if any(m.partition("-")[0] == b for m in c.methods)]
    evaluations = [(SegEval(net.module, net.layer, net.model_test, batch_size=c.batch_size, device=plan.device),
                    _Rankings(plan, net, work / f"network{i}" if many else work))
                   for i, net in enumerate(plan.networks)]
    rows, comparisons = [], []
    for region in c.region:
        results = [region_attack(net.module, net.layer, {b: rankings.get(b, region) for b in bases}, ev, region,
                                 plan.counts, grid=c.grid, methods=c.methods, random_draws=c.random_seeds,
                                 control_seed=i,
                                 pgd_eps=c.eps, pgd_steps=c.pgd_steps, pgd_size=c.pgd_size, pgd_seeds=c.seeds,
                                 mean=net.model_test.mean, std=net.model_test.std, examples=4)
                   for i, (net, (ev, rankings)) in enumerate(zip(plan.networks, evaluations))]
        arms = [list(same) for same in zip(*(r.arms for r in results))]  # per arm: that arm of every network
        clean = {}  # the clean estimates of the test images, and of PGD's
        rows += [_row(same, clean.setdefault(same[0].method == "pgd", _clean(same))) for same in arms]
        comparisons += _comparisons(arms)
        examples = {"clean": results[0].clean_examples}
        for arm in results[0].arms:
            if arm.method in ("flip", "shift", "pgd") and arm.method not in examples:
                examples[arm.method] = arm.examples
        overlays(first.test.images[:4], first.test.masks[:4], examples,
                 work / f"overlays_{region.replace(':', '')}.png", class_names=first.test.classes,
                 region=region_mask(region, side, c.grid))
    write_csv(work / "table.csv", [_table_row(r) for r in rows])
    write_csv(work / "comparisons.csv", comparison_rows(comparisons))
    region_heatmap(rows, work / "regions.png", title=f"{first.label()} · {describe(first.data)} · "
                   f"{len(plan.networks)} network(s)")
    return {"attack": rows, "comparisons": comparisons, "channels": first.channels, "layer": first.layer,
            "networks": len(plan.networks), "checkpoints": plan.sources, "test_images": len(first.model_test.images),
            "eps": c.eps, "pgd_steps": c.pgd_steps, "seeds": list(c.seeds), "random_seeds": c.random_seeds}


def print_summary(metrics: dict) -> None:
    print(f"{'region':<8} {'N':>4} {'method':<15} {'mIoU in':>11} {'mIoU out':>11} {'drop in':>8} {'drop out':>8} "
          f"{'mIoU in − out':>24} {'p':>6} {'acc in − out':>13} {'fwIoU in − out':>15}")
    for r in metrics["attack"]:
        sel = r["selectivity"]
        print(f"{r['region']:<8} {r['n'] if r['n'] is not None else '—':>4} {r['method']:<15} "
              f"{r['miou_in_clean']['mean']:.3f}→{r['miou_in']['mean']:.3f} "
              f"{r['miou_out_clean']['mean']:.3f}→{r['miou_out']['mean']:.3f} "
              f"{r['drop_in']['mean']:>8.3f} {r['drop_out']['mean']:>8.3f} "
              f"{sel['mean']:>+8.3f} [{sel['ci95'][0]:+.3f}, {sel['ci95'][1]:+.3f}] {stats.p_text(sel):>6} "
              f"{r['pixel_accuracy_selectivity']['mean']:>+13.3f} {r['fw_iou_selectivity']['mean']:>+15.3f}")
