"""Pooled features of a frozen model over a whole batch source, through the taps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .engine import BatchSource
from .taps import get_layer, pooled_features


def resolve_layers(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Dotted layer names: a stage name (e.g. ``stage2``) maps to its module in ``model.stages``; unknown names
    fail with the closest valid ones; duplicates are dropped."""
    stages = getattr(model, "stages", {})
    full = [f"backbone.{stages[n]}" if n in stages else n for n in (n.strip() for n in names) if n]
    for name in full:
        get_layer(model, name)
    return list(dict.fromkeys(full))


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
