"""AugShift against plain training, shift augmentation and BlurPool, scored by shift invariance.

Methods (see METHODS) share one budget: the same epochs, training images, batch size B and optimiser, hence the
same number of steps, each over B distinct images. Two-view methods (shift-aug, augshift, augshift+blurpool)
forward 2B views per step (two shifted crops of each image in one batch): they see each image twice per step,
so they get the same images and steps but twice the forward/backward compute. The same seed gives every method
the same initial weights, image order and test shifts (paired comparison).

Test metrics (fractions in [0, 1]; latent_distance a ratio in [0, 4]) on crops of side s from canvases of side S,
see poschan.metrics.invariance: accuracy of the centre crop, consistency (two random crops agree),
circular_consistency (two random rolls of the centre crop agree), fidelity (both crops correct), latent_distance
(pooled latents of the two crops), and accuracy along the diagonal offsets (d, d), d = 0..S - s. Each is
estimated from per-test-image outcomes (poschan.stats): its interval covers the training seeds and the test
images. The comparisons are the paired differences (same seeds, test images and shifts) of AugShift against
shift augmentation alone and against plain training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from poschan.control.augshift import AugShiftLoss
from poschan.data.shift_pairs import ShiftPairStream, ShiftPairTransform
from poschan.data.sources import ImageSet
from poschan.data.stream import TEST_SEED_OFFSET
from poschan.errors import UserError
from poschan.executor import Job, run_command_jobs
from poschan.metrics.classification import accuracy
from poschan.metrics.invariance import LATENT_DISTANCE_RANGE, invariance_outcomes, latent_ratio, summarize_outcomes
from poschan.models.antialias import antialias
from poschan.runtime import resolve_device
from poschan.stats import estimate, negated, paired_difference, proportion
from poschan.training import ClassifierSettings, StudySettings, TrainPlan, load_data, plan_for, train_seed

METHODS = {
    "baseline": "centre crop, cross-entropy (no shifts)",
    "shift-aug": "two shifted views per image, cross-entropy on both, no latent loss (augmentation alone)",
    "augshift": "two shifted views, cross-entropy + lambda * latent loss (AugShift)",
    "blurpool": "baseline training of the anti-aliased model (BlurPool after every stride-2 layer)",
    "augshift+blurpool": "AugShift on the anti-aliased model",
}
METHOD_NAMES = {"baseline": "plain training", "shift-aug": "shift augmentation", "augshift": "AugShift",
                "blurpool": "BlurPool", "augshift+blurpool": "AugShift with BlurPool"}
METRICS = {"accuracy": "accuracy (centre crop)", "consistency": "consistency (crops)",
           "circular_consistency": "circular consistency", "fidelity": "fidelity (both crops right)",
           "latent_distance": "latent distance"}
# AugShift against each alternative, and every method against plain training (what retraining buys, e.g. beside
# post-hoc debiasing: ``retraining_points``)
COMPARED = {("augshift", "shift-aug"): "shift augmentation alone", ("augshift", "baseline"): "plain training",
            ("shift-aug", "baseline"): "plain training", ("blurpool", "baseline"): "plain training",
            ("augshift+blurpool", "baseline"): "plain training"}
UNIT = "training seeds"
EVAL_BATCH = 256


class AugShiftSettings(StudySettings, Protocol):
    """What the comparison reads of its configuration (``poschan.experiments.augshift.Config`` holds it all),
    with ``training(**changes)``, the checked training configuration of its data and model."""

    methods: list[str]
    lam: float
    lambdas: list[float]
    ce: str
    latent: str
    crop: int
    canvas: int | None
    max_shift: int | None
    filt_size: int
    test_passes: int
    batch_size: int
    epochs: int


@dataclass(frozen=True)
class Recipe:
    """How one model is trained: the settings (lam, ce, latent) of its two-view AugShift loss (None: cross-entropy
    on the centre crop) and whether it is anti-aliased. Equal settings are one recipe, trained once."""

    views: tuple[float, str, str] | None
    blur: bool

    @property
    def loss(self) -> AugShiftLoss | None:
        return None if self.views is None else AugShiftLoss(*self.views)


def recipe(c: AugShiftSettings, method: str, lam: float | None = None) -> Recipe:
    """The recipe of ``method``; ``lam`` overrides the config's lambda (the sweep)."""
    lam = c.lam if lam is None else lam
    augshift = (lam, c.ce, c.latent if lam else "mse")  # lam 0: the latent kind is irrelevant
    views = {"baseline": None, "blurpool": None, "shift-aug": (0.0, "both", "mse")}.get(method, augshift)
    return Recipe(views, method in ("blurpool", "augshift+blurpool"))


def run_name(method: str, lam: float) -> str:
    """The directory of a method's runs (an AugShift method's names its lambda)."""
    return f"{method}_lam{lam:g}" if method.startswith("augshift") else method


def augshift_training(c: AugShiftSettings) -> ClassifierSettings:
    """The training configuration of the data and model: each image centred on a grid-1 canvas of side S."""
    return c.training(task="semantic", grid=1, canvas=ShiftPairTransform(c.crop, c.canvas).canvas,
                      background="mean", head="gap-fc")


@dataclass
class AugShiftPlan:
    """Every distinct recipe once, with the data (re-normalised for the model) and the view geometry."""

    config: AugShiftSettings
    shift: ShiftPairTransform
    data: TrainPlan  # model factory and data, re-normalised for the model
    methods: dict[str, Recipe]
    sweep: dict[float, Recipe]
    runs: dict[Recipe, str]  # every distinct recipe once -> its directory under work/
    sets: tuple[ImageSet, ImageSet]  # the loaded (train, test) images, as every job gets them

    def make_model(self, blur: bool) -> nn.Module:
        model = self.data.make_model()
        return antialias(model, self.config.filt_size) if blur else model


def plan_augshift(config: AugShiftSettings) -> AugShiftPlan:
    """Load the data, build every kind of model once and run it on a view, before anything is written."""
    plan = _plan_of(config, load_data(augshift_training(config)))
    for blur in sorted({r.blur for r in plan.runs}):
        _check_forward(plan.make_model(blur), plan.shift, plan.data.train_set.channels, blur)
    return plan


def _plan_of(c: AugShiftSettings, sets: tuple[ImageSet, ImageSet]) -> AugShiftPlan:
    """The plan of ``c`` over the loaded (train, test) ``sets``; every job makes its own from the shared sets."""
    data = plan_for(augshift_training(c), *sets)
    methods = {m: recipe(c, m) for m in c.methods}
    sweep = {lam: recipe(c, "augshift", lam) for lam in c.lambdas}
    runs: dict[Recipe, str] = {}
    for m, r in methods.items():
        runs.setdefault(r, run_name(m, c.lam))
    for lam, r in sweep.items():
        runs.setdefault(r, run_name("augshift", lam))
    return AugShiftPlan(c, ShiftPairTransform(c.crop, c.canvas), data, methods, sweep, runs, sets)


def _check_forward(model: nn.Module, shift: ShiftPairTransform, channels: int, blur: bool) -> None:
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, channels, shift.crop, shift.crop))
    except (RuntimeError, ValueError) as err:  # e.g. a BlurPool's reflect padding on a too small map
        what = "the anti-aliased model" if blur else "the model"
        raise UserError(f"{what} cannot take {shift.crop} px views ({str(err).splitlines()[0]}); "
                        "use a larger --crop") from None


def train_run(plan: AugShiftPlan, r: Recipe, seed: int, run_dir: Path, *,
              progress: bool) -> tuple[nn.Module, list[dict]]:
    """Train (or resume) one recipe and seed in ``run_dir``; the history has the centre-crop test accuracy."""
    device = resolve_device(plan.config.device)
    source = ShiftPairStream(plan.data.train_set, plan.shift, plan.data.config.batch_size, seed,
                             pairs=r.views is not None)
    test = ShiftPairStream(plan.data.test_set, plan.shift, EVAL_BATCH, seed + TEST_SEED_OFFSET, pairs=False,
                           shuffle=False)

    def evaluate(m: nn.Module, _epoch: int) -> dict:
        return {"test_accuracy": accuracy(m, test, device=device)}

    return train_seed(plan.data.config, lambda: plan.make_model(r.blur), source, seed, run_dir, evaluate=evaluate,
                      loss_fn=None if r.views is None else r.loss.training_loss, progress=progress,
                      desc=f"{run_dir.parent.name} seed {seed}")


def score(plan: AugShiftPlan, model: nn.Module, seed: int) -> dict[str, np.ndarray]:
    """Every test metric of a trained model per test image (``invariance_outcomes``); the test shifts depend on
    the seed only (paired across methods)."""
    c = plan.config
    test = plan.data.test_set
    return invariance_outcomes(model, test.images, test.labels, plan.shift, max_shift=c.max_shift,
                               passes=c.test_passes, seed=seed + TEST_SEED_OFFSET, batch_size=EVAL_BATCH,
                               device=resolve_device(c.device))


def run_job(c: AugShiftSettings, r: Recipe, sets: tuple[ImageSet, ImageSet], seed: int, run_dir: Path,
            progress: bool) -> dict[str, np.ndarray]:
    """One (recipe, seed) trained (or resumed) in ``run_dir`` and scored: a job of poschan.executor."""
    plan = _plan_of(c, sets)
    model, _ = train_run(plan, r, seed, run_dir, progress=progress)
    return score(plan, model, seed)


def _item(key: str, passes: int) -> str:
    pairs = f"{passes} shift pair{'s' * (passes > 1)}"
    return "test images" if key == "accuracy" else f"test images (each over its {pairs})"


def metric_estimate(key: str, groups: list[np.ndarray], passes: int) -> dict:
    """The estimate of metric ``key`` from per-seed, per-image outcomes (the latent distance: a ratio of means)."""
    if key == "latent_distance":
        return estimate(groups, latent_ratio, bounds=LATENT_DISTANCE_RANGE, unit=UNIT, item=_item(key, passes))
    return proportion(groups, unit=UNIT, item=_item(key, passes))


def _comparisons(plan: AugShiftPlan, outcomes: dict[str, list[dict[str, np.ndarray]]]) -> list[dict]:
    """Each pair of COMPARED that was run (a − b), per metric: paired over seeds, test images and shifts."""
    out = []
    for (a, b), what in COMPARED.items():
        if a not in plan.methods or b not in plan.methods:
            continue
        left, right = outcomes[plan.runs[plan.methods[a]]], outcomes[plan.runs[plan.methods[b]]]
        for key, name in METRICS.items():
            ratio = key == "latent_distance"
            low, high = LATENT_DISTANCE_RANGE if ratio else (0.0, 1.0)
            diff = paired_difference([o[key] for o in left], [o[key] for o in right], latent_ratio if ratio else None,
                                     bounds=(low - high, high - low), unit=UNIT,
                                     item=_item(key, plan.config.test_passes))
            out.append({"name": f"{a}_vs_{b}_{key}".replace("-", "_"), "a": a, "b": b,
                        "question": f"Does {METHOD_NAMES[a]} change the {name} relative to {what} ({a} - {b})?",
                        **diff})
    return out


def retraining_points(metrics: dict) -> list[dict]:
    """What each retraining method of a finished comparison (its ``metrics``, as in results.json) buys over plain
    training: ``consistency_gain`` and ``circular_consistency_gain`` (method − baseline) and the accuracy ``cost``
    (baseline − method), each paired over its seeds and test images, with the method's ``accuracy``; one point per
    method compared with the baseline (none without a baseline run)."""
    paired = {c["name"]: c for c in metrics["comparisons"]}
    points = []
    for method, stats in metrics["methods"].items():
        key = f"{method}_vs_baseline_".replace("-", "_")
        if key + "accuracy" in paired:
            points.append({"method": method, "label": METHOD_NAMES[method], "accuracy": stats["accuracy"],
                           "consistency_gain": paired[key + "consistency"],
                           "circular_consistency_gain": paired[key + "circular_consistency"],
                           "cost": negated(paired[key + "accuracy"])})
    return points


def _budget(plan: AugShiftPlan) -> dict:
    c, b = plan.config, plan.config.batch_size
    steps = math.ceil(len(plan.data.train_set) / b)
    return {"epochs": c.epochs, "train_images": len(plan.data.train_set), "images_per_step": b,
            "steps_per_epoch": steps, "steps": steps * c.epochs,
            "views_per_step": {m: b if r.views is None else 2 * b for m, r in plan.methods.items()},
            "counting": "every method: the same epochs, images and steps of B distinct images; two-view methods "
                        "forward 2B views per step (each image twice), so twice the compute"}


def _protocol(plan: AugShiftPlan) -> dict:
    c, s = plan.config, plan.shift
    return {"crop": s.crop, "canvas": s.canvas, "max_offset": s.max_offset,
            "circular_max_shift": s.largest_roll(c.max_shift),
            "test_passes": c.test_passes, "test_images": len(plan.data.test_set),
            "lambda": c.lam, "ce": c.ce, "latent": c.latent, "filt_size": c.filt_size,
            "units": "fractions in [0, 1]; latent_distance = mean ||z1 - z2||^2 / mean ||z||^2, in [0, 4]"}


@dataclass
class AugShiftResult:
    """Each method's metrics with intervals, the paired comparisons, accuracy along the diagonal shift, the budget
    and protocol; per run and seed the metrics (``runs``) and the diagonal accuracies (``shift_rows``)."""

    methods: dict[str, dict]
    comparisons: list[dict]
    shift_curve: dict
    budget: dict
    protocol: dict
    chance: float
    lambdas: dict[str, float | str]  # each method's lambda ("" without a latent loss)
    lambda_sweep: list[dict]
    runs: list[dict]
    shift_rows: list[dict]

    def metrics(self) -> dict:
        """The metrics of the results contract (results.json)."""
        out = {"methods": self.methods, "comparisons": self.comparisons, "shift_curve": self.shift_curve,
               "budget": self.budget, "protocol": self.protocol, "chance": self.chance}
        return {**out, "lambda_sweep": self.lambda_sweep} if self.lambda_sweep else out


def augshift_comparison(plan: AugShiftPlan | AugShiftSettings, work: Path, *, progress: bool = False) -> AugShiftResult:
    """Train (or resume) every (recipe, seed) of ``plan`` (or of settings, planned here) in
    ``work/<run>/seed<S>`` through the configured executor, score each on the test images, and estimate."""
    plan = plan if isinstance(plan, AugShiftPlan) else plan_augshift(plan)
    c = plan.config
    parallel = c.executor != "sequential"  # in parallel, one bar over the jobs rather than one per training
    keys = [(name, seed) for name in plan.runs.values() for seed in c.seeds]
    jobs = [Job(f"{name} seed {seed}", run_job, (c, r, plan.sets, seed, work / name / f"seed{seed}",
                                                 progress and not parallel))
            for r, name in plan.runs.items() for seed in c.seeds]
    scored = run_command_jobs(jobs, c, work, progress=progress and parallel)
    outcomes: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in plan.runs.values()}
    raw, shift_rows = [], []
    for (name, seed), per_image in zip(keys, scored):
        outcomes[name].append(per_image)
        s = summarize_outcomes(per_image)
        raw.append({"run": name, "seed": seed, **{k: s[k] for k in METRICS}})
        shift_rows += [{"run": name, "seed": seed, "offset": d, "accuracy": a}
                       for d, a in enumerate(s["diagonal_accuracy"])]
        if progress:
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {s[k]:.3f}" for k in METRICS), flush=True)

    def stats(name: str) -> dict:
        return {k: metric_estimate(k, [o[k] for o in outcomes[name]], c.test_passes) for k in METRICS}

    offsets = list(range(plan.shift.max_offset + 1))
    curve = {m: [proportion([o["diagonal_accuracy"][:, d] for o in outcomes[plan.runs[r]]], unit=UNIT,
                            item="test images") for d in offsets] for m, r in plan.methods.items()}
    return AugShiftResult(
        methods={m: stats(plan.runs[r]) for m, r in plan.methods.items()}, comparisons=_comparisons(plan, outcomes),
        shift_curve={"offset": offsets, "centre_offset": plan.shift.max_offset // 2, "accuracy": curve},
        budget=_budget(plan), protocol=_protocol(plan), chance=1 / plan.data.num_classes,
        lambdas={m: "" if r.views is None else r.views[0] for m, r in plan.methods.items()},
        lambda_sweep=[{"lambda": lam, **stats(plan.runs[r])} for lam, r in plan.sweep.items()],
        runs=raw, shift_rows=shift_rows)
