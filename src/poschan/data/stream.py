"""Epochs of canvas batches whose content is a pure function of (seed, epoch, batch)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from poschan.data.canvas import BACKGROUNDS, canvas_side, make_background, paste_in_grid, random_cells
from poschan.data.sources import ImageSet, match_channels
from poschan.errors import UserError
from poschan.runtime import seeded_generator, to_device

TASKS = ("location", "semantic")
TEST_SEED_OFFSET = 10_000  # a run's test draws are seeded with its seed + this, never with a training seed


class BatchSource(Protocol):
    """What training and evaluation read: a number of batches and the (inputs, targets) batches of an epoch."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, device: torch.device | str | None = None) -> Iterator[tuple[Tensor, Tensor]]: ...


class EpochBatches(ABC):
    """``epoch(e, device, start_batch=)``: batches start_batch.. of epoch ``e``, each a pure function of
    (seed, epoch, batch); subclasses define ``__len__`` and ``_batches``."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _batches(self, epoch: int, device: torch.device | str | None,
                 start_batch: int) -> Iterator[tuple[Tensor, Tensor]]: ...

    def epoch(self, epoch: int, device: torch.device | str | None = None, *,
              start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        if epoch < 0:
            raise UserError(f"epoch must be >= 0, got {epoch}")
        if not 0 <= start_batch <= len(self):
            raise UserError(f"start_batch must be in 0..{len(self)}, got {start_batch}")
        return self._batches(epoch, device, start_batch)


@dataclass
class CanvasStream(EpochBatches):
    """Images pasted at a random grid cell, redrawn every epoch.

    task "location": label = cell index (row-major); "semantic": label = the image's class.
    The generator of each epoch (order) and of each batch (cells, background) is seeded from
    (seed, epoch[, batch]) alone, so a resumed run sees exactly the batches of an uninterrupted one.
    """

    data: ImageSet
    task: str
    grid: int
    batch_size: int
    seed: int
    canvas: int | None = None
    background: str = "mean"
    shuffle: bool = True
    channels: int | None = None  # e.g. 3 to repeat grey images for an RGB model

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UserError(f"unknown task {self.task!r}; allowed: {', '.join(TASKS)}")
        if self.background not in BACKGROUNDS:
            raise UserError(f"unknown background {self.background!r}; allowed: {', '.join(BACKGROUNDS)}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise UserError(f"seed must be >= 0, got {self.seed}")
        if len(self.data) == 0:
            raise UserError(f"dataset {self.data.name!r} ({self.data.split}) is empty")
        canvas_side(self.grid, max(self.data.images.shape[-2:]), self.canvas)
        match_channels(self.data.images[:1], self.out_channels)

    def __len__(self) -> int:
        """Batches per epoch; the last partial batch is kept."""
        return math.ceil(len(self.data) / self.batch_size)

    @property
    def num_classes(self) -> int:
        return self.grid * self.grid if self.task == "location" else len(self.data.classes)

    @property
    def chance(self) -> float:
        """Accuracy of uniform guessing."""
        return 1.0 / self.num_classes

    @property
    def side(self) -> int:
        """Canvas side in pixels."""
        return canvas_side(self.grid, max(self.data.images.shape[-2:]), self.canvas)

    @property
    def out_channels(self) -> int:
        return self.channels if self.channels is not None else self.data.channels

    def _batches(self, epoch: int, device: torch.device | str | None, start_batch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(canvases (B, C, side, side), labels (B,)) for batches start_batch.. of ``epoch``."""
        n, c, side = len(self.data), self.out_channels, self.side
        order = torch.randperm(n, generator=self._generator(epoch, 0)) if self.shuffle else torch.arange(n)
        for b in range(start_batch, len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            generator = self._generator(epoch, 1 + b)
            images = to_device(match_channels(self.data.images[index], c), device)
            cells = random_cells(len(index), self.grid, generator, device)
            background = make_background(self.background, len(index), c, side, mean=self.data.mean,
                                         std=self.data.std, generator=generator, device=device)
            canvases = paste_in_grid(images, cells, self.grid, background)
            labels = cells if self.task == "location" else to_device(self.data.labels[index], device)
            yield canvases, labels

    def _generator(self, epoch: int, stream: int) -> torch.Generator:
        return seeded_generator(self.seed, epoch, stream)


def random_hflip(images: Tensor, targets: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Each sample of a batch mirrored left-right with probability 1/2, its image (B, C, H, W) and dense target
    (B, H, W) together; one coin per sample from ``generator`` (a CPU generator)."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    return _where_flipped(flip, images), _where_flipped(flip, targets)


def _where_flipped(flip: Tensor, x: Tensor) -> Tensor:
    return torch.where(flip.to(x.device).view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)


def flip_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """The flip coins of batch ``batch`` of ``epoch``: a stream of their own, so the other draws do not move."""
    return seeded_generator(seed, epoch, batch, "hflip")


@dataclass
class TensorStream(EpochBatches):
    """Epochs of (inputs, targets) batches from tensors held in memory, in an order drawn from (seed, epoch).
    ``hflip``: dense targets (N, H, W) of inputs (N, C, H, W), each sample mirrored with probability 1/2
    (``random_hflip``)."""

    inputs: Tensor
    targets: Tensor
    batch_size: int
    seed: int
    hflip: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {self.batch_size}")
        if len(self.inputs) == 0 or len(self.inputs) != len(self.targets):
            raise UserError(f"need as many targets as inputs (at least one), got {len(self.inputs)} and "
                            f"{len(self.targets)}")
        if self.hflip and (self.inputs.dim() != 4 or self.targets.shape[1:] != self.inputs.shape[2:]):
            raise UserError(f"hflip needs inputs (N, C, H, W) and masks (N, H, W), got {tuple(self.inputs.shape)} "
                            f"and {tuple(self.targets.shape)}")

    def __len__(self) -> int:
        return math.ceil(len(self.inputs) / self.batch_size)

    def _batches(self, epoch: int, device: torch.device | str | None,
                 start_batch: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(self.inputs), generator=seeded_generator(self.seed, epoch))
        for b in range(start_batch, len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            x, y = to_device(self.inputs[index], device), to_device(self.targets[index], device)
            yield random_hflip(x, y, flip_generator(self.seed, epoch, b)) if self.hflip else (x, y)
