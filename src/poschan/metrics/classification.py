"""Classification accuracy over a batch source."""

from __future__ import annotations

import torch
from torch import nn

from poschan.data.stream import BatchSource
from poschan.runtime import eval_mode


@torch.no_grad()
def accuracy(model: nn.Module, source: BatchSource, *, passes: int = 1, device: torch.device | str = "cpu",
             first_pass: int = 0) -> float:
    """Top-1 accuracy of ``model`` over ``passes`` epochs of ``source`` (positions are redrawn each pass)."""
    correct = total = 0
    with eval_mode(model):
        for p in range(first_pass, first_pass + passes):
            for x, y in source.epoch(p, device):
                correct += int((model(x).argmax(dim=1) == y).sum())
                total += len(y)
    return correct / max(total, 1)
