"""Where a segmenter's images and masks come from: Fashion-MNIST scenes or a real dataset by path, split into
train / rank / evaluation images; and (images, masks) pairs from whatever a user holds."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from poschan.data.scene_pairs import PAIRS, ScenePairs, scene_pairs
from poschan.data.scenes import NUM_CLASSES, SceneSpec, SceneStream, class_names, fixed_scenes, scene_items
from poschan.data.segsets import SEGSET_CLASSES, load_segset, parse_segset
from poschan.data.sources import ImageSet, stack_items
from poschan.data.stream import TensorStream
from poschan.errors import UserError

TEST_SEED = 20_211  # the evaluation scenes: fixed, the same for every command and seed
RANK_SEED_OFFSET = 7_000  # rank scenes of ranking seed s are drawn with seed RANK_SEED_OFFSET + s
InputNorm = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per input channel


@dataclass(frozen=True)
class EvalSet:
    images: Tensor  # (N, C, S, S), normalised with mean/std
    masks: Tensor  # (N, S, S) class ids or IGNORE_INDEX
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per-channel intensity normalisation, for PGD's raw-intensity budget and range
    std: tuple[float, ...]

    def for_model(self, in_chans: int, input_norm: InputNorm | None) -> EvalSet:
        """The set as a model takes it (see ``ImageSet.for_model``): the same object when nothing changes."""
        as_set = ImageSet(self.images, torch.zeros(len(self.images), dtype=torch.long), self.classes, self.mean,
                          self.std, "eval", "eval")
        converted = as_set.for_model(in_chans, input_norm)
        if converted is as_set:
            return self
        return dataclasses.replace(self, images=converted.images, mean=tuple(converted.mean),
                                   std=tuple(converted.std))


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

    @classmethod
    def from_meta(cls, meta: dict, data_root: str | None, source: str = "checkpoint") -> SegData:
        """The data settings a `seg-train` checkpoint records under "meta" (keys "data", "scenes")."""
        try:
            data = cls(str(meta.get("data", "scenes")), SceneSpec(**meta["scenes"]), data_root)
        except (KeyError, TypeError) as err:
            raise UserError(f"{source}: unreadable data settings ({err})") from None
        data.validate()
        return data

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

    def _fixed_set(self, split: str, spec: SceneSpec, count: int, seed: int) -> EvalSet:
        """``count`` scenes drawn with ``seed`` from the items of scene split ``split``, or the first ``count`` images
        of the real dataset's split (train for scene splits train / rank, val for test)."""
        if self.synthetic:
            items = scene_items(split, self.data_root)
            images, masks = fixed_scenes(items, spec, count, seed)
            return EvalSet(images, masks, class_names(items), tuple(items.mean), tuple(items.std))
        data = load_segset(self.source, "val" if split == "test" else "train", self.scenes.side, limit=count)
        return EvalSet(data.images, data.masks, data.classes, tuple(data.mean), tuple(data.std))

    def test_set(self, count: int) -> EvalSet:
        """The fixed evaluation images: test scenes (seed TEST_SEED), or the first ``count`` val images."""
        return self._fixed_set("test", self.scenes, count, TEST_SEED)

    def rank_set(self, count: int, seed: int, region: str | None = None) -> EvalSet:
        """Images and masks to rank channels on (never the evaluation split): ``count`` rank scenes of ranking seed
        ``seed`` with every item in ``region`` (None: as trained), or the first ``count`` train images of a real
        dataset."""
        spec = dataclasses.replace(self.scenes, region=region if self.synthetic else None)
        spec.validate()
        return self._fixed_set("rank", spec, count, RANK_SEED_OFFSET + seed)

    def rank_images(self, count: int, seed: int, region: str | None = None) -> ImageSet:
        """The images of ``rank_set`` as an ImageSet (one dummy label each)."""
        ranked = self.rank_set(count, seed, region)
        return ImageSet(ranked.images, torch.zeros(len(ranked.images), dtype=torch.long), ("image",), ranked.mean,
                        ranked.std, self.source, self.rank_split)

    def rank_pairs(self, count: int, seed: int, region: str | None = None, pairs: Sequence[str] = PAIRS
                   ) -> ScenePairs:
        """The rank scenes of ``rank_set`` (scenes only) with their flip partners (data.scene_pairs)."""
        if not self.synthetic:
            raise UserError(f"flip pair constructions need scenes (items pasted in boxes); {self.source} has none")
        spec = dataclasses.replace(self.scenes, region=region)
        spec.validate()
        return scene_pairs(scene_items("rank", self.data_root), spec, count, RANK_SEED_OFFSET + seed, pairs)

    def rank_items(self, count: int) -> ImageSet:
        """The first ``count`` rank-split items, to paste into the cells of a scene canvas (scenes only)."""
        if not self.synthetic:
            raise UserError(f"{self.source} has no items to paste into cells; the shift ranking needs scenes")
        return scene_items("rank", self.data_root, limit=count)

    def train_source(self, count: int, batch_size: int, seed: int, hflip: bool = False) -> SceneStream | TensorStream:
        """Training batches (images, masks): scenes redrawn every epoch, or the shuffled train split; ``hflip``:
        each sample mirrored left-right with probability 1/2."""
        if self.synthetic:
            return SceneStream(scene_items("train", self.data_root), self.scenes, count, batch_size, seed, hflip)
        data = load_segset(self.source, "train", self.scenes.side, limit=count)
        return TensorStream(data.images, data.masks, batch_size, seed, hflip)

    def num_classes(self) -> int:
        return NUM_CLASSES if self.synthetic else len(SEGSET_CLASSES[parse_segset(self.source)[0]])


def segmentation_pairs(data: object) -> tuple[Tensor, Tensor]:
    """``(images (N, C, H, W) float, masks (N, H, W) int64)`` of what a user holds: a pair of tensors, an EvalSet,
    a dataset whose items are (image, mask) pairs, or a DataLoader of such batches. The images are taken as the
    model's input (already normalised)."""
    if isinstance(data, EvalSet):
        return data.images, data.masks
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        images, masks = data
    else:
        what = ("data must be a pair (images (N, C, H, W), masks (N, H, W)), a dataset of (image, mask) pairs or a "
                "DataLoader of such batches")
        columns = stack_items(data, what)
        if len(columns) != 2:
            raise UserError(f"{what}, got items of {len(columns)} parts")
        images, masks = columns
    if images.dim() != 4 or not images.is_floating_point():
        raise UserError(f"images must be float (N, C, H, W), got {tuple(images.shape)} {images.dtype}")
    if masks.shape != (images.shape[0], *images.shape[2:]) or masks.is_floating_point():
        raise UserError(f"masks must be integer class ids (N, H, W) = {(images.shape[0], *images.shape[2:])}, got "
                        f"{tuple(masks.shape)} {masks.dtype}")
    return images, masks.long()
