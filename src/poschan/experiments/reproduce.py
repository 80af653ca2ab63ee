"""`poschan reproduce`: the whole study as one resumable pipeline, ending with its report.

The study's steps (``poschan.studies``: each one experiment command run through the command line, skipped when
finished, resumed when interrupted); the report ``OUT/report.html`` is written when every step has finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from poschan.config import PRESETS
from poschan.errors import UserError
from poschan.experiments.settings import ExecutorSettings, PlaceSettings
from poschan.studies import Step


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


# Beyond the paper, on real networks: post-hoc debiasing of a Fashion-MNIST classifier trained as AugShift's plain
# training is at its quick budget (width 16, 4,000 images, 3 epochs, 32-px views) and seen in the views of AugShift's
# quick protocol (crop 32 of a 37-px canvas), so that AugShift's, shift augmentation's and BlurPool's retraining
# (over plain training) sit on its trade-off; after the segmentation sweep, the census of the pretrained
# EfficientNet-Lite models and post-hoc debiasing of pretrained Lite0 (fidelity on Fashion-MNIST items, its ImageNet
# classes unknown there).
AUGSHIFT_CROP = "32"
CLASSIFIER = ("train", "--task", "semantic", "--grid", "1", "--canvas", AUGSHIFT_CROP, "--width", "16", "--train-size",
              "4000", "--epochs", "3", "--seeds", "0")  # the item centred in the view, as AugShift's plain training


def study(preset: str, out: Path) -> list[Step]:
    """The steps of the whole study at ``preset``: the GAP study, the probe, position maps, the channel ranking,
    AugShift (beyond the smoke preset followed by the classifier debiased beside it), and for each segmentation
    condition its trained segmenters (seeds of the seg-train preset), their reliance (ablate over every network) and
    the region attack (over every network); then (beyond the smoke preset) the census, pretrained Lite0's debiasing
    and the budget response."""
    main = ("--seeds", MAIN_SEEDS) if preset == "quick" else ()
    steps = [Step(name, (name, *(main if name in ("gap-study", "augshift") else ())))
             for name in ("gap-study", "probe", "position-map", "rank", "augshift")]
    if preset != "smoke":  # after AugShift in its chain: the classifier's debiasing reads AugShift's retraining
        classifier = out / "train-fmnist" / "seed0" / "checkpoint.pt"
        steps += [Step("train-fmnist", CLASSIFIER, follows=True),
                  Step("debias-fmnist", ("debias", "--model", "resnet18-paper", "--width", "16", "--weights",
                                         str(classifier), "--crop", AUGSHIFT_CROP, "--retrained",
                                         str(out / "augshift")), follows=True)]
    for seg in SEG_SETTINGS[preset]:
        train = f"seg-train-{seg.name}"
        condition = ("--layout", seg.layout, "--layout-prior", seg.prior, "--model", seg.model)
        steps += [Step(train, ("seg-train", *condition, *(main if seg.main else ()))),
                  Step(f"ablate-{seg.name}", ("ablate", "--checkpoint", str(out / train)), follows=True),
                  Step(f"attack-{seg.name}", ("attack", "--checkpoint", str(out / train), "--region", seg.regions),
                       follows=True)]
    if preset != "smoke":
        steps += [Step("census", ("census",)),
                  Step("debias-lite0", ("debias", "--model", "efficientnet-lite0", "--pretrained", "--image-size", "64",
                                        "--score", "fidelity")),
                  # the longest step last: the GAP study's permutation rows at growing training budgets
                  Step("budget-response", ("budget-response",))]
    return steps


def check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} for reproduce; allowed: {', '.join(PRESETS)}")
