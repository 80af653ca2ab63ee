"""Evaluation metrics (one implementation of each kind)."""

from __future__ import annotations

import torch
from torch import nn

from .engine import BatchSource


@torch.no_grad()
def accuracy(model: nn.Module, source: BatchSource, *, passes: int = 1, device: torch.device | str = "cpu",
             first_pass: int = 0) -> float:
    """Top-1 accuracy of ``model`` over ``passes`` epochs of ``source`` (positions are redrawn each pass)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for p in range(first_pass, first_pass + passes):
        for x, y in source.epoch(p, device):
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += len(y)
    model.train(was_training)
    return correct / max(total, 1)
