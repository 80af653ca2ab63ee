"""`poschan attack`: the region-specific attack. Zero the channels ranked for one region; does the segmentation
break mostly there? Beside it, a pixel-space masked PGD attack confined to the same region.

For each region (poschan.data.regions) and N: the ``flip`` channels of the region (halves only) and its ``shift``
channels (``locate.segmenter_rankings.region_rankings``; saved as ``ranking_flip_<side>.json`` /
``ranking_shift.json``, in ``network<i>/`` for several networks), the opposite region's (``-opposite``), N
``random`` channels, and ``pgd`` (L∞ budget ``eps`` in raw intensity units, on the first ``pgd_size`` test
scenes). The segmenters as for `ablate`; the method and its statistics: ``control.attack.compare_regions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from poschan.config import command_defaults, setting
from poschan.control.ablation import channel_counts
from poschan.control.attack import METRICS, compare_regions, metric_prefix
from poschan.data.regions import check_region, region_mask
from poschan.errors import UserError
from poschan.experiments.ablate import load_networks
from poschan.experiments.settings import GridSettings, MethodsSettings, SegEvalSettings
from poschan.locate.segmenter_rankings import check_regions, region_rankings
from poschan.models.segmenters import LoadedSegmenter, describe
from poschan.report.segmentation_figures import overlays, region_heatmap
from poschan.runtime import resolve_device
from poschan.tables import comparison_rows, flat_stats, format_stat, print_comparisons, write_csv

EXPERIMENT = "attack"
HELP = "region-specific attack: zero one region's position channels (and masked PGD); mIoU inside vs outside"
METHODS = ("flip", "shift", "flip-opposite", "shift-opposite", "random", "pgd")


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
    networks: list[LoadedSegmenter]
    counts: list[int]
    device: torch.device


def prepare(config: Config) -> AttackPlan:
    config.validate()
    device = resolve_device(config.device)
    networks = load_networks(config, device)
    check_regions(networks[0], config.region, config.methods, config.grid)
    return AttackPlan(config, networks, channel_counts(config.n, networks[0].channels), device)


def run(plan: AttackPlan, work: Path, *, progress: bool = True) -> dict:
    c, first = plan.config, plan.networks[0]
    kw = dict(batch_size=c.batch_size, device=plan.device)
    rankings = [region_rankings(net, c.region, c.methods, grid=c.grid, count=c.rank_scenes, seeds=c.seeds, **kw)
                for net in plan.networks]
    for i, ranked in enumerate(rankings):
        folder = work / f"network{i}" if len(plan.networks) > 1 else work
        for name, ranking in ranked.files().items():
            folder.mkdir(parents=True, exist_ok=True)
            ranking.save(folder / name)
    result = compare_regions(plan.networks, rankings, c.region, plan.counts, grid=c.grid, methods=c.methods,
                             random_draws=c.random_seeds, pgd_eps=c.eps, pgd_steps=c.pgd_steps, pgd_size=c.pgd_size,
                             pgd_seeds=c.seeds, examples=4, **kw)
    for region, shown in result.examples.items():
        overlays(first.test.images[:4], first.test.masks[:4], shown, work / f"overlays_{region.replace(':', '')}.png",
                 class_names=first.test.classes, region=region_mask(region, first.data.scenes.side, c.grid))
    write_csv(work / "table.csv", [_table_row(r) for r in result.rows])
    write_csv(work / "comparisons.csv", comparison_rows(result.comparisons))
    region_heatmap(result.rows, work / "regions.png", title=f"{first.label()} · {describe(first.data)} · "
                   f"{result.networks} network(s)")
    return {"attack": result.rows, "comparisons": result.comparisons, "channels": result.channels,
            "layer": result.layer, "networks": result.networks, "checkpoints": [net.source for net in plan.networks],
            "test_images": len(first.model_test.images), "eps": c.eps, "pgd_steps": c.pgd_steps,
            "seeds": list(c.seeds), "random_seeds": c.random_seeds}


def _table_row(row: dict) -> dict:
    """A row of table.csv: per metric its clean and after means inside and outside and its drops; its selectivity
    with interval and p-value; the mIoU drop ratio."""
    out = {key: row[key] for key in ("region", "n", "method")}
    for name in METRICS:
        p = metric_prefix(name)
        out |= {key: row[key]["mean"] for key in (f"{name}_in_clean", f"{name}_in", f"{name}_out_clean",
                                                  f"{name}_out", f"{p}drop_in", f"{p}drop_out")}
        out[f"{p}selectivity"] = row[f"{p}selectivity"]
    return flat_stats({**out, "drop_ratio": row["drop_ratio"].get("mean")})


def print_summary(metrics: dict) -> None:
    for r in metrics["attack"]:
        print(f"{r['region']:<8} N {r['n'] if r['n'] is not None else '—':>4} {r['method']:<15} mIoU in "
              f"{r['miou_in_clean']['mean']:.3f}→{r['miou_in']['mean']:.3f}, out "
              f"{r['miou_out_clean']['mean']:.3f}→{r['miou_out']['mean']:.3f}; drop in − out "
              f"{format_stat(r['selectivity'], signed=True, p=True)}")
    print_comparisons(metrics["comparisons"])
