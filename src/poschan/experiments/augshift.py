"""`poschan augshift`: AugShift vs plain training, shift augmentation and BlurPool, scored by shift invariance.

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
images. ``comparisons`` holds the paired differences (same seeds, test images and shifts) of AugShift against
shift augmentation alone and against plain training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from poschan.config import command_defaults, setting
from poschan.control.augshift import AugShiftLoss
from poschan.data.shift_pairs import ShiftPairStream, ShiftPairTransform
from poschan.data.sources import ImageSet
from poschan.engine import cross_entropy_loss, fit
from poschan.errors import UserError
from poschan.executor import Job, run_command_jobs
from poschan.experiments import train
from poschan.experiments.settings import (
    CanvasSideSettings,
    DataSettings,
    ExecutorSettings,
    MethodsSettings,
    ModelSettings,
    PaddingSettings,
    PretrainedSettings,
    RunSettings,
    TrainingSettings,
    WidthSettings,
)
from poschan.metrics.classification import accuracy
from poschan.metrics.invariance import LATENT_DISTANCE_RANGE, invariance_outcomes, latent_ratio, summarize_outcomes
from poschan.models.antialias import antialias
from poschan.report.augshift_figures import PANELS, augshift_figures
from poschan.runtime import resolve_device
from poschan.stats import estimate, paired_difference, proportion
from poschan.tables import comparison_line, comparison_rows, flat_stats, write_csv

EXPERIMENT = "augshift"
HELP = "AugShift vs baseline, shift augmentation and BlurPool: accuracy, consistency, fidelity, latent distance"
METHODS = {
    "baseline": "centre crop, cross-entropy (no shifts)",
    "shift-aug": "two shifted views per image, cross-entropy on both, no latent loss (augmentation alone)",
    "augshift": "two shifted views, cross-entropy + lambda * latent loss (AugShift)",
    "blurpool": "baseline training of the anti-aliased model (BlurPool after every stride-2 layer)",
    "augshift+blurpool": "AugShift on the anti-aliased model",
}
METRICS = ("accuracy", "consistency", "circular_consistency", "fidelity", "latent_distance")
COMPARED = {("augshift", "shift-aug"): "shift augmentation alone", ("augshift", "baseline"): "plain training"}
UNIT = "training seeds"
EVAL_BATCH = 256


@dataclass
@command_defaults
class Config(ExecutorSettings, RunSettings, TrainingSettings, PaddingSettings, PretrainedSettings, WidthSettings, ModelSettings,
             DataSettings, CanvasSideSettings, MethodsSettings):
    # fp32: in the paired check bf16 lowered AugShift's accuracy beyond ±0.01 (results/precision-check)
    DEFAULTS: ClassVar[dict] = {"methods": list(METHODS), "test_passes": 5, "precision": "fp32"}
    FLAGS: ClassVar[dict] = {"methods": {"help": f"comma-separated, from: {', '.join(METHODS)}"},
                             "canvas": {"help": "canvas side S (default round(s * 256 / 224))"},
                             "test_passes": {"help": "random shift pairs per test image"}}

    lam: float = setting(1.0, "weight of the latent loss (default 1)", flag="--lambda", metavar="LAMBDA")
    lambdas: list[float] = setting([], "lambda sweep of method augshift, e.g. 0.1,1,10")
    ce: str = setting("both", "cross-entropy on both views (both) or on the first only (first)")
    latent: str = setting("mse", "latent loss: mse or normalized-mse")
    crop: int = setting(32, "view side s in pixels (default 32)")
    max_shift: int | None = setting(None, "circular consistency rolls (default S - s)")
    filt_size: int = setting(3, "BlurPool filter size: 3 or 5")

    def validate(self) -> None:
        self.check_executor()
        if not self.methods:
            raise UserError(f"methods must name at least one method; allowed: {', '.join(METHODS)}")
        for m in self.methods:
            if m not in METHODS:
                raise UserError(f"unknown method {m!r}; allowed: {', '.join(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise UserError(f"methods must be distinct, got {self.methods}")
        for lam in [self.lam, *self.lambdas]:
            AugShiftLoss(lam, self.ce, self.latent)  # checks lambda, ce and latent
        if len(set(self.lambdas)) != len(self.lambdas):
            raise UserError(f"lambdas must be distinct, got {self.lambdas}")
        if self.max_shift is not None and self.max_shift < 0:
            raise UserError(f"max_shift must be >= 0 or null (S - s), got {self.max_shift}")
        train_config(self).validate()  # also checks crop and canvas (ShiftPairTransform), seeds, sizes

    @property
    def shift(self) -> ShiftPairTransform:
        return ShiftPairTransform(self.crop, self.canvas)


@dataclass(frozen=True)
class Recipe:
    """How one model is trained: the loss (None: cross-entropy on the centre crop) and whether it is anti-aliased."""

    loss: AugShiftLoss | None
    blur: bool


def recipe(c: Config, method: str, lam: float | None = None) -> Recipe:
    """The recipe of ``method``; ``lam`` overrides the config's lambda (the sweep)."""
    lam = c.lam if lam is None else lam
    augshift = AugShiftLoss(lam, c.ce, c.latent if lam else "mse")  # lam 0: the latent kind is irrelevant
    loss = {"baseline": None, "blurpool": None, "shift-aug": AugShiftLoss(0.0, "both")}.get(method, augshift)
    return Recipe(loss, method in ("blurpool", "augshift+blurpool"))


def run_name(method: str, lam: float) -> str:
    return f"{method}_lam{lam:g}" if method.startswith("augshift") else method


def train_config(c: Config) -> train.Config:
    """The `train` configuration of the data and model: each image centred on a grid-1 canvas of side S."""
    return train.Config(task="semantic", grid=1, canvas=c.shift.canvas, background="mean", data=c.data,
                        data_root=c.data_root, model=c.model, width=c.width, head="gap-fc", padding=c.padding,
                        pretrained=c.pretrained, weights=c.weights, epochs=c.epochs, batch_size=c.batch_size,
                        lr=c.lr, betas=list(c.betas), train_size=c.train_size, test_size=c.test_size,
                        test_passes=c.test_passes, seeds=list(c.seeds), device=c.device, preset=c.preset,
                        **c.schedule_fields())


@dataclass
class Plan:
    config: Config
    shift: ShiftPairTransform
    data: train.TrainPlan  # model factory and data, re-normalised for the model
    methods: dict[str, Recipe]
    sweep: dict[float, Recipe]
    runs: dict[Recipe, str]  # every distinct recipe once -> its directory under work/
    sets: tuple[ImageSet, ImageSet]  # the loaded (train, test) images, as every job gets them

    def make_model(self, blur: bool) -> nn.Module:
        model = self.data.make_model()
        return antialias(model, self.config.filt_size) if blur else model


def prepare(config: Config) -> Plan:
    """Load the data, build every kind of model once and run it on a view, before anything is written."""
    config.validate()
    plan = plan_of(config, train.load_data(train_config(config)))
    for blur in sorted({r.blur for r in plan.runs}):
        _check_forward(plan.make_model(blur), plan.shift, plan.data.train_set.channels, blur)
    return plan


def plan_of(c: Config, sets: tuple[ImageSet, ImageSet]) -> Plan:
    """The plan of ``c`` over the loaded (train, test) ``sets``; every job makes its own from the shared sets."""
    data = train.plan_for(train_config(c), *sets)
    methods = {m: recipe(c, m) for m in c.methods}
    sweep = {lam: recipe(c, "augshift", lam) for lam in c.lambdas}
    runs: dict[Recipe, str] = {}
    for m, r in methods.items():
        runs.setdefault(r, run_name(m, c.lam))
    for lam, r in sweep.items():
        runs.setdefault(r, run_name("augshift", lam))
    return Plan(c, c.shift, data, methods, sweep, runs, sets)


def _check_forward(model: nn.Module, shift: ShiftPairTransform, channels: int, blur: bool) -> None:
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, channels, shift.crop, shift.crop))
    except (RuntimeError, ValueError) as err:  # e.g. a BlurPool's reflect padding on a too small map
        what = "the anti-aliased model" if blur else "the model"
        raise UserError(f"{what} cannot take {shift.crop} px views ({str(err).splitlines()[0]}); "
                        "use a larger --crop") from None


def train_run(plan: Plan, r: Recipe, seed: int, run_dir: Path, *, progress: bool) -> tuple[nn.Module, list[dict]]:
    """Train (or resume) one recipe and seed in ``run_dir``; the history has the centre-crop test accuracy."""
    c = plan.config
    device = resolve_device(c.device)
    torch.manual_seed(seed)  # the same initial weights for every method of this seed
    model = plan.make_model(r.blur)
    source = ShiftPairStream(plan.data.train_set, plan.shift, c.batch_size, seed, pairs=r.loss is not None)
    test = ShiftPairStream(plan.data.test_set, plan.shift, EVAL_BATCH, seed + train.TEST_SEED_OFFSET, pairs=False,
                           shuffle=False)
    run_dir.mkdir(parents=True, exist_ok=True)

    def evaluate(m: nn.Module, _epoch: int) -> dict:
        return {"test_accuracy": accuracy(m, test, device=device)}

    history = fit(model, source, epochs=c.epochs, **c.fit_options(device), seed=seed, device=device,
                  checkpoint=run_dir / "checkpoint.pt", log_csv=run_dir / "metrics.csv", evaluate=evaluate,
                  loss_fn=r.loss.training_loss if r.loss is not None else cross_entropy_loss, progress=progress, desc=f"{run_dir.parent.name} seed {seed}",
                  tensorboard=run_dir / "tensorboard")
    return model, history


def score(plan: Plan, model: nn.Module, seed: int) -> dict[str, np.ndarray]:
    """Every test metric of a trained model per test image (``invariance_outcomes``); the test shifts depend on
    the seed only (paired across methods)."""
    c = plan.config
    test = plan.data.test_set
    return invariance_outcomes(model, test.images, test.labels, plan.shift, max_shift=c.max_shift,
                              passes=c.test_passes, seed=seed + train.TEST_SEED_OFFSET, batch_size=EVAL_BATCH,
                              device=resolve_device(c.device))


def run_job(c: Config, r: Recipe, sets: tuple[ImageSet, ImageSet], seed: int, run_dir: Path,
            progress: bool) -> dict[str, np.ndarray]:
    """One (recipe, seed) trained (or resumed) in ``run_dir`` and scored: a job of poschan.executor."""
    plan = plan_of(c, sets)
    model, _ = train_run(plan, r, seed, run_dir, progress=progress)
    return score(plan, model, seed)


def run(plan: Plan, work: Path, *, progress: bool = True) -> dict:
    """Every (recipe, seed) through the configured executor (one after another by default), then the statistics."""
    c = plan.config
    parallel = c.executor != "sequential"  # in parallel, one bar over the jobs rather than one per training
    keys = [(name, seed) for name in plan.runs.values() for seed in c.seeds]
    jobs = [Job(f"{name} seed {seed}", run_job, (c, r, plan.sets, seed, work / name / f"seed{seed}",
                                                 progress and not parallel))
            for r, name in plan.runs.items() for seed in c.seeds]
    scored = run_command_jobs(jobs, c, work, progress=progress and parallel)
    outcomes: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in plan.runs.values()}
    raw, curve_rows = [], []
    for (name, seed), per_image in zip(keys, scored):
        outcomes[name].append(per_image)
        s = summarize_outcomes(per_image)
        raw.append({"run": name, "seed": seed, **{k: s[k] for k in METRICS}})
        curve_rows += [{"run": name, "seed": seed, "offset": d, "accuracy": a}
                       for d, a in enumerate(s["diagonal_accuracy"])]
        if progress:
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {s[k]:.3f}" for k in METRICS), flush=True)

    def stats(name: str) -> dict:
        return {k: _estimate(k, [o[k] for o in outcomes[name]], c.test_passes) for k in METRICS}

    methods = {m: stats(plan.runs[r]) for m, r in plan.methods.items()}
    shift_curve = {m: [proportion([o["diagonal_accuracy"][:, d] for o in outcomes[plan.runs[r]]], unit=UNIT,
                                  item="test images")
                       for d in range(plan.shift.max_offset + 1)] for m, r in plan.methods.items()}
    paired = _comparisons(plan, outcomes)
    metrics = {"methods": methods, "comparisons": paired,
               "shift_curve": {"offset": list(range(plan.shift.max_offset + 1)),
                               "centre_offset": plan.shift.max_offset // 2, "accuracy": shift_curve},
               "budget": _budget(plan), "protocol": _protocol(plan), "chance": 1 / plan.data.num_classes}
    if plan.sweep:
        metrics["lambda_sweep"] = [{"lambda": lam, **stats(plan.runs[r])} for lam, r in plan.sweep.items()]
    write_csv(work / "table.csv",
              [flat_stats({"method": m, "lambda": _lam(r), **methods[m]}) for m, r in plan.methods.items()])
    if plan.sweep:
        write_csv(work / "lambda_sweep.csv", [flat_stats(row) for row in metrics["lambda_sweep"]])
    write_csv(work / "runs.csv", raw)
    if paired:
        write_csv(work / "comparisons.csv", comparison_rows(paired))
    write_csv(work / "shift_curve.csv", curve_rows)
    augshift_figures(metrics, work)
    return metrics


def _item(key: str, passes: int) -> str:
    pairs = f"{passes} shift pair{'s' * (passes > 1)}"
    return "test images" if key == "accuracy" else f"test images (each over its {pairs})"


def _estimate(key: str, groups: list[np.ndarray], passes: int) -> dict:
    """The estimate of metric ``key`` from per-seed, per-image outcomes (the latent distance: a ratio of means)."""
    if key == "latent_distance":
        return estimate(groups, latent_ratio, bounds=LATENT_DISTANCE_RANGE, unit=UNIT, item=_item(key, passes))
    return proportion(groups, unit=UNIT, item=_item(key, passes))


def _comparisons(plan: Plan, outcomes: dict[str, list[dict[str, np.ndarray]]]) -> list[dict]:
    """AugShift minus each method of COMPARED that was run, per metric: paired over seeds, test images and shifts."""
    out = []
    for (a, b), what in COMPARED.items():
        if a not in plan.methods or b not in plan.methods:
            continue
        left, right = outcomes[plan.runs[plan.methods[a]]], outcomes[plan.runs[plan.methods[b]]]
        for key in METRICS:
            ratio = key == "latent_distance"
            low, high = LATENT_DISTANCE_RANGE if ratio else (0.0, 1.0)
            diff = paired_difference([o[key] for o in left], [o[key] for o in right], latent_ratio if ratio else None,
                                     bounds=(low - high, high - low), unit=UNIT,
                                     item=_item(key, plan.config.test_passes))
            out.append({"name": f"{a}_vs_{b}_{key}".replace("-", "_"), "a": a, "b": b,
                        "question": f"Does AugShift change the {PANELS[key]} relative to {what} ({a} - {b})?",
                        **diff})
    return out


def _lam(r: Recipe) -> float | str:
    return r.loss.lam if r.loss is not None else ""


def _budget(plan: Plan) -> dict:
    c, b = plan.config, plan.config.batch_size
    steps = math.ceil(len(plan.data.train_set) / b)
    return {"epochs": c.epochs, "train_images": len(plan.data.train_set), "images_per_step": b,
            "steps_per_epoch": steps, "steps": steps * c.epochs,
            "views_per_step": {m: 2 * b if r.loss is not None else b for m, r in plan.methods.items()},
            "counting": "every method: the same epochs, images and steps of B distinct images; two-view methods "
                        "forward 2B views per step (each image twice), so twice the compute"}


def _protocol(plan: Plan) -> dict:
    c, s = plan.config, plan.shift
    return {"crop": s.crop, "canvas": s.canvas, "max_offset": s.max_offset,
            "circular_max_shift": s.max_offset if c.max_shift is None else c.max_shift,
            "test_passes": c.test_passes, "test_images": len(plan.data.test_set),
            "lambda": c.lam, "ce": c.ce, "latent": c.latent, "filt_size": c.filt_size,
            "units": "fractions in [0, 1]; latent_distance = mean ||z1 - z2||^2 / mean ||z||^2, in [0, 4]"}


def print_summary(metrics: dict) -> None:
    heads = ["accuracy", "consistency", "circular", "fidelity", "latent dist"]
    print(f"{'method':<19}" + "".join(f"{h:>22}" for h in heads))

    def line(label: str, stats: dict) -> str:
        cells = [f"{stats[k]['mean']:.3f} [{stats[k]['ci95'][0]:.3f},{stats[k]['ci95'][1]:.3f}]" for k in METRICS]
        return f"{label:<19}" + "".join(f"{cell:>22}" for cell in cells)

    for m, stats in metrics["methods"].items():
        print(line(m, stats))
    for row in metrics.get("lambda_sweep", []):
        print(line(f"augshift λ={row['lambda']:g}", row))
    n = next(iter(metrics["methods"].values()))["accuracy"]["n"]
    print(f"(mean [95% CI] over {n} seed(s) and the test images; fractions in [0, 1]; chance accuracy "
          f"{metrics['chance']:.3f})")
    for d in metrics["comparisons"]:
        print(comparison_line(d))
