"""`poschan reproduce`: the whole study as one resumable pipeline, ending with its report.

Each step is one experiment command run in this process through the command line (so each keeps the results
contract: it works in ``OUT/<step>.partial`` and appears as ``OUT/<step>`` only when complete). A re-run of the
same command skips the finished steps, resumes an interrupted one (``--resume``) and starts the others; the
report ``OUT/report.html`` is written when every step has finished.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from poschan.config import PRESETS
from poschan.errors import UserError
from poschan.executor import Job, run_command_jobs
from poschan.experiments.settings import ExecutorSettings, PlaceSettings


@dataclass
class StudyRunSettings(ExecutorSettings, PlaceSettings):
    """How ``reproduce`` runs the study: where its steps compute, and the executor of its independent jobs."""


@dataclass(frozen=True)
class SegSetting:
    """One segmentation condition of the study: scene layout, layout prior and backbone."""

    layout: str
    prior: str
    model: str = "resnet18-paper"

    @property
    def name(self) -> str:
        short = "" if self.prior == "0" else {"top-bottom": "tb-", "left-right": "lr-"}[self.layout]
        return f"{short}p{self.prior}" + ("-lite0" if self.model == "efficientnet-lite0" else "")

    @property
    def regions(self) -> str:
        if self.prior == "0":  # no layout: one condition, attacked in both directions
            return "top,bottom,left,right"
        return "top,bottom" if self.layout == "top-bottom" else "left,right"

    @property
    def main(self) -> bool:
        """The main setting (a 0.9 prior) and its left-right twin: the conditions the headline verdicts read."""
        return self.prior == "0.9" and (self.layout == "top-bottom" or self.model == "resnet18-paper")


# The segmentation conditions: the main setting mirrors street scenes (a top-bottom prior, trained with flips);
# left-right priors train without flips (seg-train's flip auto), and a pretrained backbone sits beside. The main
# prior 0.9 comes first in each block, so an interrupted study has the main setting before the rest. Prior 0 has no
# layout, so it is one condition per backbone (trained with flips either way), not one per layout.
_SWEEP = tuple(SegSetting(layout, prior, model) for model in ("resnet18-paper", "efficientnet-lite0")
               for layout in ("top-bottom", "left-right") for prior in ("0.9", "0", "0.5", "1")
               if not (prior == "0" and layout == "left-right"))
# Networks behind each headline verdict (the GAP study, AugShift, the main segmentation settings): at least five,
# since a Student-t over three has 2 degrees of freedom (t = 4.3); the presets' three stay for the demo and the rest.
MAIN_SEEDS = "0,1,2,3,4"
SEG_SETTINGS = {"smoke": (SegSetting("top-bottom", "0.9"),), "quick": _SWEEP, "paper": _SWEEP}


@dataclass(frozen=True)
class Step:
    name: str  # its folder in OUT
    argv: tuple[str, ...]  # the command and its own flags (preset, out and the common flags are added)
    follows: bool = False  # reads the previous step's output: runs after it, in its chain


# Beyond the paper, on real networks (after the segmentation sweep): the census of the pretrained EfficientNet-Lite
# models, post-hoc debiasing of pretrained Lite0 (fidelity on Fashion-MNIST items, its ImageNet classes unknown
# there) and of a Fashion-MNIST classifier trained here at AugShift's quick protocol (width 16, 4,000 images).
CLASSIFIER = ("train", "--task", "semantic", "--grid", "1", "--width", "16", "--train-size", "4000", "--epochs", "3",
              "--seeds", "0")


def study(preset: str, out: Path) -> list[Step]:
    """The steps of the whole study at ``preset``: the GAP study, the probe, position maps, the channel ranking,
    AugShift, and for each segmentation condition its trained segmenters (seeds of the seg-train preset), their
    reliance (ablate over every network) and the region attack (over every network); then (beyond the smoke
    preset) the census, the debiasing runs and the budget response."""
    main = ("--seeds", MAIN_SEEDS) if preset == "quick" else ()
    steps = [Step(name, (name, *(main if name in ("gap-study", "augshift") else ())))
             for name in ("gap-study", "probe", "position-map", "rank", "augshift")]
    for seg in SEG_SETTINGS[preset]:
        train = f"seg-train-{seg.name}"
        condition = ("--layout", seg.layout, "--layout-prior", seg.prior, "--model", seg.model)
        steps += [Step(train, ("seg-train", *condition, *(main if seg.main else ()))),
                  Step(f"ablate-{seg.name}", ("ablate", "--checkpoint", str(out / train)), follows=True),
                  Step(f"attack-{seg.name}", ("attack", "--checkpoint", str(out / train), "--region", seg.regions),
                       follows=True)]
    if preset != "smoke":
        classifier = out / "train-fmnist" / "seed0" / "checkpoint.pt"
        steps += [Step("census", ("census",)),
                  Step("debias-lite0", ("debias", "--model", "efficientnet-lite0", "--pretrained", "--image-size", "64",
                                        "--score", "fidelity")),
                  Step("train-fmnist", CLASSIFIER),
                  Step("debias-fmnist", ("debias", "--model", "resnet18-paper", "--width", "16", "--weights",
                                         str(classifier)), follows=True),
                  # the longest step last: the GAP study's permutation rows at growing training budgets
                  Step("budget-response", ("budget-response",))]
    return steps


def finished(step: Step, out: Path) -> bool:
    """Whether ``step`` of the study in ``out`` has finished (its ``OUT/<step>/results.json`` exists)."""
    return (out / step.name / "results.json").is_file()


def run_steps(steps: Sequence[Step], preset: str, out: Path, common: Sequence[str], *,
              run_command: Callable[[list[str]], int], progress: bool = True) -> int:
    """Run the unfinished ``steps`` in order (``finished``); stop at the first that fails and return its exit code,
    else 0."""
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(steps, desc="reproduce", unit="step", disable=None if progress else True)
    for step in bar:
        target = out / step.name
        bar.set_postfix_str(step.name)
        if finished(step, out):
            print(f"{step.name}: finished earlier, skipped", flush=True)
            continue
        resume = ["--resume"] if target.with_name(target.name + ".partial").exists() else []
        code = run_command([*step.argv, "--preset", preset, *common, *resume, "--out", str(target)])
        if code != 0:
            return code
    return 0


def chains(steps: Sequence[Step]) -> list[list[Step]]:
    """The study's independent jobs: each step that needs no other alone, and each step that ``follows`` another
    after it in its chain (a segmentation condition's seg-train → ablate → attack; train → debias)."""
    out: list[list[Step]] = []
    for step in steps:
        if step.follows:
            out[-1].append(step)
        else:
            out.append([step])
    return out


def run_chain(steps: Sequence[Step], preset: str, out: Path, common: Sequence[str], progress: bool,
              run_command: Callable[[list[str]], int]) -> int:
    """One job of the study (a chain of steps) run through the command line ``run_command`` in this process; its
    exit code."""
    return run_steps(steps, preset, out, common, run_command=run_command, progress=progress)


def run_study(steps: Sequence[Step], preset: str, out: Path, common: Sequence[str], settings: StudyRunSettings, *,
              run_command: Callable[[list[str]], int], progress: bool = True) -> int:
    """Every chain of ``steps`` through the executor of ``settings``, each step a call of the command line
    ``run_command`` (a module-level function: jobs travel to other processes by its name): the first non-zero exit
    code of a chain, else 0."""
    parallel = settings.executor != "sequential"
    quiet = [*common, "--no-progress"] if parallel and "--no-progress" not in common else list(common)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [Job(chain[0].name.removeprefix("seg-train-"), run_chain, (chain, preset, out, quiet,
                                                                      progress and not parallel, run_command))
            for chain in chains(steps)]
    codes = run_command_jobs(jobs, settings, out, progress=progress and parallel)
    return next((code for code in codes if code), 0)


def check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} for reproduce; allowed: {', '.join(PRESETS)}")
