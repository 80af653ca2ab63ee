"""Two independently shifted views of each image (Zhang 2019 style crops), and training batches of such pairs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from poschan.data.canvas import crop, make_background, paste_at
from poschan.data.sources import ImageSet
from poschan.data.stream import CanvasStream
from poschan.errors import UserError
from poschan.runtime import seeded_generator

ZHANG_RATIO = 256 / 224  # canvas side / crop side of Zhang (2019): 224 crops of 256 images
_VIEW_STREAM = 1  # key separating the view draws from the canvas stream's own draws
Views = tuple[Tensor, Tensor, Tensor, Tensor]  # view1, view2, offsets1, offsets2


@dataclass
class ShiftPairTransform:
    """Two independently shifted views of each image: crops of side ``crop`` from a canvas of side ``canvas``.

    The image sits at the canvas centre (top-left (S - h) // 2) on the zero ("mean") background; a view is the
    crop at offset (top, left) in [0, S - s]^2, i.e. the image translated by (centre - offset) pixels.
    ``canvas`` defaults to round(crop * 256 / 224) (e.g. crop 32 -> canvas 37, shifts 0..5 px).
    """

    crop: int
    canvas: int | None = None

    def __post_init__(self) -> None:
        if self.crop < 1:
            raise UserError(f"crop must be >= 1 px, got {self.crop}")
        if self.canvas is None:
            self.canvas = round(self.crop * ZHANG_RATIO)
        if self.canvas < self.crop:
            raise UserError(f"canvas ({self.canvas} px) must be at least the crop ({self.crop} px)")

    @property
    def max_offset(self) -> int:
        """S - s: the largest offset (and shift) along each axis."""
        return self.canvas - self.crop

    def largest_roll(self, max_shift: int | None) -> int:
        """The largest circular roll of the circular-consistency protocol: ``max_shift``, or S - s without one."""
        return self.max_offset if max_shift is None else max_shift

    def place(self, images: Tensor) -> Tensor:
        """(B, C, S, S) canvases with each (B, C, h, w) image centred on the zero background."""
        b, c, h, w = images.shape
        if max(h, w) > self.canvas:
            raise UserError(f"{h}x{w} px images do not fit a {self.canvas} px canvas; use a larger canvas")
        background = make_background("mean", 1, c, self.canvas, mean=(0.0,), std=(1.0,), device=images.device)
        at = torch.tensor([(self.canvas - h) // 2, (self.canvas - w) // 2]).expand(b, 2)
        return paste_at(images, at, background)

    def draw(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, 2) offsets (top, left), each uniform in [0, S - s], on the generator's device."""
        device = generator.device if generator is not None else None
        return torch.randint(self.max_offset + 1, (n, 2), generator=generator, device=device)

    def centre(self, n: int) -> Tensor:
        """(n, 2) offsets of the centre crop: (S - s) // 2 on each axis."""
        return torch.full((n, 2), self.max_offset // 2, dtype=torch.int64)

    def view(self, canvases: Tensor, offsets: Tensor) -> Tensor:
        """The (B, C, s, s) crops of ``canvases`` at ``offsets``."""
        return crop(canvases, offsets, self.crop)

    def pair(self, canvases: Tensor, generator: torch.Generator | None = None) -> Views:
        """(view1, view2, offsets1, offsets2) of already placed canvases."""
        o1, o2 = self.draw(len(canvases), generator), self.draw(len(canvases), generator)
        return self.view(canvases, o1), self.view(canvases, o2), o1, o2

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Views:
        """(view1, view2, offsets1, offsets2) of (B, C, h, w) ``images``; offsets drawn per sample."""
        return self.pair(self.place(images), generator)


@dataclass
class ShiftPairStream:
    """Training batches (a BatchSource): ``(cat([view1, view2]) (2B), labels (B))``, or centre crops with
    ``pairs=False``. Order and canvases come from a grid-1 CanvasStream (each image centred on a canvas of
    side S); the views of batch b of epoch e are drawn from ``seeded_generator(seed, e, b, ...)``, so every batch
    is a pure function of (seed, epoch, batch) and a resumed run sees the batches of an uninterrupted one."""

    data: ImageSet
    shift: ShiftPairTransform
    batch_size: int
    seed: int
    pairs: bool = True
    shuffle: bool = True

    def __post_init__(self) -> None:
        self._canvases = CanvasStream(self.data, "semantic", 1, self.batch_size, self.seed, canvas=self.shift.canvas,
                                      shuffle=self.shuffle)

    def __len__(self) -> int:
        return len(self._canvases)

    def epoch(self, epoch: int, device: torch.device | str | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        for b, (canvases, labels) in enumerate(self._canvases.epoch(epoch, device)):
            if not self.pairs:
                yield self.shift.view(canvases, self.shift.centre(len(canvases))), labels
                continue
            v1, v2, _, _ = self.shift.pair(canvases, seeded_generator(self.seed, epoch, b, _VIEW_STREAM))
            yield torch.cat([v1, v2]), labels
