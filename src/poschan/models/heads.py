"""Classification heads (GAP->FC, the paper's GAPNet) and the paper's random channel permutation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from poschan.errors import UserError

if TYPE_CHECKING:
    from poschan.models.poolnet import PoolNet

HEADS = ("gap-fc", "gapnet")


class ChannelPermute(nn.Module):
    """Randomly permute dim 1 (channels) of a (B, C) or (B, C, H, W) tensor: the paper's PermuteNet.

    Every forward draws a fresh permutation, in train AND eval mode, from ``generator`` (then moved to ``x``'s
    device) or, without one, from the global torch RNG on ``x``'s device. One permutation is shared by the whole
    batch (as in the paper) unless ``per_sample``, which draws one per sample. No parameters. Under ``torch.compile``
    the forward stays eager (a graph break): the permutations come from the same RNG stream as without compiling,
    and this torch's compiler cannot draw them for a batch of symbolic size (an epoch's last, smaller batch).
    """

    def __init__(self, per_sample: bool = False, generator: torch.Generator | None = None):
        super().__init__()
        self.per_sample = per_sample
        self.generator = generator

    @torch.compiler.disable
    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        where = x.device if self.generator is None else self.generator.device
        if not self.per_sample:
            return x[:, torch.randperm(c, device=where, generator=self.generator).to(x.device)]
        order = torch.rand(b, c, device=where, generator=self.generator).argsort(dim=1).to(x.device)
        return x.gather(1, order.view(b, c, *[1] * (x.dim() - 2)).expand_as(x))

    def pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Forward pre-hook: permute the first input of ``module`` (a bound method, so deepcopy keeps it)."""
        return (self(args[0]), *args[1:])

    def extra_repr(self) -> str:
        return f"per_sample={self.per_sample}"


class GapFcHead(nn.Module):
    """Global average pool -> optional ChannelPermute -> nn.Linear ``fc``."""

    def __init__(self, in_channels: int, num_classes: int, permute: ChannelPermute | None = None):
        super().__init__()
        self.permute = permute
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        z = x.mean(dim=(2, 3))
        if self.permute is not None:
            z = self.permute(z)
        return self.fc(z)


class GapNetHead(nn.Module):
    """The paper's GAPNet head: 3x3 conv (padding 1) ``conv`` to num_classes channels, then GAP = logits. No FC."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x).mean(dim=(2, 3))


def build_head(kind: str, in_channels: int, num_classes: int, permute: ChannelPermute | None = None) -> nn.Module:
    """Head by name (one of HEADS); ``permute`` (between pooling and fc) needs kind "gap-fc"."""
    if kind == "gap-fc":
        return GapFcHead(in_channels, num_classes, permute)
    if kind == "gapnet":
        if permute is not None:
            raise UserError("a channel permutation after pooling needs head 'gap-fc' (gapnet has no pooled vector)")
        return GapNetHead(in_channels, num_classes)
    raise UserError(f"unknown head {kind!r}; allowed: {', '.join(HEADS)}")


def attach_stage_permute(model: PoolNet, stage: str, per_sample: bool) -> None:
    """Permute the channels entering ``stage`` (a key of ``model.stages``) on every forward.

    The ChannelPermute becomes ``model.stage_permute`` and a forward pre-hook of that stage's
    module: a permanent part of the model (survives copy.deepcopy); no layer is renamed.
    """
    if stage not in model.stages:
        allowed = ", ".join(model.stages) or "none (this model defines no stages)"
        raise UserError(f"unknown stage {stage!r} for a channel permutation; allowed: {allowed}")
    if hasattr(model, "stage_permute"):
        raise UserError("the model already has a stage channel permutation; attach at most one")
    model.stage_permute = ChannelPermute(per_sample)
    model.backbone.get_submodule(model.stages[stage]).register_forward_pre_hook(model.stage_permute.pre_hook)
