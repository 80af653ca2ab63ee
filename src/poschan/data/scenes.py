"""Segmentation scenes: 1..k real Fashion-MNIST items at random positions on a square canvas, with class masks.

Mask labels: 0 = background, 1 + FM class for an item's pixels. Every item has a *home region* (one half of the
canvas, chosen by its class's group); ``layout_prior`` sets how often an item is placed inside it, so the
class-position correlation a model could exploit is a controlled quantity.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from poschan.data.regions import Box, check_region, region_box
from poschan.data.sources import ImageSet, load_dataset
from poschan.data.stream import EpochBatches, flip_generator, random_hflip
from poschan.errors import UserError
from poschan.runtime import seeded_generator

SCENE_SPLITS = ("train", "rank", "test")
LAYOUTS = ("left-right", "top-bottom")
GROUPINGS = ("halves", "confusable")
# Fashion-MNIST items are bright garments on an exactly-0 background; 0.2 keeps faint fabric texture and
# anti-aliased rims out of the mask while keeping the item's silhouette in it.
MASK_THRESHOLD = 0.2
NUM_CLASSES = 11  # background + the 10 Fashion-MNIST classes
ITEM_SIDE = 28

# (FM source split, first index, end index) of each scene split; the three ranges are disjoint.
_SPLIT_RANGES = {"train": ("train", 0, 50_000), "rank": ("train", 50_000, 60_000), "test": ("test", 0, 10_000)}
_HOME_REGIONS = {"left-right": ("left", "right"), "top-bottom": ("top", "bottom")}
# Group A of each grouping (the rest is group B). "confusable" parts the look-alike pairs T-shirt/Shirt,
# Pullover/Coat, Pullover/Shirt, Sandal/Sneaker and Sneaker/Ankle boot, so position could tell them apart.
_GROUP_A = {"halves": frozenset({0, 1, 2, 3, 4}), "confusable": frozenset({0, 2, 3, 5, 9})}


@dataclass(frozen=True)
class SceneSpec:
    """How scenes are drawn (see the module docstring); ``region`` restricts all items and overrides the prior."""

    side: int = 96
    min_items: int = 1
    max_items: int = 4
    layout_prior: float = 0.0  # probability that an item lies inside its class's home region; else anywhere
    layout: str = "left-right"  # home regions: group A "left" / group B "right" (top-bottom: "top" / "bottom")
    grouping: str = "confusable"  # halves: A = classes 0-4; confusable: A = {0, 2, 3, 5, 9}
    region: str | None = None  # a regions.py name (incl. cell:I) holding every item
    grid: int = 3  # grid of cell:I regions

    def validate(self) -> None:
        """UserError naming the first bad field."""
        if self.side < ITEM_SIDE:
            raise UserError(f"scene side must be >= {ITEM_SIDE} px (one item), got {self.side}")
        if not 1 <= self.min_items <= self.max_items:
            raise UserError(f"need 1 <= min_items <= max_items, got min_items={self.min_items}, "
                            f"max_items={self.max_items}")
        if not 0.0 <= self.layout_prior <= 1.0:
            raise UserError(f"layout_prior must be in [0, 1], got {self.layout_prior}")
        if self.layout not in LAYOUTS:
            raise UserError(f"unknown layout {self.layout!r}; allowed: {', '.join(LAYOUTS)}")
        if self.grouping not in GROUPINGS:
            raise UserError(f"unknown grouping {self.grouping!r}; allowed: {', '.join(GROUPINGS)}")
        if self.grid < 1:
            raise UserError(f"grid must be >= 1, got {self.grid}")
        if self.region is not None:
            check_region(self.region, self.grid)
            self._check_fits(self.region, "region")
        elif self.layout_prior > 0:
            for home in _HOME_REGIONS[self.layout]:
                self._check_fits(home, "home region")

    def home_region(self, fm_class: int) -> str:
        """The home region ("left"/"right"/"top"/"bottom") of Fashion-MNIST class ``fm_class``."""
        if not 0 <= fm_class < NUM_CLASSES - 1:
            raise UserError(f"Fashion-MNIST class must be in 0..{NUM_CLASSES - 2}, got {fm_class}")
        first, second = _HOME_REGIONS[self.layout]
        return first if fm_class in _GROUP_A[self.grouping] else second

    def _check_fits(self, region: str, role: str) -> None:
        box = region_box(region, self.side, self.grid)
        if not _holds_item(box):
            raise UserError(f"{role} {region!r} is {box.y1 - box.y0}×{box.x1 - box.x0} px on a {self.side} px "
                            f"scene, too small for a {ITEM_SIDE}×{ITEM_SIDE} item; use side >= "
                            f"{_min_side(region, self.grid)}")


def _holds_item(box: Box) -> bool:
    return box.y1 - box.y0 >= ITEM_SIDE and box.x1 - box.x0 >= ITEM_SIDE


def _min_side(region: str, grid: int) -> int:
    """The side from which on ``region`` always holds an item (region_box rounding is not monotone in side)."""
    side = (ITEM_SIDE + 1) * max(grid, 2)  # halves/quadrants >= side // 2, center >= side / 2, cells >= side / grid - 1
    while side > ITEM_SIDE and _holds_item(region_box(region, side - 1, grid)):
        side -= 1
    return side


def class_names(items: ImageSet) -> tuple[str, ...]:
    """Names of the mask labels: background, then the item classes."""
    return ("background", *items.classes)


def scene_items(split: str, root: str | None = None, limit: int | None = None) -> ImageSet:
    """The Fashion-MNIST images a scene split draws its items from; the splits are disjoint:
    train = FM train [0, 50000), rank = FM train [50000, 60000), test = FM test. ``limit`` keeps the first N."""
    if split not in _SPLIT_RANGES:
        raise UserError(f"unknown scene split {split!r}; allowed: {', '.join(SCENE_SPLITS)}")
    if limit is not None and limit < 1:
        raise UserError(f"limit must be >= 1, got {limit}")
    source, start, end = _SPLIT_RANGES[split]
    if limit is not None:
        end = min(end, start + limit)
    data = load_dataset("fashion-mnist", source, root, limit=end)
    if len(data) <= start:
        raise UserError(f"scene split {split!r} needs Fashion-MNIST {source} images from index {start}, "
                        f"but the files hold {len(data)}")
    return dataclasses.replace(data, images=data.images[start:], labels=data.labels[start:], split=split)


class Placements(NamedTuple):
    """Where the item slots of ``count`` scenes go; every tensor is (count, max_items)."""

    index: Tensor  # int64 index into the item set
    top: Tensor  # int64 top row of the item's box
    left: Tensor  # int64 left column of the item's box
    present: Tensor  # bool: the slot holds an item in this scene (the first n_items slots do)


def draw_placements(items: ImageSet, spec: SceneSpec, count: int, generator: torch.Generator) -> Placements:
    """Draw per scene the number of items, the items, and their boxes (on the generator's device)."""
    spec.validate()
    _check_items(items)
    if count < 1:
        raise UserError(f"scene count must be >= 1, got {count}")
    at = generator.device
    slots = spec.max_items
    n_items = torch.randint(spec.min_items, spec.max_items + 1, (count, 1), generator=generator, device=at)
    index = torch.randint(len(items), (count, slots), generator=generator, device=at)
    home = torch.rand(count, slots, generator=generator, device=at) < spec.layout_prior
    u = torch.rand(count, slots, 2, generator=generator, device=at, dtype=torch.float64)
    full = torch.tensor(region_box(spec.region, spec.side, spec.grid) if spec.region else
                        (0, spec.side, 0, spec.side), device=at)
    boxes = full.expand(count, slots, 4)
    if spec.region is None:
        homes = torch.tensor([region_box(spec.home_region(c), spec.side) for c in range(NUM_CLASSES - 1)],
                             device=at)
        boxes = torch.where(home[..., None], homes[items.labels.to(at)[index]], boxes)
    low = boxes[..., 0::2]  # (y0, x0)
    span = boxes[..., 1::2] - low - ITEM_SIDE + 1  # number of valid offsets per axis
    offset = low + torch.minimum((u * span).long(), span - 1)
    present = torch.arange(slots, device=at) < n_items
    return Placements(index, offset[..., 0], offset[..., 1], present)


def compose(items: ImageSet, spec: SceneSpec, placements: Placements,
            device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Paste the placed items: images (count, 1, side, side) normalised like ``items``, masks (count, side, side).

    Overlaps keep the brighter pixel (max of raw intensities; done on normalised values, which is the same since
    normalising is increasing). A pixel whose raw item intensity exceeds MASK_THRESHOLD takes label 1 + class,
    later slots overwriting earlier ones; the threshold is normalised like the images, so a raw value equal to it
    (51/255 for Fashion-MNIST) is left out exactly. All slots are pasted at once by scatter-max into the
    flattened canvases.
    """
    count, slots = placements.index.shape
    side = spec.side
    background, level = _normalise((0.0, MASK_THRESHOLD), items)
    index = placements.index.to(items.images.device)
    patches = items.images[index, 0].to(device)  # (count, slots, 28, 28)
    labels = 1 + items.labels.to(items.images.device)[index].to(device)
    top, left, present = (t.to(device)[..., None, None] for t in placements[1:])
    steps = torch.arange(ITEM_SIDE, device=device)
    scene = torch.arange(count, device=device).view(-1, 1, 1, 1)
    flat = ((scene * side + top + steps[:, None]) * side + left + steps).flatten()  # canvas pixel of each patch pixel
    images = torch.full((count * side * side,), background, device=device)
    images.scatter_reduce_(0, flat, torch.where(present, patches, background).flatten(), "amax")
    # Key slot * NUM_CLASSES + label (0 = none): a pixel's largest key is the label of its last covering slot.
    slot = torch.arange(slots, device=device).view(1, -1, 1, 1)
    keys = torch.where(present & (patches > level), slot * NUM_CLASSES + labels[..., None, None], 0)
    masks = torch.zeros(count * side * side, dtype=torch.int64, device=device)
    masks.scatter_reduce_(0, flat, keys.flatten(), "amax").remainder_(NUM_CLASSES)
    return images.view(count, 1, side, side), masks.view(count, side, side)


def _normalise(raw: tuple[float, ...], items: ImageSet) -> list[float]:
    """Raw grey intensities in the items' normalised units, computed exactly as sources.py normalises images."""
    x = (torch.tensor(raw, dtype=torch.float32) - torch.tensor(items.mean)) / torch.tensor(items.std)
    return x.tolist()


def render_scenes(items: ImageSet, spec: SceneSpec, count: int, generator: torch.Generator,
                  device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """``count`` scenes: images (count, 1, side, side) float32 normalised like ``items`` (background = raw 0),
    masks (count, side, side) int64 in 0..10. Random draws use ``generator`` on its own device."""
    return compose(items, spec, draw_placements(items, spec, count, generator), device)


def fixed_scenes(items: ImageSet, spec: SceneSpec, count: int, seed: int,
                 device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """A fixed evaluation set: the same ``seed`` gives identical scenes."""
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    return render_scenes(items, spec, count, seeded_generator(seed), device)


@dataclass
class SceneStream(EpochBatches):
    """Epochs of fresh scene batches; every batch is a pure function of (seed, epoch, batch). ``hflip``: each scene
    mirrored left-right (image and mask) with probability 1/2, by coins of their own stream (``random_hflip``)."""

    items: ImageSet
    spec: SceneSpec
    scenes_per_epoch: int
    batch_size: int
    seed: int
    hflip: bool = False

    def __post_init__(self) -> None:
        self.spec.validate()
        _check_items(self.items)
        if self.scenes_per_epoch < 1:
            raise UserError(f"scenes_per_epoch must be >= 1, got {self.scenes_per_epoch}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise UserError(f"seed must be >= 0, got {self.seed}")

    def __len__(self) -> int:
        """Batches per epoch; the last partial batch is kept."""
        return math.ceil(self.scenes_per_epoch / self.batch_size)

    def _batches(self, epoch: int, device: torch.device | str | None,
                 start_batch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(images (B, 1, side, side), masks (B, side, side) int64) for batches start_batch.. of ``epoch``."""
        for b in range(start_batch, len(self)):
            count = min(self.batch_size, self.scenes_per_epoch - b * self.batch_size)
            images, masks = render_scenes(self.items, self.spec, count, seeded_generator(self.seed, epoch, b), device)
            yield random_hflip(images, masks, flip_generator(self.seed, epoch, b)) if self.hflip else (images, masks)


def _check_items(items: ImageSet) -> None:
    if len(items) == 0:
        raise UserError(f"item set {items.name!r} ({items.split}) is empty")
    if items.images.shape[1:] != (1, ITEM_SIDE, ITEM_SIDE) or len(items.classes) != NUM_CLASSES - 1:
        raise UserError(f"scene items must be 1×{ITEM_SIDE}×{ITEM_SIDE} images of 10 classes (Fashion-MNIST), "
                        f"got {tuple(items.images.shape[1:])} with {len(items.classes)} classes")


def load_scenes(split: str = "test", count: int = 200, *, seed: int = 0, data_root: str | None = None,
                **spec: object) -> tuple[Tensor, Tensor]:
    """``count`` Fashion-MNIST scenes whose items come from ``split`` (train, rank or test: disjoint images), as
    (images (N, 1, S, S) normalised with Fashion-MNIST's mean/std, masks (N, S, S) class ids, 0 = background);
    the same ``seed`` gives the same scenes. ``spec``: SceneSpec fields (side, min_items, max_items,
    layout_prior, layout, grouping, region)."""
    try:
        scene_spec = SceneSpec(**spec)
    except TypeError:
        fields = ", ".join(f.name for f in dataclasses.fields(SceneSpec))
        raise UserError(f"unknown scene setting among {', '.join(spec)}; allowed: {fields}") from None
    scene_spec.validate()
    return fixed_scenes(scene_items(split, data_root), scene_spec, count, seed)
