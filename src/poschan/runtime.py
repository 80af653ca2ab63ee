"""The one device resolver, seeding helper and eval-mode context of poschan (every layer may import these)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from poschan.errors import UserError


def resolve_device(name: str | torch.device) -> torch.device:
    """``torch.device(name)``, refused with one line when it is unknown or not available here."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    return device


def to_device(t: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """``t`` on ``device``; a CPU tensor bound for CUDA goes through pinned memory with a non-blocking copy, so the
    copy overlaps the GPU's work on the previous batch."""
    if device is None:
        return t
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (the CPU for a model without parameters)."""
    return next(model.parameters(), torch.empty(0)).device


def seeded_generator(*keys: int | str) -> torch.Generator:
    """A CPU generator seeded from ``keys`` (seed, epoch, batch, a layer name, ...) through numpy's SeedSequence
    hashing (strings enter by their CRC-32), so that streams keyed differently are independent."""
    ints = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    state = np.random.SeedSequence(ints).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; its previous train/eval mode is restored on exit."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def seeded_torch_rng(seed: int) -> Iterator[None]:
    """Inside the block the global torch RNG is seeded with ``seed``; its previous state is restored on exit. For
    what only draws from it: module constructors (a model built here is a function of ``seed``) and an evaluation
    through modules that permute with it (``ChannelPermute``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
