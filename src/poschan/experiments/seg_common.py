"""What seg-train, ablate and attack share: data (scenes or a real dataset), checkpoints, evaluation, rankings."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from poschan.data.fingerprint import image_fingerprint
from poschan.data.scenes import NUM_CLASSES, SceneSpec, SceneStream, class_names, fixed_scenes, scene_items
from poschan.data.segsets import SEGSET_CLASSES, load_segset, parse_segset
from poschan.data.sources import ImageSet
from poschan.data.stream import TensorStream
from poschan.engine import load_checkpoint
from poschan.errors import UserError
from poschan.locate.designs import RankSpec, accumulate
from poschan.locate.ranking import ranking_order
from poschan.metrics.segmentation import ConfusionMeter
from poschan.models.segmentation import SegNet, build_segmenter, load_segmenter_state, spec_from_dict
from poschan.models.weights import weights_fingerprint as fingerprint

TEST_SEED = 20_211  # the evaluation scenes: fixed, the same for every command and seed
RANK_SEED_OFFSET = 7_000  # rank scenes of ranking seed s are drawn with seed RANK_SEED_OFFSET + s


@dataclass
class SegEvalConfig:
    """The settings `ablate` and `attack` share (their Configs extend it)."""

    checkpoint: str = ""
    random_seeds: int = 5
    rank_scenes: int = 2000
    test_size: int = 2000
    batch_size: int = 64
    data_root: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    device: str = "cpu"
    preset: str = "paper"

    def validate(self) -> None:
        if not self.checkpoint:
            raise UserError("--checkpoint is required: a seg-train checkpoint (e.g. RUN/seed0/checkpoint.pt)")
        if self.random_seeds < 5:
            raise UserError(f"random_seeds must be >= 5 (the random control needs a spread), got {self.random_seeds}")
        for key in ("rank_scenes", "test_size", "batch_size"):
            if getattr(self, key) < 3:
                raise UserError(f"{key} must be >= 3, got {getattr(self, key)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise UserError(f"seeds must be distinct and >= 0 (at least one), got {self.seeds}")


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of SegEvalConfig (besides the run arguments every command has)."""
    p.add_argument("--checkpoint", help="seg-train checkpoint (RUN/seed<S>/checkpoint.pt)")
    p.add_argument("--n", type=lambda s: [v for v in s.split(",") if v.strip()],
                   help="channel counts or percentages, e.g. 5%%,10%%,25%%")
    p.add_argument("--random-seeds", dest="random_seeds", type=int, help="random-channel draws per N (>= 5)")
    p.add_argument("--rank-scenes", dest="rank_scenes", type=int, help="rank-split images per ranking seed")
    p.add_argument("--test-size", dest="test_size", type=int, help="test images")
    p.add_argument("--batch-size", dest="batch_size", type=int)


def add_scene_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--side", type=int, help="scene side in pixels")
    p.add_argument("--min-items", dest="min_items", type=int, help="fewest items per scene")
    p.add_argument("--max-items", dest="max_items", type=int, help="most items per scene")
    p.add_argument("--layout-prior", dest="layout_prior", type=float,
                   help="probability in [0, 1] that an item lies in its class's home region")
    p.add_argument("--layout", help="left-right or top-bottom (where the home regions lie)")
    p.add_argument("--grouping", help="halves (classes 0-4 | 5-9) or confusable (look-alike classes apart)")


def scene_spec(c: object) -> SceneSpec:
    """The SceneSpec named by a config's scene fields (side, min_items, max_items, layout_prior, layout, grouping)."""
    spec = SceneSpec(side=c.side, min_items=c.min_items, max_items=c.max_items, layout_prior=c.layout_prior,
                     layout=c.layout, grouping=c.grouping)
    spec.validate()
    return spec


@dataclass(frozen=True)
class EvalSet:
    images: Tensor  # (N, C, S, S), normalised with mean/std
    masks: Tensor  # (N, S, S) class ids or IGNORE_INDEX
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per-channel intensity normalisation, for PGD's raw-intensity budget and range
    std: tuple[float, ...]


@dataclass(frozen=True)
class SegData:
    """Where a segmenter's images come from: Fashion-MNIST scenes (``source`` "scenes", drawn by ``scenes``), or a
    real dataset by path ("voc:PATH", "cityscapes:PATH"), resized and centre-cropped to ``scenes.side``.

    Splits: scenes train / rank / test are built from disjoint Fashion-MNIST images; a real dataset trains and
    ranks on its ``train`` split and is evaluated on ``val``. Real images are ranked as they are: a region of the
    flip ranking cannot be imposed on them (the paper's protocol), and the shift ranking (items pasted in cells)
    needs scenes.
    """

    source: str
    scenes: SceneSpec
    data_root: str | None = None

    @property
    def synthetic(self) -> bool:
        return self.source == "scenes"

    @property
    def rank_split(self) -> str:
        return "rank" if self.synthetic else "train"

    @property
    def eval_split(self) -> str:
        return "test" if self.synthetic else "val"

    def validate(self) -> None:
        if not self.synthetic:
            parse_segset(self.source)
        self.scenes.validate()

    def test_set(self, count: int) -> EvalSet:
        """The fixed evaluation images: test scenes (seed TEST_SEED), or the first ``count`` val images."""
        if self.synthetic:
            items = scene_items("test", self.data_root)
            images, masks = fixed_scenes(items, self.scenes, count, TEST_SEED)
            return EvalSet(images, masks, class_names(items), tuple(items.mean), tuple(items.std))
        data = load_segset(self.source, "val", self.scenes.side, limit=count)
        return EvalSet(data.images, data.masks, data.classes, tuple(data.mean), tuple(data.std))

    def rank_images(self, count: int, seed: int, region: str | None = None) -> ImageSet:
        """Images to rank channels on (never the evaluation split): ``count`` rank scenes of ranking seed ``seed``
        with every item in ``region`` (None: as trained), or the first ``count`` train images of a real dataset."""
        if self.synthetic:
            spec = dataclasses.replace(self.scenes, region=region)
            spec.validate()
            items = scene_items("rank", self.data_root)
            images, _ = fixed_scenes(items, spec, count, RANK_SEED_OFFSET + seed)
            mean, std = items.mean, items.std
        else:
            data = load_segset(self.source, "train", self.scenes.side, limit=count)
            images, mean, std = data.images, data.mean, data.std
        return ImageSet(images, torch.zeros(len(images), dtype=torch.long), ("image",), tuple(mean), tuple(std),
                        self.source, self.rank_split)

    def train_source(self, count: int, batch_size: int, seed: int):
        """Training batches (images, masks): scenes redrawn every epoch, or the shuffled train split."""
        if self.synthetic:
            return SceneStream(scene_items("train", self.data_root), self.scenes, count, batch_size, seed)
        data = load_segset(self.source, "train", self.scenes.side, limit=count)
        return TensorStream(data.images, data.masks, batch_size, seed)

    def num_classes(self) -> int:
        return NUM_CLASSES if self.synthetic else len(SEGSET_CLASSES[parse_segset(self.source)[0]])


def describe(data: SegData) -> str:
    """A short title for figures: the scenes' layout prior, or the dataset."""
    return f"prior {data.scenes.layout_prior} {data.scenes.layout}" if data.synthetic else data.source


@dataclass
class LoadedModel:
    model: SegNet
    data: SegData  # what the model was trained on
    fingerprint: str
    path: str


def load_seg_checkpoint(path: str, device: torch.device, data_root: str | None = None) -> LoadedModel:
    """A checkpoint written by `poschan seg-train` (pickled code and other files refused), in eval mode."""
    if not Path(path).is_file():
        raise UserError(f"checkpoint {path!r} not found")
    state = load_checkpoint(Path(path))
    meta = state.get("meta")
    if not isinstance(meta, dict) or not {"segmentation", "scenes"} <= set(meta):
        raise UserError(f"{path} is not a poschan segmentation checkpoint (written by `poschan seg-train`)")
    model = build_segmenter(spec_from_dict(meta["segmentation"], path))
    load_segmenter_state(model, state["model"], path)
    try:
        data = SegData(str(meta.get("data", "scenes")), SceneSpec(**meta["scenes"]), data_root)
    except TypeError as err:
        raise UserError(f"{path}: unreadable data settings ({err})") from None
    data.validate()
    model.eval().requires_grad_(False).to(device)
    return LoadedModel(model, data, fingerprint(model), path)


@torch.no_grad()
def scene_features(model: SegNet, images: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """The backbone feature maps of ``images`` (computed once, reused by every mask)."""
    return torch.cat([model.features(images[i:i + batch_size].to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def evaluate_features(model: SegNet, feats: Tensor, masks: Tensor, batch_size: int, device: torch.device, edit=None,
           regions: dict[str, Tensor] | None = None) -> ConfusionMeter:
    """Confusions ("all" and one per pixel region) of the head's predictions from cached features, ``edit``
    (e.g. a channel mask) applied to each batch of features first."""
    meter = ConfusionMeter(model.num_classes, regions)
    for i in range(0, len(feats), batch_size):
        f = feats[i:i + batch_size].to(device)
        logits = model.decode(edit(f) if edit is not None else f, masks.shape[-2:])
        meter.update(logits.argmax(1).cpu(), masks[i:i + batch_size])
    return meter


def scores(meter: ConfusionMeter, name: str = "all") -> dict[str, float]:
    return {"miou": meter.miou(name), "pixel_accuracy": meter.pixel_accuracy(name)}


def flip_ranking(model: SegNet, data: SegData, *, region: str | None, count: int, seed: int, batch_size: int,
                 device: torch.device) -> dict[str, Tensor]:
    """Flip scores (poschan.ranking, image input) of ``model.feature_layer`` on ``count`` rank images.

    ``region`` None: scenes as trained (keys overall, left, right, top, bottom); "left": every item in the left
    half, so ``left`` / ``right`` rank the channels that fire for content on that side; "top" likewise.
    """
    images = data.rank_images(count, seed, region if data.synthetic else None)
    tally = accumulate(model, model.feature_layer, images, RankSpec("flip", flip_input="image"), seed=seed,
                       batch_size=batch_size, device=device, progress=False)
    return tally.real.scores()


def shift_ranking(model: SegNet, data: SegData, *, grid: int, count: int, seed: int, batch_size: int,
                  device: torch.device) -> dict[str, Tensor] | None:
    """Shift scores (per cell and region) of single rank-split items pasted in every cell of a grid×grid
    layout of the scene canvas (black background, as the scenes); None for real data (no items to paste)."""
    if not data.synthetic:
        return None
    items = scene_items("rank", data.data_root, limit=count)
    spec = RankSpec("shift", grid=grid, canvas=data.scenes.side, background="black")
    tally = accumulate(model, model.feature_layer, items, spec, seed=seed, batch_size=batch_size, device=device,
                       progress=False)
    return tally.real.scores()


def ranking_record(loaded: LoadedModel, method: str, seeds: list[int], n_images: int, keys: dict[str, Tensor],
                   channels: int) -> dict:
    """A ranking.json for a segmentation model (``keys``: scores merged over seeds)."""
    return {"model": loaded.model.spec.model, "fingerprint": loaded.fingerprint, "layer": loaded.model.feature_layer,
            "channels": channels, "method": method, "data": loaded.data.source, "split": loaded.data.rank_split,
            "n_images": n_images, "seeds": seeds,
            "keys": {k: {"order": ranking_order(s).tolist(), "scores": s.tolist()} for k, s in keys.items()}}


def read_ranking(path: str, loaded: LoadedModel, channels: int, eval_images: Tensor | None = None) -> dict:
    """A ranking.json that belongs to this model and was not computed on the evaluation split (else UserError):
    its split is not the evaluation split, and the fingerprint of its images (``images``, when it records one)
    is not that of ``eval_images`` (when given)."""
    try:
        ranking = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read ranking {path!r}: {err}") from None
    if not isinstance(ranking, dict) or "keys" not in ranking:
        raise UserError(f"{path} is not a poschan ranking.json")
    if ranking.get("channels") != channels or ranking.get("layer") != loaded.model.feature_layer:
        raise UserError(f"ranking {path} is for {ranking.get('channels')} channels of layer {ranking.get('layer')!r}; "
                        f"this model's {loaded.model.feature_layer!r} has {channels}")
    if ranking.get("fingerprint") != loaded.fingerprint:
        raise UserError(f"ranking {path} was computed for another model (weights {ranking.get('fingerprint')}, "
                        f"this checkpoint {loaded.fingerprint}); rank this checkpoint")
    eval_split = loaded.data.eval_split
    if ranking.get("split") == eval_split:
        raise UserError(f"ranking {path} was computed on the evaluation split {eval_split!r}; rank on another split")
    ranked = ranking.get("images")
    if ranked is not None and eval_images is not None and ranked == image_fingerprint(eval_images):
        raise UserError(f"ranking {path} was computed on the evaluation images (the same {ranked.get('n')} images, "
                        "by content); rank on another split")
    return ranking


def parse_counts(values: list[str], channels: int) -> list[int]:
    """``["5%", "10", ...]`` -> channel counts (percent of ``channels``, rounded, at least 1)."""
    counts = []
    for v in values:
        text = str(v).strip()
        try:
            n = max(1, round(float(text[:-1]) / 100 * channels)) if text.endswith("%") else int(text)
        except ValueError:
            raise UserError(f"--n takes channel counts or percentages like 5%,10%,25%, got {text!r}") from None
        if not 1 <= n <= channels:
            raise UserError(f"N = {text} is outside 1..{channels} (the channel count of the feature layer)")
        counts.append(n)
    return counts
