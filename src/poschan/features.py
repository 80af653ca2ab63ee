"""Pooled features of a frozen model over a whole batch source, through the taps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .engine import BatchSource
from .taps import pooled_features


@torch.no_grad()
def extract_pooled(model: nn.Module, source: BatchSource, layers: Sequence[str], *, passes: int = 1,
                   device: torch.device | str = "cpu") -> tuple[dict[str, Tensor], Tensor]:
    """``({layer: (N, C) pooled features}, (N,) labels)`` over ``passes`` epochs of ``source`` (model in eval mode).

    Features stay on ``device``; the forward pass stops at the deepest requested layer.
    """
    was_training = model.training
    model.eval()
    chunks: dict[str, list[Tensor]] = {name: [] for name in layers}
    labels: list[Tensor] = []
    for p in range(passes):
        for x, y in source.epoch(p, device):
            for name, value in pooled_features(model, x, layers).items():
                chunks[name].append(value)
            labels.append(y)
    model.train(was_training)
    return {name: torch.cat(values) for name, values in chunks.items()}, torch.cat(labels)
