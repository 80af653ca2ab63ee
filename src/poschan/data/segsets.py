"""Real segmentation datasets on disk (PASCAL VOC 2012, Cityscapes) as square tensors, shaped like the scenes.

Nothing is downloaded: torchvision's dataset classes find and read the files of a copy the user already has;
every image is resized so its shorter side is ``side`` and centre-cropped to side×side, its mask likewise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from poschan.data.sources import IMAGENET_MEAN, IMAGENET_STD  # re-exported: the normalisation of every SegSet
from poschan.errors import UserError

IGNORE_INDEX = 255  # target label of pixels that are not scored (and carry no loss)

SEGSETS = ("voc", "cityscapes")
SEGSET_SPLITS = ("train", "val")

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
# The 19 train-id classes in train-id order, each with its label id (cityscapesscripts' labels table).
_CITYSCAPES_LABEL_IDS = (
    ("road", 7), ("sidewalk", 8), ("building", 11), ("wall", 12), ("fence", 13), ("pole", 17),
    ("traffic light", 19), ("traffic sign", 20), ("vegetation", 21), ("terrain", 22), ("sky", 23),
    ("person", 24), ("rider", 25), ("car", 26), ("truck", 27), ("bus", 28), ("train", 31),
    ("motorcycle", 32), ("bicycle", 33),
)
CITYSCAPES_CLASSES = tuple(name for name, _ in _CITYSCAPES_LABEL_IDS)
SEGSET_CLASSES = {"voc": VOC_CLASSES, "cityscapes": CITYSCAPES_CLASSES}
_INVALID = -1  # lookup-table entry of a mask value the dataset never uses


def _lookup(pairs: dict[int, int], default: int) -> Tensor:
    """(256,) int64 table from an 8-bit mask value to a class id."""
    table = torch.full((256,), default, dtype=torch.int64)
    for value, class_id in pairs.items():
        table[value] = class_id
    return table


# VOC masks hold the class ids and 255 ('void', object borders); any other value means a broken file.
_VOC_LOOKUP = _lookup({**{c: c for c in range(len(VOC_CLASSES))}, IGNORE_INDEX: IGNORE_INDEX}, _INVALID)
_CITYSCAPES_LOOKUP = _lookup({label: train for train, (_, label) in enumerate(_CITYSCAPES_LABEL_IDS)}, IGNORE_INDEX)
_FORMS = {"voc": (VOC_CLASSES, _VOC_LOOKUP), "cityscapes": (CITYSCAPES_CLASSES, _CITYSCAPES_LOOKUP)}


@dataclass(frozen=True)
class SegSet:
    """A segmentation split held in memory: normalised RGB images and class-id masks."""

    images: Tensor  # (N, 3, side, side) float32, normalised with mean/std
    masks: Tensor  # (N, side, side) int64, class ids in 0..K-1 or IGNORE_INDEX
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str
    split: str

    def __len__(self) -> int:
        return self.images.shape[0]


def parse_segset(spec: str) -> tuple[str, str]:
    """'voc:PATH' / 'cityscapes:PATH' -> (name, PATH)."""
    name, colon, path = spec.partition(":")
    if not colon or name not in SEGSETS or not path:
        raise UserError(f"bad segmentation dataset {spec!r}; allowed: {', '.join(f'{s}:PATH' for s in SEGSETS)}")
    return name, path


def load_segset(spec: str, split: str, side: int, limit: int | None = None) -> SegSet:
    """The ``split`` of the dataset ``spec`` ('voc:PATH' / 'cityscapes:PATH') as side×side tensors.

    Images: shorter side resized to ``side`` (bilinear, antialias), centre crop, ImageNet normalisation.
    Masks: the same geometry with nearest neighbour; VOC keeps its 255 borders as IGNORE_INDEX, Cityscapes label
    ids become the 19 train ids (others IGNORE_INDEX). ``limit`` keeps the first N images (VOC: split-file order;
    Cityscapes: sorted by file path).
    """
    name, path = parse_segset(spec)
    if split not in SEGSET_SPLITS:
        raise UserError(f"unknown split {split!r} for {name}; allowed: {', '.join(SEGSET_SPLITS)}")
    if side < 1:
        raise UserError(f"side must be >= 1, got {side}")
    if limit is not None and limit < 1:
        raise UserError(f"limit must be >= 1, got {limit}")
    root = Path(path).expanduser()
    dataset, samples = _voc(root, split) if name == "voc" else _cityscapes(root, split)
    if not samples:
        raise UserError(f"{name} split {split!r} at {root} holds no images")
    samples = samples[:limit]
    classes, lookup = _FORMS[name]
    images = torch.empty(len(samples), 3, side, side)
    masks = torch.empty(len(samples), side, side, dtype=torch.int64)
    for k, sample in enumerate(samples):
        images[k], masks[k] = _read(dataset, sample, side, lookup, len(classes))
    images.sub_(torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)).div_(torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    return SegSet(images, masks, classes, IMAGENET_MEAN, IMAGENET_STD, name, split)


def _voc(root: Path, split: str) -> tuple[Dataset, list[tuple[int, str, str]]]:
    """torchvision's VOCSegmentation at ``root`` and its (index, image path, mask path) samples in order."""
    base = root / "VOCdevkit" / "VOC2012"
    needed = (base / "JPEGImages", base / "SegmentationClass", base / "ImageSets" / "Segmentation" / f"{split}.txt")
    missing = next((p for p in needed if not p.exists()), None)
    if missing is not None:
        raise UserError(f"no PASCAL VOC 2012 {split} split at {root}: {missing} not found; expected {base}/ "
                        f"with JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/{split}.txt")
    from torchvision.datasets import VOCSegmentation

    dataset = VOCSegmentation(str(root), year="2012", image_set=split, download=False)
    return dataset, [(i, dataset.images[i], dataset.masks[i]) for i in range(len(dataset))]


def _cityscapes(root: Path, split: str) -> tuple[Dataset, list[tuple[int, str, str]]]:
    """torchvision's Cityscapes (fine, semantic) at ``root`` and its samples sorted by image path."""
    needed = (root / "leftImg8bit" / split, root / "gtFine" / split)
    missing = next((p for p in needed if not p.is_dir()), None)
    if missing is not None:
        raise UserError(f"no Cityscapes {split} split at {root}: {missing} is not a directory; expected "
                        f"{root}/leftImg8bit/{split}/<city>/*_leftImg8bit.png and "
                        f"{root}/gtFine/{split}/<city>/*_gtFine_labelIds.png")
    from torchvision.datasets import Cityscapes

    try:
        dataset = Cityscapes(str(root), split=split, mode="fine", target_type="semantic")
    except OSError as err:  # e.g. a stray file where a <city> folder belongs
        raise UserError(f"bad Cityscapes layout at {root}: {err}; expected only <city> folders in "
                        f"leftImg8bit/{split}/") from err
    order = sorted(range(len(dataset)), key=dataset.images.__getitem__)
    return dataset, [(i, dataset.images[i], dataset.targets[i][0]) for i in order]


def _read(dataset: Dataset, sample: tuple[int, str, str], side: int, lookup: Tensor,
          n_classes: int) -> tuple[Tensor, Tensor]:
    """One sample fitted to side×side: image (3, side, side) in [0, 1], mask (side, side) class ids."""
    index, image_path, mask_path = sample
    try:
        image, target = dataset[index]
    except OSError as err:
        raise UserError(f"cannot read {image_path} or {mask_path}: {err}") from err
    with image, target:
        if image.size != target.size:
            raise UserError(f"image {image_path} is {image.size[0]}×{image.size[1]} px but its mask {mask_path} "
                            f"is {target.size[0]}×{target.size[1]}; they must match")
        rgb = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255)
        values = _mask_values(target, mask_path, lookup, n_classes)
    return _fit(rgb, side, "bilinear"), lookup[_fit(values[None], side, "nearest-exact")[0].long()]


def _mask_values(target: Image.Image, path: str, lookup: Tensor, n_classes: int) -> Tensor:
    """(h, w) uint8 values of a palette / greyscale mask image, all of them known to ``lookup``."""
    if target.mode not in ("P", "L"):
        raise UserError(f"mask {path} has PIL mode {target.mode}; expected a palette or 8-bit greyscale PNG of ids")
    values = torch.from_numpy(np.array(target))
    unknown = (torch.bincount(values.flatten(), minlength=256) > 0) & (lookup == _INVALID)
    if unknown.any():
        raise UserError(f"mask {path} holds values {unknown.nonzero().flatten().tolist()}; allowed: class ids "
                        f"0..{n_classes - 1} and {IGNORE_INDEX}")
    return values


def _fit(x: Tensor, side: int, mode: str) -> Tensor:
    """(C, h, w) -> (C, side, side): shorter side resized to ``side`` with ``mode`` ('bilinear' is antialiased),
    then the centre side×side crop (an odd surplus leaves the extra row / column at the bottom / right)."""
    h, w = x.shape[-2:]
    scale = side / min(h, w)
    size = (max(side, round(h * scale)), max(side, round(w * scale)))
    y = F.interpolate(x[None], size=size, mode=mode, antialias=mode == "bilinear")[0]
    top, left = (size[0] - side) // 2, (size[1] - side) // 2
    return y[:, top:top + side, left:left + side]
