"""The GAP study: does position survive global pooling, and does it live in channel order?

Trains the grid of (task, head, padding, grid, permutation) variants (``poschan.training``) and estimates the test
accuracy of each over seeds; every (variant, seed) is an independent job of poschan.executor (one after another,
on local worker processes, or through Ray). The channel permutation has three meanings, each supporting its own
claim (see PERMUTE_MEANINGS); the test-only variant (a) needs no training of its own: it is the normally trained
net evaluated with a permutation inserted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from poschan.data.sources import ImageSet
from poschan.data.stream import CanvasStream
from poschan.errors import UserError
from poschan.executor import Job, run_command_jobs
from poschan.metrics.classification import outcomes
from poschan.results import atomic_write_text
from poschan.stats import paired_difference, plateaus, proportion, ratio, versus_chance
from poschan.taps import permute_channels
from poschan.training import (
    ClassifierSettings,
    Evaluator,
    StudySettings,
    TrainPlan,
    load_data,
    plain_outcomes,
    plan_for,
    train_one_seed,
)

TRAINED_PERMUTES = ("none", "per-batch", "per-sample")
PERMUTE_MEANINGS = {
    "none": "no permutation: what the pooled vector tells about the target",
    "test-only": "(a) a normally trained net tested with its channels permuted (fresh permutation per batch): "
                 "a drop shows that its readout relies on channel order",
    "per-batch": "(b) the paper's PermuteNet: a fresh permutation per forward pass, shared by the batch, in "
                 "training and test: what a net can still do when it cannot rely on a fixed channel order",
    "per-sample": "(c) as (b) with a permutation per sample: not even batch-wide order statistics survive",
}
COMPARISON_QUESTIONS = {
    "test-only": "does a normally trained net read the target from its channel order (accuracy lost when its "
                 "channels are permuted at test time)?",
    "per-batch": "what does training with a permutation per batch (PermuteNet) cost against normal training?",
    "per-sample": "what does training with a permutation per sample cost against normal training?",
}


class GapSettings(StudySettings, Protocol):
    """What the study reads of its configuration (``poschan.experiments.gap_study.Config`` holds it all):
    the design, the semantic rows' budget, the executor, and ``training(**changes)``, the checked training
    configuration of one variant."""

    design: str
    tasks: list[str]
    heads: list[str]
    paddings: list[str]
    grids: list[int]
    permutes: list[str]
    stage: str | None
    stage_permutes: list[str]
    epochs: int
    train_size: int | None
    semantic_epochs: int | None
    semantic_train_size: int | None


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


def variants(c: GapSettings) -> list[Variant]:
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


def variant_training(c: GapSettings, v: Variant) -> ClassifierSettings:
    """The training configuration of variant ``v``; the semantic rows may get their own budget."""
    semantic = v.task == "semantic"
    return c.training(task=v.task, grid=v.grid, head=v.head, padding=v.padding,
                      permute="none" if v.permute == "none" else v.where, permute_per_sample=v.permute == "per-sample",
                      epochs=semantic and c.semantic_epochs or c.epochs,
                      train_size=semantic and c.semantic_train_size or c.train_size)


@dataclass
class GapStudyPlan:
    """Every variant checked against the data, loaded once."""

    config: GapSettings
    variants: list[Variant]
    plans: dict[Variant, TrainPlan]
    sets: tuple[ImageSet, ImageSet]  # the loaded train and test sets every variant takes its items from


def _variant_plan(tc: ClassifierSettings, train_set: ImageSet, test_set: ImageSet) -> TrainPlan:
    return plan_for(tc, train_set.subset(tc.train_size), test_set)


def plan_gap_study(config: GapSettings) -> GapStudyPlan:
    """Load the data once and check every variant (each model is built once) before anything is written."""
    chosen = variants(config)
    configs = {v: variant_training(config, v) for v in chosen}
    largest = max(configs.values(), key=lambda tc: tc.train_size or float("inf"))
    train_set, test_set = load_data(largest)  # each variant trains on the first train_size items
    plans = {v: _variant_plan(tc, train_set, test_set) for v, tc in configs.items()}
    if config.stage:
        _stage_module(plans[chosen[0]].make_model(), config.stage)
    return GapStudyPlan(config, chosen, plans, (train_set, test_set))


def _test_only(layer_of: Callable[[nn.Module], str]) -> Evaluator:
    def score(model: nn.Module, test: CanvasStream, passes: int, device: torch.device) -> torch.Tensor:
        with permute_channels(model, layer_of(model), where="input"):
            return outcomes(model, test, passes=passes, device=device)

    return score


def evaluators(c: GapSettings, v: Variant) -> dict[str, Evaluator]:
    """Column name -> scorer: the variant's own accuracy, plus test-only permutations of unpermuted nets."""
    out: dict[str, Evaluator] = {"accuracy": plain_outcomes}
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


# Scores a trained network beyond its evaluators (e.g. readouts fit on its frozen features): name -> per-item
# outcomes. A module-level function (or a partial of one), so that jobs carry it to other processes.
AfterTraining = Callable[[nn.Module, TrainPlan, int], dict[str, np.ndarray]]


# A finished job's history and per-item outcomes, beside its checkpoint: a resumed run reads them instead of
# re-scoring the network, and they alone (kilobytes, where a checkpoint is megabytes) carry a long study's finished
# jobs from one machine to the next. The run's config (checked by --resume) is the job's.
FINISHED = "outcomes.json"


def _write_finished(path: Path, history: list[dict], per_item: dict[str, np.ndarray]) -> None:
    arrays = {name: {"dtype": str(a.dtype), "values": a.tolist()} for name, a in per_item.items()}
    atomic_write_text(path, json.dumps({"history": history, "outcomes": arrays}) + "\n")


def _read_finished(path: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    try:
        data = json.loads(path.read_text())
        return data["history"], {name: np.asarray(a["values"], dtype=a["dtype"])
                                 for name, a in data["outcomes"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path} is not a finished job's record ({err}); delete it to re-score the job") from None


def train_job(c: GapSettings, v: Variant, sets: tuple[ImageSet, ImageSet], seed: int, work: Path,
              progress: bool, after: AfterTraining | None = None) -> tuple[list[dict], dict[str, np.ndarray]]:
    """One (variant, seed), trained (or resumed) in ``work/seed<seed>``: its per-epoch history and each evaluator's
    per-item outcomes (and ``after``'s, given the trained model), as plain data that any worker can return, kept in
    ``work/seed<seed>/outcomes.json`` once finished. The job plans its variant itself, as ``plan_gap_study`` did,
    from the loaded sets that every job shares (so Ray stores them once)."""
    finished = work / f"seed{seed}" / FINISHED
    if finished.exists():
        return _read_finished(finished)
    plan = _variant_plan(variant_training(c, v), *sets)
    result = train_one_seed(plan, seed, work, progress=progress, evaluators=evaluators(c, v))
    per_item = {name: outcome.numpy() for name, outcome in result.outcomes.items()}
    per_item.update(after(result.model, plan, seed) if after else {})
    _write_finished(finished, result.history, per_item)
    return result.history, per_item


def _train_all(plan: GapStudyPlan, work: Path, progress: bool, after: AfterTraining | None
               ) -> dict[tuple[Variant, int], tuple[list[dict], dict]]:
    """Every (variant, seed) job through the configured executor; failed jobs (their finished siblings checkpointed
    in ``work``) end the command with one line, bad input (every failure a UserError) with exit 2."""
    c = plan.config
    pairs = [(v, seed) for v in plan.variants for seed in c.seeds]
    parallel = c.executor != "sequential"  # in parallel, one bar over the jobs rather than one per job
    jobs = [Job(f"{v.key} seed {seed}", train_job,
                (c, v, plan.sets, seed, work / v.key, progress and not parallel, after))
            for v, seed in pairs]
    return dict(zip(pairs, run_command_jobs(jobs, c, work, progress=progress and parallel)))


def _row(v: Variant, permute: str, where: str, hits: list[np.ndarray], chance: float) -> dict:
    return {"task": v.task, "head": v.head, "permute": permute, "where": where if permute != "none" else "-",
            "padding": v.padding, "grid": v.grid, "accuracy": proportion(hits, item="test canvases"),
            "chance": chance, "vs_chance": versus_chance(hits, chance)}


def _retained(permuted: list[np.ndarray], plain: list[np.ndarray], chance: float) -> dict:
    """The share of the unpermuted net's accuracy above chance that the permuted one keeps."""
    return ratio(permuted, plain, lambda means: means[..., 0] - chance, item="test canvases")


def comparisons(plan: GapStudyPlan, hits: dict[tuple[Variant, str], list[np.ndarray]]) -> list[dict]:
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


@dataclass
class GapStudyResult:
    """Accuracy rows (one per variant and evaluation, each with its interval and test against chance), paired
    comparisons with their unpermuted nets, the learning curves and which of them have stopped changing."""

    rows: list[dict]
    comparisons: list[dict]
    plateaus: list[dict]
    curves: list[dict]  # per variant, evaluation, seed and epoch
    n_train: int
    n_test: int
    outcomes: dict[tuple[Variant, str], list[np.ndarray]]  # per-item outcomes of each evaluation, one per seed

    def metrics(self) -> dict:
        """The metrics of the results contract (results.json)."""
        return {"rows": self.rows, "comparisons": self.comparisons, "plateaus": self.plateaus,
                "permute_meanings": PERMUTE_MEANINGS, "n_train": self.n_train, "n_test": self.n_test}


def gap_study(plan: GapStudyPlan | GapSettings, work: Path, *, progress: bool = False,
              after: AfterTraining | None = None) -> GapStudyResult:
    """Train (or resume) every (variant, seed) of ``plan`` (or of settings, planned here) in ``work/<variant>``
    and estimate every row, comparison and plateau; ``after`` scores each trained network further (its outcomes
    are in the result's ``outcomes``, not in its rows)."""
    plan = plan if isinstance(plan, GapStudyPlan) else plan_gap_study(plan)
    trained = _train_all(plan, work, progress, after)
    rows, curves = [], []
    every: dict[tuple[Variant, str], list[np.ndarray]] = {}
    for v in plan.variants:
        scorers = evaluators(plan.config, v)
        for seed in plan.config.seeds:
            history, per_item = trained[v, seed]
            for name, outcome in per_item.items():
                every.setdefault((v, name), []).append(outcome)
            for name in scorers:
                curves += [{"variant": v.key, "eval": name, "seed": seed, "epoch": h["epoch"], "accuracy": h[name]}
                           for h in history]
        for name in scorers:
            permute, where = (v.permute, v.where) if name == "accuracy" else tuple(name.split("@"))
            rows.append(_row(v, permute, where, every[v, name], 1 / plan.plans[v].num_classes))
        if progress:
            print(f"{v.key}: " + ", ".join(f"{n} {np.mean([h.mean() for h in every[v, n]]):.3f}" for n in scorers),
                  flush=True)
    hits = {(v, name): found for (v, name), found in every.items() if name in evaluators(plan.config, v)}
    first = next(iter(plan.plans.values()))
    return GapStudyResult(rows, comparisons(plan, hits), plateaus(curves), curves, len(first.train_set),
                          len(first.test_set), every)
