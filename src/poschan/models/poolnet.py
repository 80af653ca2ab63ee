"""PoolNet: the contract every model answers (backbone -> feature map, head -> logits)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from poschan.errors import UserError
from poschan.runtime import eval_mode

PROBE_SIZE = 64


def probe_feature_map(backbone: nn.Module, in_chans: int, what: str) -> torch.Size:
    """Shape of ``backbone``'s output on a zero (1, in_chans, 64, 64) image (eval mode, no grad).

    Raises UserError when the forward fails or does not return a 4-D (B, C, H, W) tensor;
    ``what`` names the model in that message.
    """
    try:
        with torch.no_grad(), eval_mode(backbone):
            out = backbone(torch.zeros(1, in_chans, PROBE_SIZE, PROBE_SIZE))
    except Exception as err:  # user code: any failure becomes one clear line
        reason = (str(err).splitlines() or [""])[0]
        raise UserError(
            f"{what}: forward on a 1x{in_chans}x{PROBE_SIZE}x{PROBE_SIZE} image failed "
            f"({type(err).__name__}: {reason}); a backbone must map images to a (B, C, H, W) feature map"
        ) from err
    if not isinstance(out, Tensor) or out.dim() != 4:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise UserError(f"{what}: the backbone returned {got}; it must return a 4-D (B, C, H, W) feature map")
    return out.shape


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` in place of the submodule at dotted ``name`` inside ``root``."""
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent), child, new)


def set_in_chans(module: nn.Module, in_chans: int) -> None:
    """Replace the first nn.Conv2d of ``module`` by a freshly initialised one taking ``in_chans`` channels."""
    first = next(((n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise UserError(f"cannot set in_chans={in_chans}: the model has no nn.Conv2d")
    name, conv = first
    if conv.in_channels == in_chans:
        return
    if type(conv) is not nn.Conv2d or conv.groups != 1:
        raise UserError(f"cannot set in_chans={in_chans}: the first conv ({name}) is not a plain ungrouped nn.Conv2d")
    replace_module(module, name, nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                           conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode))


class PoolNet(nn.Module):
    """Backbone (image -> (B, C, H, W) feature map) + head. The contract every model answers.

    Attributes: ``backbone``, ``head``, ``in_chans``, ``num_classes``, ``num_features`` (C of the
    feature map), ``stages`` (stage name -> dotted name of a module inside ``backbone``, e.g.
    {"stage1": "layer1"}; dotted names of the whole model are "backbone.<name>"), ``input_norm``
    ((mean, std) per input channel the architecture's published weights expect, or None).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, in_chans: int, num_classes: int,
                 stages: dict[str, str] | None = None, *, num_features: int | None = None,
                 input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.stages = dict(stages or {})
        self.num_features = (num_features if num_features is not None
                             else probe_feature_map(backbone, in_chans, type(backbone).__name__)[1])
        self.input_norm = input_norm

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def features(self, x: Tensor) -> Tensor:
        """The backbone's (B, C, H, W) feature map."""
        return self.backbone(x)

    def pooled(self, x: Tensor) -> Tensor:
        """(B, C) global average pool of the feature map."""
        return self.features(x).mean(dim=(2, 3))
