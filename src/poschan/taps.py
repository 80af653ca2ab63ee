"""Capture and edit named layers of any ``nn.Module`` with forward hooks.

Every hook is installed by a context manager and removed on exit, so the model is unchanged afterwards.
Layers are addressed by their dotted names from ``model.named_modules()``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch
from torch import Tensor, nn

from poschan.data.stream import BatchSource
from poschan.errors import UserError

MASK_MODES = ("zero", "mean")


def layer_names(model: nn.Module) -> list[str]:
    """All addressable dotted layer names (the root module excluded)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; a wrong name fails with the closest valid ones."""
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, layer_names(model), n=3, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else "list them with `poschan layers MODEL`"
    raise UserError(f"unknown layer {name!r} in {type(model).__name__}; {hint}")


def _as_feature_map(name: str, output: object) -> Tensor:
    if not isinstance(output, Tensor) or output.dim() != 4:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise UserError(f"layer {name!r} outputs {shape}, not a (B, C, H, W) feature map; pick a convolutional layer")
    return output


class _Done(Exception):
    """Raised inside a hook to stop a forward pass once every requested layer was seen."""


@contextmanager
def capture(model: nn.Module, layers: Sequence[str], *, pooled: bool = False) -> Iterator[dict[str, Tensor]]:
    """Record the outputs of ``layers`` during forwards inside the block (global-average-pooled if ``pooled``)."""
    store: dict[str, Tensor] = {}
    with ExitStack() as stack:
        for name in layers:
            layer = get_layer(model, name)

            def hook(_m: nn.Module, _inp: tuple, out: Tensor, name: str = name) -> None:
                fmap = _as_feature_map(name, out) if pooled else out
                store[name] = fmap.mean(dim=(2, 3)) if pooled else fmap

            stack.callback(layer.register_forward_hook(hook).remove)
        yield store


@torch.no_grad()
def pooled_features(model: nn.Module, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """Globally average-pooled ``(B, C)`` features of ``layers`` for input ``x``.

    The forward pass stops as soon as the last requested layer has produced its output, so extraction at an
    inner layer costs no more than the network up to that layer.
    """
    wanted = list(dict.fromkeys(layers))
    with capture(model, wanted, pooled=True) as store, ExitStack() as stack:
        def stop_when_complete(_m: nn.Module, _inp: tuple, _out: Tensor) -> None:
            if len(store) == len(wanted):
                raise _Done

        for name in wanted:
            stack.callback(get_layer(model, name).register_forward_hook(stop_when_complete).remove)
        try:
            model(x)
        except _Done:
            pass
        return {name: store[name] for name in wanted}


def check_mask_mode(mode: str, means: Tensor | None) -> None:
    if mode not in MASK_MODES:
        raise UserError(f"unknown mask mode {mode!r}; allowed: {', '.join(MASK_MODES)}")
    if mode == "mean" and means is None:
        raise UserError("mask mode 'mean' needs the per-channel means")


def masked(fmap: Tensor, channels: Tensor, *, mode: str = "zero", means: Tensor | None = None,
           what: str = "the feature map") -> Tensor:
    """``fmap`` (B, C, H, W) with ``channels`` replaced by zero (``zero``) or by ``means`` (``mean``, one per channel).

    The one masking rule of poschan: the hook of :func:`mask_channels` and the cached-feature sweeps both use it.
    """
    check_mask_mode(mode, means)
    idx = torch.as_tensor(channels, dtype=torch.long).flatten()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= fmap.shape[1]):
        raise UserError(f"channel index out of range for {what} with {fmap.shape[1]} channels")
    keep = torch.ones(fmap.shape[1], dtype=fmap.dtype, device=fmap.device)
    keep[idx.to(fmap.device)] = 0
    keep = keep.view(1, -1, 1, 1)
    if mode == "zero":
        return fmap * keep
    fill = means.to(fmap.device, fmap.dtype).view(1, -1, 1, 1)
    return fmap * keep + fill * (1 - keep)


@contextmanager
def mask_channels(
    model: nn.Module, layer: str, channels: Sequence[int] | Tensor, *, mode: str = "zero",
    means: Tensor | None = None,
) -> Iterator[None]:
    """Inside the block, replace ``channels`` of ``layer``'s output by zero (``zero``) or by ``means`` (``mean``).

    ``means`` holds one value per channel of the layer (e.g. dataset means of the pooled features).
    """
    check_mask_mode(mode, means)
    target = get_layer(model, layer)
    idx = torch.as_tensor(channels, dtype=torch.long).flatten()

    def hook(_m: nn.Module, _inp: tuple, out: Tensor) -> Tensor:
        return masked(_as_feature_map(layer, out), idx, mode=mode, means=means, what=f"layer {layer!r}")

    handle = target.register_forward_hook(hook, prepend=True)  # observers of the layer see the edit
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def permute_input(model: nn.Module, layer: str, *, per_sample: bool = False) -> Iterator[None]:
    """Inside the block, the channels of ``layer``'s input are randomly permuted on every forward pass
    (fresh permutation from the global torch RNG; shared by the batch unless ``per_sample``)."""
    from .models.heads import ChannelPermute

    handle = get_layer(model, layer).register_forward_pre_hook(ChannelPermute(per_sample).pre_hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def layer_shapes(model: nn.Module, x: Tensor) -> list[tuple[str, tuple[int, ...] | str]]:
    """(name, output shape) for every layer, in execution order, from one forward pass of ``x``."""
    seen: list[tuple[str, tuple[int, ...] | str]] = []
    with ExitStack() as stack:
        for name, module in model.named_modules():
            if not name:
                continue

            def hook(_m: nn.Module, _inp: tuple, out: object, name: str = name) -> None:
                seen.append((name, tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__))

            stack.callback(module.register_forward_hook(hook).remove)
        model(x)
    return seen


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


def forward_with_latent(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(logits, pooled latent (B, C)) of ``x`` from ONE forward pass of a PoolNet (or a DDP wrapper of one).

    The latent is the global average of the backbone's feature map (``PoolNet.pooled``), recorded by a hook on
    ``backbone`` while ``model(x)`` runs, so the backbone runs once and a DDP wrapper still syncs gradients.
    """
    inner = getattr(model, "module", model)  # DistributedDataParallel holds the model in .module
    with capture(inner, ["backbone"], pooled=True) as store:
        logits = model(x)
    return logits, store["backbone"]
