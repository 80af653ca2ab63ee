"""Classification outcomes and accuracy over a batch source."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from poschan.data.stream import BatchSource
from poschan.runtime import eval_mode


@torch.inference_mode()
def outcomes(model: nn.Module, source: BatchSource, *, passes: int = 1, device: torch.device | str = "cpu",
             first_pass: int = 0) -> Tensor:
    """Per-item 0/1 correctness (float, on the CPU) over ``passes`` epochs of ``source``, in the stream's order
    (positions are redrawn each pass, so every pass adds its own items)."""
    hits = []
    with eval_mode(model):
        for p in range(first_pass, first_pass + passes):
            for x, y in source.epoch(p, device):
                hits.append((model(x).argmax(dim=1) == y).float().cpu())
    return torch.cat(hits) if hits else torch.zeros(0)


def accuracy(model: nn.Module, source: BatchSource, *, passes: int = 1, device: torch.device | str = "cpu",
             first_pass: int = 0) -> float:
    """Top-1 accuracy of ``model`` over ``passes`` epochs of ``source`` (0 for an empty source)."""
    hits = outcomes(model, source, passes=passes, device=device, first_pass=first_pass)
    return float(hits.mean()) if len(hits) else 0.0
