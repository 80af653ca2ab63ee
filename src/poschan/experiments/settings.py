"""The settings experiment commands share: one dataclass per concern, each field declared once with its flag.

A command's ``Config`` composes the concerns it needs by inheritance and adds its own fields; where it needs another
default for a shared field it says so in ``DEFAULTS`` (applied by ``build_config`` below the preset), and another
help text in ``FLAGS``. A ``DEFAULTS`` value None where the field's type has no None means "not given: the command
works it out" (position-map's pretrained; ablate's and attack's model, data and scenes: the checkpoint's); a user
cannot give None. Fields come out in the reverse order of the bases (dataclass inheritance), own fields last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from poschan.config import check_at_least, command_defaults, setting
from poschan.engine import SCHEDULES, check_options
from poschan.errors import UserError
from poschan.execution import COMPILE_MIN_STEPS, COMPILE_MODES, MEMORY_FORMATS, PRECISIONS, resolve_precision
from poschan.executor import EXECUTORS, check_executor
from poschan.locate.designs import METHODS
from poschan.measure.readout import DEFAULT_C
from poschan.models.padding import PADDING_MODES
from poschan.taps import MASK_MODES

FOLDER_HELP = ("folder:PATH (one sub-folder per split: PATH/train/<class>/<image>, PATH/test/...; "
               "splits sharing an image are refused)")


# -- the run ---------------------------------------------------------------------------------------------------------

@dataclass
class PlaceSettings:
    """Where a run computes and finds its data: flags of every experiment command and of ``reproduce``."""

    device: str = setting("cpu", "cpu, cuda, cuda:N")
    data_root: str | None = setting(None, "directory holding the dataset files")


@dataclass
class RunSettings(PlaceSettings):
    """Every experiment command has these (with the command line's own --preset, --config, --out, --resume)."""

    seeds: list[int] = setting([0, 1, 2], "comma-separated seeds, e.g. 0,1,2 (or --seed N)")
    preset: str = setting("paper", "the preset the config was resolved from (flag --preset)", cli=False)


# -- data ------------------------------------------------------------------------------------------------------------

@dataclass
class DataSettings:
    data: str = setting("fashion-mnist", f"fashion-mnist (default), cifar10, photos, {FOLDER_HELP}")


@dataclass
class TrainSizeSettings:
    train_size: int | None = setting(None, "training images (default: all)")


@dataclass
class TestSizeSettings:
    test_size: int | None = setting(None, "test images (default: all)")


@dataclass
class BatchSettings:
    batch_size: int = setting(48, "images per step")


@dataclass
class ImageSizeSettings:
    image_size: int | None = setting(None, "input side in pixels")


# -- canvases: images placed in one cell of a k×k grid -----------------------------------------------------------

@dataclass
class TaskSettings:
    task: str = setting("location", "the label: location (the cell) or semantic (the class)",
                        choices=("location", "semantic"))


@dataclass
class GridSettings:
    grid: int = setting(3, "k of the k×k grid")


@dataclass
class CanvasSideSettings:
    canvas: int | None = setting(None, "canvas side in pixels (default: grid × image side)")


@dataclass
class BackgroundSettings:
    background: str = setting("mean", "canvas fill: mean, black, noise, photo")


@dataclass
class CanvasSettings(BackgroundSettings, CanvasSideSettings, GridSettings):
    """A k×k-grid canvas: grid, canvas, background."""


# -- the model -------------------------------------------------------------------------------------------------------

@dataclass
class ModelSettings:
    model: str = setting("resnet18-paper", "model name (see `poschan models`) or path/file.py:factory")
    weights: str | None = setting(None, "state_dict file to load (never pickled code)")


@dataclass
class WidthSettings:
    width: int = setting(64, "width multiplier of resnet18-paper / vgg (64 = paper)")


@dataclass
class PretrainedSettings:
    pretrained: bool = setting(False, "use the model's packaged weights")


@dataclass
class NetworkSettings(PretrainedSettings, WidthSettings, ModelSettings):
    """The network a command builds: by name (or a user's factory), its width, packaged or file weights."""


@dataclass
class PaddingSettings:
    padding: str = setting("zeros", "zeros, none, circular, reflect, replicate, partial")


@dataclass
class PaddingsSettings:
    paddings: list[str] = setting(list(PADDING_MODES), f"comma-separated padding modes: {', '.join(PADDING_MODES)}")


@dataclass
class HeadSettings:
    head: str = setting("gap-fc", "gap-fc or gapnet")


@dataclass
class LayerSettings:
    layer: str = setting("backbone", "one layer name (see `poschan layers`) or stage name (stage1..)")


@dataclass
class LayersSettings:
    layers: list[str] = setting([], "comma-separated layer names (see `poschan layers`) or stage names (stage1..); "
                                    "default: every stage and backbone")


@dataclass
class NumClassesSettings:
    num_classes: int = setting(10, "classes of the head (a checkpoint given with --weights must have as many)")


# -- channels: ranking and masking them --------------------------------------------------------------------------

@dataclass
class RankMethodSettings:
    method: str = setting("flip", f"ranking method: {', '.join(METHODS)} (see poschan.ranking)")


@dataclass
class RankSizeSettings:
    rank_size: int | None = setting(500, "images ranked (the first of the split; null: all)")


@dataclass
class TopListSettings:
    top_n: int = setting(10, "length of the top lists (default 10)")


@dataclass
class EvalSplitSettings:
    eval_split: str | None = setting(None, "the split a later evaluation uses; may share no image with the ranked one")


@dataclass
class RankingFileSettings:
    ranking: str | None = setting(None, "ranking.json of this model and layer made on another split (instead of "
                                        "ranking here)")


@dataclass
class ChannelCountSettings:
    n: list[str] = setting(["5%", "10%", "25%", "50%"], "channel counts or percentages, e.g. 5%,10%,25%")


@dataclass
class MaskModeSettings:
    mode: str = setting("zero", "zero, or mean (each masked channel takes its mean over the images it was measured "
                                "on)", choices=MASK_MODES)


@dataclass
class ReadoutSettings:
    readout_c: float = setting(DEFAULT_C,
                               f"inverse L2 strength of the logistic-regression readout (default {DEFAULT_C})")


# -- shifted views (poschan.data.shift_pairs) ----------------------------------------------------------------------

@dataclass
class ShiftViewSettings:
    crop: int | None = setting(None, "view side s in pixels (default: the image side)")
    max_shift: int | None = setting(None, "circular consistency rolls up to this many px (default S - s)")


# -- training --------------------------------------------------------------------------------------------------------

@dataclass
class LearningRateSettings:
    lr: float = setting(1e-3, "learning rate (Adam)")


@dataclass
class ExecutionSettings:
    """How training runs on this hardware (poschan.execution): results change by float rounding only."""

    memory_format: str = setting("channels_last", "channels_last or contiguous", choices=MEMORY_FORMATS)
    compile: str | bool = setting("auto", "torch.compile the training forward: auto (runs of at least "
                                          f"{COMPILE_MIN_STEPS:,} steps, where it pays), always or never",
                                  choices=COMPILE_MODES)
    precision: str = setting("auto", "auto (bf16 autocast of training where the hardware has native bf16: CUDA, "
                                     "AMX-BF16 or AVX512-BF16 CPUs; else fp32), fp32 or bf16; a command defaults "
                                     "to fp32 where the paired check (results/precision-check) has not shown bf16 "
                                     "to leave every result within 0.01", choices=PRECISIONS)


@dataclass
class FitSettings(ExecutionSettings, LearningRateSettings, BatchSettings, TestSizeSettings, TrainSizeSettings):
    """Training a network with Adam (the paper's protocol by default: 20 epochs, lr 1e-3, betas (0.5, 0.999),
    constant rate)."""

    epochs: int = setting(20, "training epochs")
    betas: list[float] = setting([0.5, 0.999], "Adam's betas", cli=False)
    schedule: str = setting("constant", "learning-rate schedule: constant (the paper's) or one-cycle (peak --lr)",
                            choices=SCHEDULES)

    def schedule_fields(self) -> dict:
        """The fields of these settings that another command's training config takes over unchanged."""
        return {name: getattr(self, name) for name in ("memory_format", "compile", "precision", "schedule")}

    def fit_options(self, device: torch.device) -> dict:
        """The keyword arguments of engine.fit these settings name (the precision resolved for ``device``); refused
        with one line when a value is unknown."""
        check_options(self.schedule, self.memory_format, self.compile)  # before the output folder exists
        return {"lr": self.lr, "betas": tuple(self.betas), "schedule": self.schedule,
                "memory_format": self.memory_format, "compile": self.compile,
                "precision": resolve_precision(self.precision, device)}


@dataclass
class TrainingSettings(FitSettings):
    """Training and testing a classifier over seeds (the classification commands: train, gap-study, augshift)."""

    test_passes: int = setting(1, "passes over the test images (random draws per pass)")


# -- what an experiment compares -------------------------------------------------------------------------------------

@dataclass
class MethodsSettings:
    methods: list[str] = setting([], "comma-separated methods to compare")


# -- segmentation ----------------------------------------------------------------------------------------------------

@dataclass
class SceneSettings:
    """Fashion-MNIST scenes (poschan.data.scenes.SceneSpec)."""

    side: int = setting(96, "scene side in pixels")
    min_items: int = setting(1, "fewest items per scene")
    max_items: int = setting(4, "most items per scene")
    layout_prior: float = setting(0.0, "probability in [0, 1] that an item lies in its class's home region")
    layout: str = setting("left-right", "left-right or top-bottom (where the home regions lie)")
    grouping: str = setting("confusable", "halves (classes 0-4 | 5-9) or confusable (look-alike classes apart)")


@dataclass
class CheckpointSettings:
    checkpoint: str = setting("", "seg-train checkpoint (RUN/seed<S>/checkpoint.pt)")


@dataclass
@command_defaults
class SegEvalSettings(RunSettings, ChannelCountSettings, BatchSettings, TestSizeSettings, SceneSettings, DataSettings,
                      LayerSettings, ModelSettings, CheckpointSettings):
    """What `ablate` and `attack` share: a segmenter (a seg-train checkpoint, or a torchvision segmentation model /
    a user's factory with its weights and layer), its data, ranking and evaluation images, channel counts.
    Model, layer, data and scenes default to None: the checkpoint's (with --model, see the help texts)."""

    DEFAULTS: ClassVar[dict] = {"test_size": 2000, "batch_size": 64, "model": None, "layer": None, "data": None,
                                "side": None, "min_items": None, "max_items": None, "layout_prior": None,
                                "layout": None, "grouping": None}
    FLAGS: ClassVar[dict] = {
        "test_size": {"help": "test images"},
        "model": {"help": "instead of --checkpoint, a segmentation model: tv:deeplabv3_resnet50, "
                          "tv:deeplabv3_resnet101, tv:fcn_resnet50, tv:lraspp_mobilenet_v3_large (never downloaded) "
                          "or FILE.py:FACTORY (with --layer)"},
        "weights": {"help": "state dict of --model (torchvision key names; never pickled code); default: random "
                            "weights, a function of the first seed"},
        "layer": {"help": "layer whose channels are ranked and masked (default: the checkpoint's feature layer; tv: "
                          "backbone.layer4, lraspp backbone.16)"},
        "data": {"help": "with --model: scenes (Fashion-MNIST scenes, default), voc:PATH or cityscapes:PATH; a "
                         "checkpoint evaluates on its own"},
        "side": {"help": "scene side in pixels (default: the checkpoint's; with --model 96)"},
        "min_items": {"help": "fewest items per scene (default: the checkpoint's; with --model 1)"},
        "max_items": {"help": "most items per scene (default: the checkpoint's; with --model 4)"},
        "layout_prior": {"help": "probability that an item lies in its class's home region (default: the "
                                 "checkpoint's; with --model 0)"},
        "layout": {"help": "left-right or top-bottom (default: the checkpoint's; with --model left-right)"},
        "grouping": {"help": "halves or confusable (default: the checkpoint's; with --model confusable)"},
    }

    random_seeds: int = setting(5, "random-channel draws per N (>= 5)")
    rank_scenes: int = setting(2000, "rank-split images per ranking seed")

    def validate(self) -> None:
        if bool(self.checkpoint) == bool(self.model):
            raise UserError("give --checkpoint or --model, not both" if self.checkpoint else
                            "--checkpoint or --model is required: a seg-train checkpoint (e.g. RUN/seed0/checkpoint.pt), "
                            "tv:deeplabv3_resnet50 (etc.) or FILE.py:FACTORY with --layer")
        if self.random_seeds < 5:
            raise UserError(f"random_seeds must be >= 5 (the random control needs a spread), got {self.random_seeds}")
        check_at_least(self, 3, "rank_scenes", "test_size", "batch_size")


# -- where the independent trainings run -----------------------------------------------------------------------------

@dataclass
class ExecutorSettings:
    """How a command's independent jobs (variants × seeds) are scheduled (poschan.executor); a resume may change
    these settings (results.SCHEDULING_KEYS). Results do not depend on the executor or the address; ``workers`` sets
    each job's torch threads, hence the float rounding of its training."""

    executor: str = setting("sequential", "sequential (in this process), local (worker processes) or ray (a Ray "
                                          "instance started here, or the cluster at --address)", choices=EXECUTORS)
    workers: int = setting(1, "jobs at once; each job computes with (torch's threads here) // workers threads, "
                              "whatever the executor, so runs with the same --workers agree bit for bit")
    address: str | None = setting(None, "address of a running Ray cluster (e.g. ray://HOST:10001; with --executor "
                                        "ray)")

    def check_executor(self) -> None:
        """Refuse an unknown executor, workers < 1, an address without ray, or ray when it is not installed."""
        check_executor(self.executor, self.workers, self.address)
