"""Channel sets for reliance questions beyond ``control.ablation.random_channels``: the reference ranking of a
segmenter's channels by their own knock-out cost, and random channels matched to a ranked set in activation
magnitude and spread (if ranked channels hurt as much as these, a "reliance" is about channel strength, not
position)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from poschan.errors import UserError
from poschan.metrics.segmentation import miou_of
from poschan.runtime import seeded_generator

if TYPE_CHECKING:  # control.ablation draws its matched control from here
    from poschan.control.ablation import SegEval


def knockout_costs(ev: SegEval) -> Tensor:
    """(C,) mIoU over ``ev``'s images lost when each channel alone is zeroed (clean − knocked out)."""
    clean = float(miou_of(ev.meter().counts().mean(0)))
    return torch.tensor([clean - float(miou_of(ev.meter([c]).counts().mean(0))) for c in range(ev.channels)],
                        dtype=torch.float64)


def matched_random(ranked: Tensor, magnitude: Tensor, spread: Tensor, draws: int, seed: int, *,
                   pool: int = 3) -> list[Tensor]:
    """``draws`` random channel sets as large as ``ranked``, matched to it in activation magnitude and spread.

    Channels are placed by their (magnitude rank, spread rank) scaled to [0, 1]; for each ranked channel in a random
    order one channel is drawn uniformly from the ``pool`` unchosen non-ranked channels nearest to it (Euclidean).
    Draw r uses a generator seeded with ``seed`` and r. Needs at least as many other channels as ranked ones."""
    channels = len(magnitude)
    ranked = torch.as_tensor(ranked, dtype=torch.long)
    if len(ranked) > channels - len(ranked):
        raise UserError(f"cannot match {len(ranked)} of {channels} channels with as many others; use N <= "
                        f"{channels // 2}")
    if draws < 1 or pool < 1:
        raise UserError(f"draws and pool must be >= 1, got {draws} and {pool}")
    place = torch.stack([v.argsort().argsort().double() / max(channels - 1, 1) for v in (magnitude, spread)], 1)
    others = torch.ones(channels, dtype=torch.bool)
    others[ranked] = False
    sets = []
    for r in range(draws):
        generator = seeded_generator(seed, r)
        free = others.clone()
        chosen = []
        for c in ranked[torch.randperm(len(ranked), generator=generator)].tolist():
            candidates = free.nonzero().flatten()
            distance = (place[candidates] - place[c]).norm(dim=1)
            near = candidates[distance.argsort()[:pool]]
            pick = int(near[torch.randint(len(near), (1,), generator=generator)])
            free[pick] = False
            chosen.append(pick)
        sets.append(torch.tensor(sorted(chosen)))
    return sets
