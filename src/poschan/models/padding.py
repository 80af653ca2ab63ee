"""Convert the padding of every convolution of a model: zeros / none / circular / reflect / replicate / partial.

Only nn.Conv2d layers with nonzero padding change; pooling layers (max-pool padding) are left as
they are. Converted convs keep their parameters (the same Parameter objects) and their names, so
state_dict keys are unchanged across all padding modes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poschan.errors import UserError
from poschan.models.poolnet import replace_module

PADDING_MODES = ("zeros", "none", "circular", "reflect", "replicate", "partial")


class NoPadConv2d(nn.Conv2d):
    """The paper's "no padding" conv: resize the input, then a valid (unpadded) convolution.

    With recorded padding (top, bottom, left, right), the input (H, W) is bilinearly resized
    (align_corners=False) to (H + top + bottom, W + left + right) -- e.g. by k-1 pixels for a
    k x k conv with padding (k-1)/2 -- and convolved with padding 0, so the output size equals that
    of the padded conv while no padded value ever enters a window. (The paper's code adds only 3
    pixels for its 7x7 stem; here the stem's output size is kept exactly too.) ``padding`` keeps
    the original value to record the amount; it is never applied as padding.
    """

    def forward(self, input: Tensor) -> Tensor:
        left, right, top, bottom = self._reversed_padding_repeated_twice
        h, w = input.shape[-2:]
        x = F.interpolate(input, size=(h + top + bottom, w + left + right), mode="bilinear", align_corners=False)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class PartialConv2d(nn.Conv2d):
    """Partial-convolution padding (Liu et al. 2018, "Partial convolution based padding").

    Zero padding, then each output is re-weighted by (window area / number of non-padded input
    pixels in the window) before the bias is added: out = conv_nobias(pad0(x)) * ratio + bias.
    The ratio map is cached per (H, W, device, dtype). Hand-written: neither torch nor
    torchvision/timm ships a partial-convolution layer.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._ratios: dict[tuple, Tensor] = {}

    def _ratio(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = (h, w, device, dtype)
        if key not in self._ratios:
            with torch.no_grad():
                valid = F.pad(torch.ones(1, 1, h, w, device=device, dtype=dtype), self._reversed_padding_repeated_twice)
                window = torch.ones(1, 1, *self.kernel_size, device=device, dtype=dtype)
                count = F.conv2d(valid, window, stride=self.stride, dilation=self.dilation)
                self._ratios[key] = window.numel() / count.clamp(min=1)
        return self._ratios[key]

    def forward(self, input: Tensor) -> Tensor:
        x = F.pad(input, self._reversed_padding_repeated_twice)
        out = F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)
        out = out * self._ratio(*input.shape[-2:], out.device, out.dtype)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype).view(1, -1, 1, 1)  # keep the autocast dtype
        return out


_OWN = (nn.Conv2d, NoPadConv2d, PartialConv2d)


def _rebuild(conv: nn.Conv2d, cls: type[nn.Conv2d], padding_mode: str) -> nn.Conv2d:
    """A ``cls`` conv with ``conv``'s hyper-parameters sharing its Parameter objects."""
    new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
              conv.groups, conv.bias is not None, padding_mode, device="meta")
    new.weight = conv.weight
    new.bias = conv.bias
    new.train(conv.training)
    return new


def convert_padding(model: nn.Module, mode: str) -> nn.Module:
    """Convert every nn.Conv2d with nonzero padding in ``model`` (in place) to padding ``mode``; return the model.

    zeros/circular/reflect/replicate: torch's own Conv2d ``padding_mode`` (reflect needs padding
    smaller than the feature map). none: NoPadConv2d. partial: PartialConv2d. Convs already
    converted by this function can be converted again. Other Conv2d subclasses (e.g. TF-"same"
    convs that pad inside their own forward) are left alone for "zeros" and refused otherwise.
    Converted convs are new module objects (same Parameters): register hooks on convs after
    converting. A bare conv passed as ``model`` is returned converted.
    """
    if mode not in PADDING_MODES:
        raise UserError(f"unknown padding {mode!r}; allowed: {', '.join(PADDING_MODES)}")
    cls = {"none": NoPadConv2d, "partial": PartialConv2d}.get(mode, nn.Conv2d)
    torch_mode = mode if cls is nn.Conv2d else "zeros"
    for name, conv in list(model.named_modules()):
        if not isinstance(conv, nn.Conv2d):
            continue
        if type(conv) not in _OWN:
            if mode == "zeros" or conv.kernel_size == (1, 1):
                continue
            raise UserError(f"cannot convert the padding of layer {name!r} ({type(conv).__name__} may pad in its own "
                            f"forward); padding {mode!r} needs plain nn.Conv2d layers")
        if not any(conv._reversed_padding_repeated_twice):
            continue
        new = _rebuild(conv, cls, torch_mode)
        if not name:
            return new
        replace_module(model, name, new)
    return model
