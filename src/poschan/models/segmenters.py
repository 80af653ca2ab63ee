"""Segmenters on their evaluation data, as `ablate` and `attack` study them and a notebook loads them: the networks
of a `seg-train` run (every ``seed<S>/checkpoint.pt``) or one checkpoint, or any segmentation model by name with
its weights and layer (``models.segmentation.load_segmenter``); each with the data it is evaluated on
(``data.segdata.SegData``: a checkpoint's own, scene settings overridable) and its fixed evaluation images."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from poschan.data.scenes import SceneSpec
from poschan.data.segdata import EvalSet, SegData
from poschan.errors import UserError
from poschan.models.segmentation import Segmenter, SegNet, load_segmenter, logits_of
from poschan.runtime import eval_mode
from poschan.taps import capture, get_layer

SCENE_FIELDS = ("side", "min_items", "max_items", "layout_prior", "layout", "grouping")  # of SceneSpec, overridable


def describe(data: SegData) -> str:
    """A short title for figures: the scenes' layout prior, or the dataset."""
    return f"prior {data.scenes.layout_prior} {data.scenes.layout}" if data.synthetic else data.source


@dataclass
class LoadedSegmenter:
    """A segmenter (eval mode, on its device), the data it is evaluated on, and the evaluation images: ``test`` as
    the data gives them (their fingerprint guards a ranking file), ``model_test`` as the model takes them
    (``Segmenter.in_chans`` / ``input_norm``); ``source``: its checkpoint, or the model's name."""

    segmenter: Segmenter
    data: SegData
    test: EvalSet
    model_test: EvalSet
    channels: int  # of the ranked and masked layer
    fingerprint: str
    source: str

    @property
    def module(self) -> nn.Module:
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


def _layer_and_classes(seg: Segmenter, image: Tensor, device: torch.device | str) -> tuple[int, int]:
    """(channels of ``seg.layer``, classes predicted) from one forward of ``image`` (1, C, H, W)."""
    get_layer(seg.module, seg.layer)
    with torch.no_grad(), eval_mode(seg.module), capture(seg.module, [seg.layer]) as store:
        logits = logits_of(seg.module(image.to(device)))
    fmap = store[seg.layer]
    if not isinstance(fmap, Tensor) or fmap.dim() != 4:
        raise UserError(f"layer {seg.layer!r} does not output a (B, C, H, W) feature map; pick a convolutional layer")
    return fmap.shape[1], logits.shape[1]


def load_segmenter_on_data(*, checkpoint: str | Path | None = None, model: str | None = None,
                           weights: str | Path | None = None, layer: str | None = None, data: str | None = None,
                           scenes: Mapping[str, object] | None = None, data_root: str | None = None,
                           test_size: int = 2000, seed: int = 0, device: torch.device | str = "cpu"
                           ) -> LoadedSegmenter:
    """One segmenter (``checkpoint``, or ``model`` / ``weights`` / ``layer``, see ``load_segmenter``; ``seed``: the
    random weights of a model without weights) on its data: a checkpoint's own (``data`` must then be None or the
    same), else ``data`` (default "scenes"); ``scenes``: SceneSpec fields (SCENE_FIELDS; None values keep the
    data's); the first ``test_size`` evaluation images. A model that does not predict the data's classes is
    refused."""
    overrides = {key: value for key, value in (scenes or {}).items() if value is not None}
    if checkpoint:
        seg = load_segmenter(checkpoint=checkpoint, weights=weights, layer=layer)
        found = SegData.from_meta(seg.meta, data_root, str(checkpoint))
        if data is not None and data != found.source:
            raise UserError(f"{checkpoint} was trained on {found.source!r}; it is evaluated on its own data "
                            f"(drop --data {data})")
        found = dataclasses.replace(found, scenes=dataclasses.replace(found.scenes, **overrides))
    else:
        found = SegData(data or "scenes", SceneSpec(**overrides), data_root)
        found.validate()
        seg = load_segmenter(model=model, weights=weights, num_classes=found.num_classes(), layer=layer, seed=seed)
    found.validate()
    seg.module.to(device)
    test = found.test_set(test_size)
    model_test = test.for_model(seg.in_chans, seg.input_norm)
    channels, classes = _layer_and_classes(seg, model_test.images[:1], device)
    if classes != found.num_classes():
        raise UserError(f"{seg.name} predicts {classes} classes; the data ({found.source}) has "
                        f"{found.num_classes()}")
    return LoadedSegmenter(seg, found, test, model_test, channels, seg.fingerprint(), str(checkpoint or model))


def checkpoints(path: str | Path) -> list[str]:
    """The checkpoints a ``--checkpoint`` names: a file, or every ``seed<S>/checkpoint.pt`` of a seg-train run."""
    root = Path(path)
    if not root.is_dir():
        return [str(path)]
    found = sorted(root.glob("seed*/checkpoint.pt"), key=lambda p: int(p.parent.name.removeprefix("seed") or -1))
    if not found:
        raise UserError(f"{path} is a folder without seed<S>/checkpoint.pt; give a seg-train run or a checkpoint")
    return [str(p) for p in found]


def load_segmenters(*, checkpoint: str | Path | None = None, **kwargs) -> list[LoadedSegmenter]:
    """Every network of ``checkpoint`` (a seg-train run: each ``seed<S>/checkpoint.pt``; or one file), or the one
    ``model``, each through ``load_segmenter_on_data`` (the other keyword arguments); refused when they differ in
    their layer's channels or test images (not one seg-train run)."""
    networks = [load_segmenter_on_data(checkpoint=path, **kwargs)
                for path in (checkpoints(checkpoint) if checkpoint else [None])]
    first = networks[0]
    for net in networks[1:]:
        if net.channels != first.channels or not torch.equal(net.test.images, first.test.images):
            raise UserError(f"the networks of {checkpoint} differ in their layer or test images; give networks of "
                            "one seg-train run")
    return networks
