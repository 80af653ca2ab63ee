"""`poschan debias`: remove a classifier's position channels without retraining, and measure what it buys.

The model: ``--model`` (e.g. ``efficientnet-lite0 --pretrained``, or the architecture of a `poschan train` run with
``--weights RUN/seed0/checkpoint.pt``). Its ``--layer`` is ranked (``poschan.rank_channels``, ``--method``; one pass per
seed) on the ``--rank-split`` images, or the ranking is read from ``--ranking`` (a `poschan rank` file of these weights
made on another split). Then ``control.debias.debias_study`` on the ``--eval-split`` images (which may share no image
with the ranked ones): the top-N channels masked (``--mode`` zero or mean) against N random channels, scored by
consistency and circular consistency under shifts and by accuracy (``--score accuracy``: a classifier of the data's
classes) or fidelity to the unmasked model (``fidelity``: the default for photos and for a model without
``--weights``). Writes ranking.json, table.csv (one row per N and channel set), comparisons.csv (ranked − random),
tradeoff.png (with ``--retrained AUGSHIFT_RUN``: beside it, what shift augmentation, AugShift and BlurPool
retraining buy over plain training in a finished `poschan augshift` run of the same data and views, also in
retrained.csv), and with ``--save N`` the model debiased at that N (debiased.pt + debiased.pt.debias.json, see
``control.debias.save_debiased``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from poschan.config import check_at_least, command_defaults, setting
from poschan.control.ablation import channel_counts
from poschan.control.augshift_study import retraining_points
from poschan.control.debias import debias_study, save_debiased, view_channels
from poschan.data.fingerprint import check_disjoint, image_fingerprint
from poschan.data.shift_pairs import ShiftPairTransform
from poschan.data.sources import ImageSet, load_dataset
from poschan.errors import UserError
from poschan.experiments import settings
from poschan.locate.designs import RankSpec
from poschan.locate.rank import rank_channels
from poschan.locate.ranking import ChannelRanking
from poschan.models.registry import build_model
from poschan.models.weights import weights_fingerprint
from poschan.report.debias_figures import debias_figure
from poschan.results import load_run
from poschan.runtime import resolve_device, seeded_torch_rng
from poschan.tables import flat_stats, format_stat, print_comparisons, write_csv, write_tables
from poschan.taps import resolve_layers

EXPERIMENT = "debias"
HELP = "mask a classifier's top-N position channels (no retraining) vs N random ones: consistency gain, accuracy cost"
SCORES = ("auto", "accuracy", "fidelity")
_AS_IS = ("photos", "folder:")  # flipped as they are (as `poschan rank` does); item sets are flipped on canvases


@dataclass
@command_defaults
class Config(settings.RunSettings, settings.RankSizeSettings, settings.NumClassesSettings, settings.BatchSettings, settings.TestSizeSettings,
             settings.HeadSettings, settings.PaddingSettings, settings.NetworkSettings, settings.ImageSizeSettings,
             settings.DataSettings, settings.ShiftViewSettings, settings.CanvasSideSettings, settings.MaskModeSettings,
             settings.ChannelCountSettings, settings.RankingFileSettings, settings.EvalSplitSettings,
             settings.LayerSettings, settings.RankMethodSettings):
    DEFAULTS: ClassVar[dict] = {"model": "efficientnet-lite0", "seeds": [0], "batch_size": 64, "layer": None,
                                "test_size": 500, "eval_split": "test", "n": ["1%", "2%", "5%", "10%", "25%"]}
    FLAGS: ClassVar[dict] = {"seeds": {"help": "ranking seeds, e.g. 0,1,2 (each one pass; the first also draws the "
                                               "random channels and the shifts)"},
                             "weights": {"help": "state dict of the model, e.g. a `poschan train` checkpoint "
                                                 "(RUN/seed0/checkpoint.pt; never pickled code)"},
                             "layer": {"help": "the layer whose channels are ranked and masked (see `poschan layers`) "
                                               "or a stage name; default: backbone"},
                             "test_size": {"help": "evaluation images (the first of --eval-split)"},
                             "rank_size": {"help": "rank-split images (the first; null: all)"},
                             "image_size": {"help": "side of photos / folder images (default 32)"},
                             "head": {"help": "gap-fc or gapnet (as the checkpoint was trained)"},
                             "canvas": {"help": "canvas side S of the views (default round(s * 256 / 224))"},
                             "eval_split": {"help": "the split evaluated; may share no image with --rank-split"},
                             "mode": {"help": "zero, or mean (each masked channel takes its mean over the "
                                              "evaluation images)"}}

    rank_split: str = setting("train", "the split ranked (photos: train, test, all; folder: a sub-folder)")
    score: str = setting("auto", "accuracy (a classifier of the data's classes) or fidelity (agreement with the "
                                 "unmasked model); auto: accuracy with --weights on labelled data, else fidelity",
                         choices=SCORES)
    random_draws: int = setting(5, "random-channel draws per N (>= 5)")
    passes: int = setting(5, "random crop pairs and roll pairs per evaluation image")
    save: str | None = setting(None, "also save the model debiased at this N (e.g. 5%): debiased.pt and its sidecar")
    retrained: str | None = setting(None, "a finished `poschan augshift` run (same data and views, --score "
                                          "accuracy) whose retraining methods join the trade-off figure")

    def validate(self) -> None:
        self.spec().validate()
        if self.layer is not None and not self.layer.strip():
            raise UserError("layer must name one layer (see `poschan layers MODEL`), e.g. backbone or stage4")
        if self.eval_split is None:
            raise UserError("eval_split must name the split evaluated, e.g. test")
        if not self.n:
            raise UserError("--n needs at least one channel count, e.g. 1%,5%,25%")
        if self.random_draws < 5:
            raise UserError(f"random_draws must be >= 5 (the random control needs a spread), got {self.random_draws}")
        check_at_least(self, 1, "passes", "batch_size", "width", "num_classes")
        check_at_least(self, 1, "rank_size", "test_size", "crop", "canvas", "image_size", optional=True)
        check_at_least(self, 0, "max_shift", optional=True)
        if self.rank_split == self.eval_split and not self.ranking:
            raise UserError(f"--rank-split and --eval-split are both {self.eval_split!r}; rank on other images")

    def spec(self) -> RankSpec:
        return RankSpec(self.method, flip_input="image" if self.data.startswith(_AS_IS) else "canvas")

    def resolved_score(self) -> str:
        if self.score != "auto":
            return self.score
        return "accuracy" if self.weights and self.data != "photos" else "fidelity"


@dataclass
class DebiasPlan:
    """Everything validated before any file is written."""

    config: Config
    model: nn.Module
    layer: str
    rank_set: ImageSet | None  # None: the ranking was given
    eval_set: ImageSet  # as the model takes it
    ranking: ChannelRanking | None
    shift: ShiftPairTransform
    score: str
    device: torch.device
    retrained: list[dict]  # control.augshift_study.retraining_points of --retrained (empty without it)


def _split(c: Config, split: str, limit: int | None) -> ImageSet:
    return load_dataset(c.data, split, c.data_root, limit=limit, image_size=c.image_size)


def prepare(config: Config) -> DebiasPlan:
    """Load both splits (refused when they share an image), build the model, check the layer, ranking, score and
    views on a few images: all bad input fails here."""
    c, device = config, resolve_device(config.device)
    eval_set = _split(c, c.eval_split, c.test_size)
    rank_set = None if c.ranking else _split(c, c.rank_split, c.rank_size)
    if rank_set is not None:
        check_disjoint(rank_set, eval_set)
    with seeded_torch_rng(c.seeds[0]):  # random-init weights: a function of the first seed
        model = build_model(c.model, c.num_classes, eval_set.channels, width=c.width, head=c.head, padding=c.padding,
                            pretrained=c.pretrained, weights=c.weights)
    model.eval().requires_grad_(False).to(device)
    (layer,) = resolve_layers(model, [c.layer or "backbone"])
    score = c.resolved_score()
    if score == "accuracy" and (c.data == "photos" or model.num_classes != len(eval_set.classes)):
        raise UserError(f"--score accuracy needs a classifier of the data's classes ({len(eval_set.classes)} of "
                        f"{c.data}; the model predicts {model.num_classes}); use --score fidelity")
    images = eval_set.for_model(model.in_chans, model.input_norm)
    shift = ShiftPairTransform(c.crop or max(images.images.shape[-2:]), c.canvas)
    channels = view_channels(model, layer, images.images[:1], shift, device)
    counts = channel_counts(c.n, channels)
    if c.save is not None and channel_counts([c.save], channels)[0] not in counts:
        raise UserError(f"--save {c.save} names an N that --n does not study ({', '.join(c.n)})")
    ranking = None
    if c.ranking:
        ranking = ChannelRanking.load(c.ranking)
        ranking.check_for(layer, channels, weights=weights_fingerprint(model),
                          eval_images=image_fingerprint(eval_set.images), source=f"--ranking {c.ranking}")
    plan = DebiasPlan(c, model, layer, rank_set, images, ranking, shift, score, device, _retrained(c, shift, score))
    if rank_set is not None:
        rank(plan, rank_set.subset(3), [0])  # canvas fit and enough images (fewer than 3: refused with the count)
    return plan


def _retrained(c: Config, shift: ShiftPairTransform, score: str) -> list[dict]:
    """The retraining points of ``--retrained``: refused unless it is an AugShift run of the same data, scored by
    accuracy on the same views (crop, canvas, largest shift), so both kinds of point measure the same thing."""
    if c.retrained is None:
        return []
    run = load_run(c.retrained)
    if run.experiment != "augshift":
        raise UserError(f"--retrained {c.retrained} is a {run.experiment} run; it must be a `poschan augshift` run")
    p = run.metrics["protocol"]
    theirs = (run.config["data"], p["crop"], p["canvas"], p["circular_max_shift"], "accuracy")
    ours = (c.data, shift.crop, shift.canvas, shift.largest_roll(c.max_shift), score)
    if theirs != ours:
        raise UserError(f"--retrained {c.retrained} measured data, crop, canvas, largest roll and score "
                        f"{', '.join(map(str, theirs))}; this run: {', '.join(map(str, ours))}; make them equal")
    return retraining_points(run.metrics)


def rank(plan: DebiasPlan, images: ImageSet, seeds: list[int], progress: bool = False) -> ChannelRanking:
    c = plan.config
    return rank_channels(plan.model, plan.layer, images, plan.config.spec(), seeds=seeds, batch_size=c.batch_size,
                         device=plan.device, model_name=c.model, progress=progress)


def run(plan: DebiasPlan, work: Path, *, progress: bool = True) -> dict:
    """Rank (unless given), run the study, write ranking.json, the tables, the figure (and the saved model)."""
    c = plan.config
    ranking = plan.ranking or rank(plan, plan.rank_set, list(c.seeds), progress)
    ranking.data["eval_split"] = c.eval_split
    ranking.save(work / "ranking.json")
    labels = plan.eval_set.labels if plan.score == "accuracy" else None
    result = debias_study(plan.model, plan.layer, plan.eval_set.images, labels, ranking=ranking, fractions=c.n,
                          mode=c.mode, shift=plan.shift, random_draws=c.random_draws, seed=c.seeds[0],
                          passes=c.passes, max_shift=c.max_shift, batch_size=c.batch_size, device=plan.device)
    write_tables(work, result.table(), result.comparisons)
    if plan.retrained:
        write_csv(work / "retrained.csv", [flat_stats({k: v for k, v in p.items() if k != "label"})
                                           for p in plan.retrained])
    debias_figure(result.rows, work / "tradeoff.png", cost_label=f"{plan.score} cost",
                  title=f"{c.method} · {c.model}{' (pretrained)' if c.pretrained else ''} · {plan.layer} · "
                        f"{c.data} · {c.mode}", retrained=plan.retrained)
    saved = None
    if c.save is not None:
        n = channel_counts([c.save], result.channels)[0]
        saved = {"n": n, "channels": ranking.top(result.key, n).tolist(), "file": "debiased.pt",
                 "sidecar": "debiased.pt.debias.json"}
        save_debiased(plan.model, plan.layer, saved["channels"], c.mode, result.means, work / "debiased.pt")
    return {**result.metrics(), "data": c.data, "rank_split": None if c.ranking else c.rank_split,
            "eval_split": c.eval_split, "rank_images": ranking.n_images, "ranking_source": c.ranking or "ranking.json",
            "saved": saved, **({"retrained": plan.retrained} if plan.retrained else {})}


def print_summary(metrics: dict) -> None:
    score = metrics["score"]
    u = metrics["unmasked"]
    print(f"{metrics['ranking']} ranking, {metrics['channels']} channels of {metrics['layer']}, mode "
          f"{metrics['mode']}, {metrics['protocol']['images']} images")
    print(f"unmasked: consistency {format_stat(u['consistency'])}, circular consistency "
          f"{format_stat(u['circular_consistency'])}, {score} {format_stat(u[score])}")
    print(f"{'N':>5} {'set':<7} {'consistency gain':>26} {score + ' cost':>26}")
    for r in metrics["rows"]:
        print(f"{r['n']:>5} {r['set']:<7} {format_stat(r['consistency_gain'], signed=True):>26} "
              f"{format_stat(r['cost'], signed=True):>26}")
    print_comparisons(metrics["comparisons"])
    for point in metrics.get("retrained", []):
        print(f"retrained, {point['label']}: consistency gain {format_stat(point['consistency_gain'], signed=True)}, "
              f"accuracy cost {format_stat(point['cost'], signed=True)} (over plain training)")
