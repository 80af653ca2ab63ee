"""What `ablate` and `attack` (and `seg-train`) share on the command line: the scene settings of a config, the
segmenter and data a config names, the ranking file it may give, figure titles, and the statistics of their scores
(``poschan.stats`` over per-image IoU counts, ``metrics.segmentation.iou_counts``). The methods live in the
library: data.segdata (scenes and real data, splits), models.segmentation (any segmenter), locate.segmentation
(its rankings), control.ablation and control.attack."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from poschan import stats
from poschan.control.ablation import SegEval
from poschan.data.fingerprint import image_fingerprint
from poschan.data.scenes import SceneSpec
from poschan.data.segdata import EvalSet, SegData
from poschan.errors import UserError
from poschan.locate.ranking import ChannelRanking
from poschan.metrics.segmentation import miou_of
from poschan.models.segmentation import Segmenter, SegNet, load_segmenter

SCENE_FIELDS = ("side", "min_items", "max_items", "layout_prior", "layout", "grouping")


def scene_spec(c: object) -> SceneSpec:
    """The SceneSpec named by a config's scene fields (side, min_items, max_items, layout_prior, layout, grouping)."""
    spec = SceneSpec(side=c.side, min_items=c.min_items, max_items=c.max_items, layout_prior=c.layout_prior,
                     layout=c.layout, grouping=c.grouping)
    spec.validate()
    return spec


def describe(data: SegData) -> str:
    """A short title for figures: the scenes' layout prior, or the dataset."""
    return f"prior {data.scenes.layout_prior} {data.scenes.layout}" if data.synthetic else data.source


@dataclass
class LoadedModel:
    """The segmenter a config names (eval mode, on the run's device), the data it is evaluated on, and the
    evaluation images: ``test`` as the data gives them (their fingerprint guards ``--ranking``), ``model_test``
    as the model takes them (``Segmenter.in_chans`` / ``input_norm``)."""

    segmenter: Segmenter
    data: SegData
    test: EvalSet
    model_test: EvalSet
    channels: int  # of the ranked and masked layer
    fingerprint: str

    @property
    def module(self) -> torch.nn.Module:
        return self.segmenter.module

    @property
    def layer(self) -> str:
        return self.segmenter.layer

    def label(self, width: bool = False) -> str:
        """The model for figure titles (a seg-train SegNet: its backbone, with ``width`` its width multiplier)."""
        module = self.segmenter.module
        if isinstance(module, SegNet) and self.layer == module.feature_layer:
            return f"{module.spec.model} w{module.spec.width}" if width else module.spec.model
        return f"{self.segmenter.name} · {self.layer}"


def _scene_overrides(c: object) -> dict:
    return {key: getattr(c, key) for key in SCENE_FIELDS if getattr(c, key, None) is not None}


def load_model(c: object, device: torch.device) -> LoadedModel:
    """The segmenter of a config (``checkpoint``, or ``model`` / ``weights`` / ``layer``) through
    ``models.segmentation.load_segmenter`` and its data: a checkpoint's own (scene fields given override it), or
    ``data`` (default scenes) with the config's scene fields for ``--model``; the first ``test_size`` evaluation
    images. A model that does not predict the data's classes is refused."""
    if c.checkpoint:
        seg = load_segmenter(checkpoint=c.checkpoint, layer=c.layer)
        data = SegData.from_meta(seg.meta, c.data_root, c.checkpoint)
        if c.data is not None and c.data != data.source:
            raise UserError(f"{c.checkpoint} was trained on {data.source!r}; it is evaluated on its own data "
                            f"(drop --data {c.data})")
        data = dataclasses.replace(data, scenes=dataclasses.replace(data.scenes, **_scene_overrides(c)))
    else:
        data = SegData(c.data or "scenes", SceneSpec(**_scene_overrides(c)), c.data_root)
        data.validate()
        seg = load_segmenter(model=c.model, weights=c.weights, num_classes=data.num_classes(), layer=c.layer,
                             seed=c.seeds[0])
    data.validate()
    seg.module.to(device)
    test = data.test_set(c.test_size)
    model_test = test.for_model(seg.in_chans, seg.input_norm)
    probe = SegEval(seg.module, seg.layer, (model_test.images[:1], model_test.masks[:1]), batch_size=1,
                    device=device)
    if probe.num_classes != data.num_classes():
        raise UserError(f"{seg.name} predicts {probe.num_classes} classes; the data ({data.source}) has "
                        f"{data.num_classes()}")
    return LoadedModel(seg, data, test, model_test, probe.channels, seg.fingerprint())


def read_ranking(path: str, loaded: LoadedModel) -> ChannelRanking:
    """A ranking file (locate.ranking.ChannelRanking) of this model's layer, its channel count and weights, not
    computed on the evaluation split (by name) nor on the evaluation images (by content); else a UserError."""
    ranking = ChannelRanking.load(path)
    ranking.check_for(loaded.layer, loaded.channels, weights=loaded.fingerprint,
                      eval_images=image_fingerprint(loaded.test.images), source=f"ranking {path}")
    eval_split = loaded.data.eval_split
    if ranking.data.get("split") == eval_split:
        raise UserError(f"ranking {path} was computed on the evaluation split {eval_split!r}; rank on another split")
    return ranking


ITEMS = "test images"
ONE_MODEL = "; one trained model: the variation between training seeds is not covered"


NETWORKS = "trained networks"


def one_model(stat: dict, networks: int = 1) -> dict:
    """``stat`` with its method saying that it is of one trained model (ablate, attack), when ``networks`` is 1."""
    if "method" in stat and networks == 1:
        stat["method"] += ONE_MODEL
    return stat


def checkpoints(path: str) -> list[str]:
    """The checkpoints a ``--checkpoint`` names: a file, or every ``seed<S>/checkpoint.pt`` of a seg-train run."""
    root = Path(path)
    if not root.is_dir():
        return [path]
    found = sorted(root.glob("seed*/checkpoint.pt"), key=lambda p: int(p.parent.name.removeprefix("seed") or -1))
    if not found:
        raise UserError(f"{path} is a folder without seed<S>/checkpoint.pt; give a seg-train run or a checkpoint")
    return [str(p) for p in found]


def load_networks(c: object, device: torch.device) -> tuple[list[LoadedModel], list[str]]:
    """Every network a config names (each checkpoint of ``--checkpoint``, or the ``--model``) and their sources;
    refused when they differ in their layer's channels or test images (not one seg-train run)."""
    paths = checkpoints(c.checkpoint) if c.checkpoint else [""]
    networks = [load_model(dataclasses.replace(c, checkpoint=p), device) for p in paths]
    first = networks[0]
    for net in networks[1:]:
        if net.channels != first.channels or not torch.equal(net.test.images, first.test.images):
            raise UserError(f"the networks of {c.checkpoint} differ in their layer or test images; give "
                            "networks of one seg-train run")
    return networks, paths if c.checkpoint else [c.model]


def score(groups: list[np.ndarray], unit: str, metric: stats.Metric = miou_of) -> dict:
    """mIoU (or ``metric``, in [0, 1]) of each unit's per-image IoU counts (n_images, 3K), with its 95% interval over
    the ``unit`` and the test images."""
    return stats.estimate(groups, metric, bounds=(0.0, 1.0), unit=unit, item=ITEMS)


def beside(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two sets of per-image IoU counts of the same images side by side: rows for ``halves_difference_of``."""
    return np.concatenate([a, b], axis=1)


def halves_difference_of(metric: stats.Metric) -> stats.Metric:
    """``metric`` (in [0, 1]) of the first half of ``beside`` rows minus ``metric`` of the second half."""
    def difference(means: np.ndarray) -> np.ndarray:
        half = means.shape[-1] // 2
        return metric(means[..., :half]) - metric(means[..., half:])
    return difference


def drop(clean: list[np.ndarray], after: list[np.ndarray], unit: str, metric: stats.Metric = miou_of) -> dict:
    """Clean mIoU (or ``metric``, in [0, 1]) − that after an edit, per unit (each with its clean counts), on the
    same test images: a paired difference in [-1, 1]."""
    return stats.paired_difference(clean, after, metric, bounds=(-1.0, 1.0), unit=unit, item=ITEMS)


def paired_units(a: list, b: list, a_unit: str, b_unit: str) -> tuple[list, list, str, str]:
    """Unit i of ``a`` beside unit i of ``b`` (independent units: any pairing estimates the variance of a
    difference), cycling the shorter side when the counts differ: (a's, b's, the pairs' unit name, what was done)."""
    m = max(len(a), len(b))
    unit = f"({a_unit[:-1]}, {b_unit[:-1]}) pairs"
    if len(a) == len(b):
        return a, b, unit, f"; {a_unit[:-1]} i paired with {b_unit[:-1]} i"
    fewer, count = (a_unit, len(a)) if len(a) < len(b) else (b_unit, len(b))
    shared = (f"the one {fewer[:-1]} is in every pair, so its variation is not covered" if count == 1 else
              f"each of the {count} {fewer} is in several pairs, so their variation is understated")
    return ([a[i % len(a)] for i in range(m)], [b[i % len(b)] for i in range(m)], unit,
            f"; {len(a)} {a_unit} and {len(b)} {b_unit} paired cyclically into {m} pairs (i mod {len(a)} with i mod "
            f"{len(b)}): {shared}")


def ranked_minus_random(ranked: list[np.ndarray], random: list[np.ndarray], metric: stats.Metric, *,
                        bounds: tuple[float, float], ranked_unit: str = "ranking seeds",
                        random_unit: str = "random draws", networks: int = 1) -> dict:
    """Drop of ``metric`` (clean − after) with the ranked channels masked minus that with the control's, with its
    interval and p-value: computed as ``metric``(control) − ``metric``(ranked) on the same images (the clean score
    cancels), the units paired by ``paired_units``."""
    a, b, unit, note = paired_units(ranked, random, ranked_unit, random_unit)
    out = stats.paired_difference(b, a, metric, bounds=bounds, unit=unit, item=ITEMS)
    out["method"] += note + "; ranked drop − control drop = control-masked − ranked-masked score"
    return one_model(out, networks)


def comparison(stat: dict, name: str, a: str, b: str, question: str) -> dict:
    """A comparison entry of ``metrics["comparisons"]``: the paired difference ``stat`` with its labels."""
    return {"name": name, "a": a, "b": b, "question": question, **stat}
