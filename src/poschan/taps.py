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
from poschan.models.heads import ChannelPermute
from poschan.runtime import eval_mode

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
def permute_channels(model: nn.Module, layer: str, *, per_sample: bool = False,
                     generator: torch.Generator | None = None, where: str = "output") -> Iterator[None]:
    """Inside the block, the channels (dim 1) of ``layer``'s output (``where="output"``) or of its first input
    (``"input"``) are randomly permuted on every forward pass: one permutation per batch, or per sample with
    ``per_sample``, drawn from ``generator`` or else the global torch RNG (see ``ChannelPermute``). Permuting the
    pooled features of a trained network is the paper's test-time control: position read from the channel
    order is lost, what single channels encode is not."""
    if where not in ("output", "input"):
        raise UserError(f"where must be 'output' or 'input', got {where!r}")
    permute = ChannelPermute(per_sample, generator)
    target = get_layer(model, layer)
    if where == "input":
        handle = target.register_forward_pre_hook(permute.pre_hook, prepend=True)
    else:
        handle = target.register_forward_hook(lambda _m, _inp, out: permute(out), prepend=True)
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
    """Dotted layer names: a stage name (e.g. ``stage2``) maps to its module in ``model.stages``, and a name of
    the model's ``backbone`` (e.g. ``layer4`` of a torchvision ResNet) to ``backbone.<name>`` when the model has
    no layer of that name itself; unknown names fail with the closest valid ones; duplicates are dropped."""
    stages = getattr(model, "stages", {})
    modules = dict(model.named_modules())

    def full_name(n: str) -> str:
        if n in stages:
            return f"backbone.{stages[n]}"
        return f"backbone.{n}" if n not in modules and f"backbone.{n}" in modules else n

    full = [full_name(n) for n in (n.strip() for n in names) if n]
    for name in full:
        get_layer(model, name)
    return list(dict.fromkeys(full))


@torch.no_grad()
def extract_pooled(model: nn.Module, source: BatchSource, layers: Sequence[str], *, passes: int = 1,
                   device: torch.device | str = "cpu") -> tuple[dict[str, Tensor], Tensor]:
    """``({layer: (N, C) pooled features}, (N,) labels)`` over ``passes`` epochs of ``source`` (model in eval mode).

    Features stay on ``device``; the forward pass stops at the deepest requested layer.
    """
    chunks: dict[str, list[Tensor]] = {name: [] for name in layers}
    labels: list[Tensor] = []
    with eval_mode(model):
        for p in range(passes):
            for x, y in source.epoch(p, device):
                for name, value in pooled_features(model, x, layers).items():
                    chunks[name].append(value)
                labels.append(y)
    return {name: torch.cat(values) for name, values in chunks.items()}, torch.cat(labels)


def forward_with_latent(model: nn.Module, x: Tensor, layer: str = "backbone") -> tuple[Tensor, Tensor]:
    """(logits, pooled latent (B, C)) of ``x`` from ONE forward pass of ``model`` (or a DDP wrapper of it).

    The latent is the global average of ``layer``'s feature map (for a PoolNet, ``backbone``: its pooled
    features), recorded by a hook while ``model(x)`` runs, so the network runs once and a DDP wrapper still
    syncs gradients.
    """
    inner = getattr(model, "module", model)  # DistributedDataParallel holds the model in .module
    with capture(inner, [layer], pooled=True) as store:
        logits = model(x)
    return logits, store[layer]
