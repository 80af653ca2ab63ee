"""`poschan gap-study`: does position survive global pooling, and does it live in channel order?

Trains the grid of (task, head, padding, grid, permutation) variants with the training engine and reports the
test accuracy of each over seeds; every (variant, seed) is an independent job of poschan.executor (one after
another here, on local worker processes, or through Ray). The channel permutation has three meanings, each
supporting its own claim (see PERMUTE_MEANINGS); the test-only variant (a) needs no training of its own: it is the
normally trained net evaluated with a permutation inserted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from poschan.config import command_defaults, setting
from poschan.data.sources import ImageSet
from poschan.data.stream import CanvasStream
from poschan.errors import UserError
from poschan.executor import Job, run_command_jobs
from poschan.experiments import train
from poschan.experiments.settings import (
    BackgroundSettings,
    DataSettings,
    ExecutorSettings,
    ModelSettings,
    PaddingsSettings,
    PretrainedSettings,
    RunSettings,
    TrainingSettings,
    WidthSettings,
)
from poschan.metrics.classification import outcomes
from poschan.report.gap_figures import gap_figures
from poschan.stats import paired_difference, proportion, ratio, summarize, versus_chance
from poschan.tables import comparison_rows, flat_stats, write_csv
from poschan.taps import permute_channels

EXPERIMENT = "gap-study"
HELP = "GAPNet vs PermuteNet: location/semantic accuracy from pooled features across heads, paddings, grids"
TRAINED_PERMUTES = ("none", "per-batch", "per-sample")
PERMUTE_MEANINGS = {
    "none": "no permutation: what the pooled vector tells about the target",
    "test-only": "(a) a normally trained net tested with its channels permuted (fresh permutation per batch): "
                 "a drop shows that its readout relies on channel order",
    "per-batch": "(b) the paper's PermuteNet: a fresh permutation per forward pass, shared by the batch, in "
                 "training and test: what a net can still do when it cannot rely on a fixed channel order",
    "per-sample": "(c) as (b) with a permutation per sample: not even batch-wide order statistics survive",
}


@dataclass(frozen=True)
class Variant:
    """One trained configuration; ``where`` is "pooled" or a stage name (irrelevant when permute is none)."""

    task: str
    head: str
    padding: str
    grid: int
    permute: str = "none"
    where: str = "pooled"

    @property
    def key(self) -> str:
        perm = "none" if self.permute == "none" else f"{self.permute}@{self.where}"
        return f"{self.task}_{self.head}_{self.padding}_g{self.grid}_{perm}"


@dataclass
@command_defaults
class Config(ExecutorSettings, RunSettings, TrainingSettings, PaddingsSettings, BackgroundSettings, DataSettings,
             PretrainedSettings, WidthSettings, ModelSettings):
    # fp32: the paired check did not show bf16 within ±0.01 on every row (results/precision-check)
    DEFAULTS: ClassVar[dict] = {"precision": "fp32"}

    design: str = setting("full", "full (cross product) or subset (designed subset)")
    tasks: list[str] = setting(["location", "semantic"], "comma-separated: location,semantic")
    heads: list[str] = setting(["gap-fc", "gapnet"], "comma-separated: gap-fc,gapnet")
    grids: list[int] = setting([3, 5, 7], "comma-separated grid sizes, e.g. 3,5")
    permutes: list[str] = setting(["per-batch", "per-sample"],
                                  "trained permutations after pooling: per-batch,per-sample")
    stage: str | None = setting("stage3", "stage to permute before as well (e.g. stage3)")
    stage_permutes: list[str] = setting(["per-batch", "per-sample"], "trained permutations before the stage",
                                        cli=False)
    semantic_epochs: int | None = setting(None, "epochs of the semantic rows (default: --epochs)")
    semantic_train_size: int | None = setting(None, "training items per epoch of the semantic rows (default: "
                                                    "--train-size)")

    def validate(self) -> None:
        self.check_executor()
        if self.design not in ("full", "subset"):
            raise UserError(f"design must be 'full' (the cross product) or 'subset' (the designed quick subset), "
                            f"got {self.design!r}")
        for name in ("tasks", "heads", "paddings", "grids"):
            if not getattr(self, name):
                raise UserError(f"{name} must name at least one value")
        for p in [*self.permutes, *self.stage_permutes]:
            if p not in TRAINED_PERMUTES[1:]:
                raise UserError(f"unknown permutation {p!r}; allowed: {', '.join(TRAINED_PERMUTES[1:])}")
        if self.design == "subset" and ("location" not in self.tasks or "zeros" not in self.paddings):
            raise UserError("the subset design needs task 'location' and padding 'zeros'")


def variants(c: Config) -> list[Variant]:
    """The trained variants: the full cross product, or the designed subset (every padding once on location,
    the permutation comparison on every task with zero padding, the GAPNet head, the larger grids)."""
    def permuted(task: str, padding: str, grid: int) -> list[Variant]:
        out = [Variant(task, "gap-fc", padding, grid, p, "pooled") for p in c.permutes]
        if c.stage:
            out += [Variant(task, "gap-fc", padding, grid, p, c.stage) for p in c.stage_permutes]
        return out

    chosen: list[Variant] = []
    if c.design == "full":
        for task in c.tasks:
            for grid in c.grids:
                for padding in c.paddings:
                    chosen += [Variant(task, head, padding, grid) for head in c.heads]
                    chosen += permuted(task, padding, grid) if "gap-fc" in c.heads else []
    else:
        g = c.grids[0]
        chosen += [Variant("location", "gap-fc", p, g) for p in c.paddings]
        for task in c.tasks:
            chosen += [Variant(task, "gap-fc", "zeros", g), *permuted(task, "zeros", g)]
        chosen += [Variant("location", head, "zeros", g) for head in c.heads if head != "gap-fc"]
        chosen += [Variant("location", "gap-fc", "zeros", grid) for grid in c.grids[1:]]
    return list(dict.fromkeys(chosen))


@dataclass
class Plan:
    config: Config
    variants: list[Variant]
    plans: dict[Variant, train.TrainPlan]
    sets: tuple[ImageSet, ImageSet]  # the loaded train and test sets every variant takes its items from


def train_config(c: Config, v: Variant) -> train.Config:
    permute = "none" if v.permute == "none" else v.where
    semantic = v.task == "semantic"  # the semantic rows may get their own budget
    return train.Config(task=v.task, grid=v.grid, background=c.background, data=c.data, data_root=c.data_root,
                        model=c.model, width=c.width, head=v.head, padding=v.padding, permute=permute,
                        permute_per_sample=v.permute == "per-sample", pretrained=c.pretrained, weights=c.weights,
                        epochs=semantic and c.semantic_epochs or c.epochs, batch_size=c.batch_size, lr=c.lr,
                        betas=list(c.betas), train_size=semantic and c.semantic_train_size or c.train_size,
                        test_size=c.test_size, test_passes=c.test_passes, seeds=list(c.seeds), device=c.device,
                        preset=c.preset, **c.schedule_fields())


def prepare(config: Config) -> Plan:
    """Load the data once and validate every variant (each model is built once) before anything is written."""
    chosen = variants(config)
    configs = {v: train_config(config, v) for v in chosen}
    for tc in configs.values():
        tc.validate()
    largest = max(configs.values(), key=lambda tc: tc.train_size or float("inf"))
    train_set, test_set = train.load_data(largest)  # each variant trains on the first train_size items
    plans = {v: variant_plan(tc, train_set, test_set) for v, tc in configs.items()}
    if config.stage:
        _stage_module(plans[chosen[0]].make_model(), config.stage)
    return Plan(config, chosen, plans, (train_set, test_set))


def variant_plan(tc: train.Config, train_set: ImageSet, test_set: ImageSet) -> train.TrainPlan:
    return train.plan_for(tc, train_set.subset(tc.train_size), test_set)


def _test_only(layer_of: Callable[[nn.Module], str]) -> train.Evaluator:
    def score(model: nn.Module, test: CanvasStream, passes: int, device: torch.device) -> torch.Tensor:
        with permute_channels(model, layer_of(model), where="input"):
            return outcomes(model, test, passes=passes, device=device)

    return score


def evaluators(c: Config, v: Variant) -> dict[str, train.Evaluator]:
    """Column name -> scorer: the variant's own accuracy, plus test-only permutations of unpermuted nets."""
    out: dict[str, train.Evaluator] = {"accuracy": train.plain_outcomes}
    if v.permute == "none":
        if v.head == "gap-fc":
            out["test-only@pooled"] = _test_only(lambda m: "head.fc")
        if c.stage:
            out[f"test-only@{c.stage}"] = _test_only(lambda m: f"backbone.{_stage_module(m, c.stage)}")
    return out


def _stage_module(model: nn.Module, stage: str) -> str:
    if stage not in model.stages:
        raise UserError(f"model has no stage {stage!r}; its stages: {', '.join(model.stages) or 'none'}")
    return model.stages[stage]


def _row(v: Variant, permute: str, where: str, hits: list[np.ndarray], chance: float) -> dict:
    return {"task": v.task, "head": v.head, "permute": permute, "where": where if permute != "none" else "-",
            "padding": v.padding, "grid": v.grid, "accuracy": proportion(hits, item="test canvases"),
            "chance": chance, "vs_chance": versus_chance(hits, chance)}


COMPARISON_QUESTIONS = {
    "test-only": "does a normally trained net read the target from its channel order (accuracy lost when its "
                 "channels are permuted at test time)?",
    "per-batch": "what does training with a permutation per batch (PermuteNet) cost against normal training?",
    "per-sample": "what does training with a permutation per sample cost against normal training?",
}


def _retained(permuted: list[np.ndarray], plain: list[np.ndarray], chance: float) -> dict:
    """The share of the unpermuted net's accuracy above chance that the permuted one keeps."""
    return ratio(permuted, plain, lambda means: means[..., 0] - chance, item="test canvases")


def comparisons(plan: Plan, hits: dict[tuple[Variant, str], list[np.ndarray]]) -> list[dict]:
    """Each permuted evaluation against its unpermuted net: the same seeds and the same test canvases
    (a test-only permutation is the same net; a trained one shares the seed and the test stream); with the
    share of above-chance accuracy it retains."""
    chances = {v: 1 / tp.num_classes for v, tp in plan.plans.items()}
    out = []
    for (v, name), permuted in hits.items():
        permute, where = (v.permute, v.where) if name == "accuracy" else tuple(name.split("@"))
        base = Variant(v.task, v.head, v.padding, v.grid)  # the same net for test-only; else its seed twin
        if permute == "none" or (base, "accuracy") not in hits:
            continue
        label = f"{v.task} {v.head} {v.padding} g{v.grid}"
        out.append({"name": f"{v.task}_{v.head}_{v.padding}_g{v.grid}_{permute}@{where}_vs_none",
                    "a": f"{label}, {permute} permutation at {where}", "b": f"{label}, no permutation",
                    "task": v.task, "head": v.head, "permute": permute, "where": where, "padding": v.padding,
                    "grid": v.grid, "question": COMPARISON_QUESTIONS[permute],
                    **paired_difference(permuted, hits[base, "accuracy"], bounds=(-1.0, 1.0),
                                        item="test canvases"),
                    "retained_above_chance": _retained(permuted, hits[base, "accuracy"], chances[v])})
    return out


FLAT_SLOPE = 0.005  # accuracy per epoch: a curve whose slope interval lies inside ±this is flat (0.05 over 10 epochs)


def trend(slope: dict) -> str:
    """A learning curve's end, from the interval of its slope over seeds: "flat within ±X per epoch" (inside
    ±``FLAT_SLOPE``), "rising" or "falling" (excluding 0), else "undetermined" (no interval, or one too wide)."""
    if slope["ci95"] is None:
        return "undetermined"
    lo, hi = slope["ci95"]
    if -FLAT_SLOPE < lo and hi < FLAT_SLOPE:
        return f"flat within ±{FLAT_SLOPE} per epoch"
    if lo > 0:
        return "rising"
    if hi < 0:
        return "falling"
    return "undetermined"


def plateaus(curves: list[dict]) -> list[dict]:
    """Per variant and evaluation trained 3 epochs or more: the last epoch's accuracy over seeds, and the slope of
    the curve over its last third (epochs ``since_epoch``..last, at least 3 points): a least-squares slope per
    seed, Student-t over seeds (``stats.summarize``), and its ``trend``."""
    series: dict[tuple[str, str], dict[int, dict[int, float]]] = {}
    for c in curves:
        series.setdefault((c["variant"], c["eval"]), {}).setdefault(c["seed"], {})[c["epoch"]] = c["accuracy"]
    out = []
    for (variant, name), seeds in series.items():
        last = min(max(s) for s in seeds.values())
        if last < 3:
            continue
        since = last - max(2, last // 3)
        span = np.arange(since, last + 1)
        slopes = [float(np.polyfit(span, [s[e] for e in span], 1)[0]) for s in seeds.values()]
        slope = summarize(slopes, bounds=(-1.0, 1.0))
        out.append({"variant": variant, "eval": name, "epochs": last, "since_epoch": since,
                    "final": summarize([s[last] for s in seeds.values()], bounds=(0.0, 1.0)), "slope": slope,
                    "trend": trend(slope)})
    return out


def train_job(c: Config, v: Variant, sets: tuple[ImageSet, ImageSet], seed: int, work: Path,
              progress: bool) -> tuple[list[dict], dict[str, np.ndarray]]:
    """One (variant, seed), trained (or resumed) in ``work/seed<seed>``: its per-epoch history and each evaluator's
    per-item outcomes, as plain data that any worker can return. The job plans its variant itself, as ``prepare``
    did, from the loaded sets that every job shares (so Ray stores them once)."""
    plan = variant_plan(train_config(c, v), *sets)
    result = train.train_one_seed(plan, seed, work, progress=progress, evaluators=evaluators(c, v))
    return result.history, {name: outcome.numpy() for name, outcome in result.outcomes.items()}


def train_all(plan: Plan, work: Path, progress: bool) -> dict[tuple[Variant, int], tuple[list[dict], dict]]:
    """Every (variant, seed) job through the configured executor; failed jobs (their finished siblings checkpointed
    in ``work``) end the command with one line, bad input (every failure a UserError) with exit 2."""
    c = plan.config
    pairs = [(v, seed) for v in plan.variants for seed in c.seeds]
    parallel = c.executor != "sequential"  # in parallel, one bar over the jobs rather than one per job
    jobs = [Job(f"{v.key} seed {seed}", train_job, (c, v, plan.sets, seed, work / v.key, progress and not parallel))
            for v, seed in pairs]
    return dict(zip(pairs, run_command_jobs(jobs, c, work, progress=progress and parallel)))


def run(plan: Plan, work: Path, *, progress: bool = True) -> dict:
    c = plan.config
    trained = train_all(plan, work, progress)
    rows, curves = [], []
    hits: dict[tuple[Variant, str], list[np.ndarray]] = {}
    for v in plan.variants:
        tp = plan.plans[v]
        scorers = evaluators(c, v)
        for name in scorers:
            hits[v, name] = []
        for seed in c.seeds:
            history, per_item = trained[v, seed]
            for name in scorers:
                hits[v, name].append(per_item[name])
                curves += [{"variant": v.key, "eval": name, "seed": seed, "epoch": h["epoch"], "accuracy": h[name]}
                           for h in history]
        for name in scorers:
            permute, where = (v.permute, v.where) if name == "accuracy" else tuple(name.split("@"))
            rows.append(_row(v, permute, where, hits[v, name], 1 / tp.num_classes))
        if progress:
            print(f"{v.key}: " + ", ".join(f"{n} {np.mean([h.mean() for h in hits[v, n]]):.3f}" for n in scorers),
                  flush=True)
    paired = comparisons(plan, hits)
    write_csv(work / "table.csv", [flat_stats(r) for r in rows])
    write_csv(work / "comparisons.csv", comparison_rows(paired))
    write_csv(work / "curves.csv", curves)
    ends = plateaus(curves)
    if ends:
        write_csv(work / "plateaus.csv", [flat_stats(e) for e in ends])
    gap_figures(rows, curves, work)
    return {"rows": rows, "comparisons": paired, "plateaus": ends,
            "permute_meanings": PERMUTE_MEANINGS,
            "n_train": len(next(iter(plan.plans.values())).train_set),
            "n_test": len(next(iter(plan.plans.values())).test_set)}


def print_summary(metrics: dict) -> None:
    print(f"{'task':<9}{'head':<8}{'padding':<10}{'grid':>4}  {'permute':<12}{'where':<8}"
          f"{'accuracy':>9}  {'95% CI':<16}{'chance':>7}")
    for r in metrics["rows"]:
        a = r["accuracy"]
        print(f"{r['task']:<9}{r['head']:<8}{r['padding']:<10}{r['grid']:>4}  {r['permute']:<12}{r['where']:<8}"
              f"{a['mean']:>9.3f}  [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]  {r['chance']:>6.3f}")
    for p in metrics.get("plateaus", []):
        d = p["slope"]
        interval = f" [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if d["ci95"] else ""
        print(f"{p['variant']} [{p['eval']}]: epoch {p['epochs']} {p['final']['mean']:.3f}, slope per epoch since "
              f"epoch {p['since_epoch']} {d['mean']:+.4f}{interval}: {p['trend']}")
