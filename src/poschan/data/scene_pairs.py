"""Flip pairs of scenes that separate where items are from which way they face.

Fashion-MNIST footwear all faces one way, so mirroring a whole scene mirrors each item's content as well as its
position. From the SAME placements (``scenes.draw_placements``) every scene x gets a partner per construction:

- ``canvas``: hflip x — the paper's whole-canvas flip: positions mirrored AND content mirrored;
- ``mirror-in-place``: x' — every item mirrored inside its own box, boxes unchanged: content mirrored, positions
  kept (x' is ``compose`` of the items flipped along their width, so overlaps and masks follow the same rules);
- ``position-only``: hflip x' — items mirrored in place, then the canvas flipped: positions mirrored, every item's
  content as in x.

A channel that scores high on canvas and position-only but not on mirror-in-place reads position; one that scores
high on canvas and mirror-in-place but not on position-only reads chirality.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from poschan.data.canvas import hflip
from poschan.data.scenes import Placements, SceneSpec, compose, draw_placements
from poschan.data.sources import ImageSet
from poschan.errors import UserError
from poschan.runtime import seeded_generator

PAIRS = ("canvas", "mirror-in-place", "position-only")


@dataclass(frozen=True)
class ScenePairs:
    """Scenes and their partners; images (N, 1, S, S) normalised with ``mean``/``std``, masks (N, S, S)."""

    images: Tensor
    masks: Tensor
    partners: dict[str, Tensor]  # construction -> partner images, scene by scene
    partner_masks: dict[str, Tensor]  # construction -> partner masks
    placements: Placements
    mean: tuple[float, ...]
    std: tuple[float, ...]


def scene_pairs(items: ImageSet, spec: SceneSpec, count: int, seed: int, pairs: Sequence[str] = PAIRS,
                device: torch.device | str | None = None) -> ScenePairs:
    """``count`` scenes of ``spec`` drawn from ``items`` with ``seed`` (the same seed, the same scenes as
    ``scenes.fixed_scenes``), and their partners of each construction in ``pairs`` (see the module doc)."""
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown or not pairs:
        raise UserError(f"unknown flip pair construction {unknown[0]!r}; allowed: {', '.join(PAIRS)}" if unknown
                        else f"name at least one flip pair construction; allowed: {', '.join(PAIRS)}")
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    placements = draw_placements(items, spec, count, seeded_generator(seed))
    images, masks = compose(items, spec, placements, device)
    mirrored = compose(dataclasses.replace(items, images=items.images.flip(-1)), spec, placements, device)
    built = {"canvas": (hflip(images), hflip(masks)), "mirror-in-place": mirrored,
             "position-only": (hflip(mirrored[0]), hflip(mirrored[1]))}
    chosen = dict.fromkeys(pairs)
    return ScenePairs(images, masks, {p: built[p][0] for p in chosen}, {p: built[p][1] for p in chosen}, placements,
                      tuple(items.mean), tuple(items.std))
