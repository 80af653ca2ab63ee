"""How a network runs fastest on this hardware: channels_last memory format (with the one workaround this torch
needs), ``torch.compile``, bf16 autocast on GPUs. The numbers a run gives do not depend on these beyond float
rounding.

The workaround: in this torch's CPU build the weight gradient of a 1×1 convolution with stride 2 in channels_last
format crashes the process (segmentation fault) when the convolution has fewer than 16 input channels and its
input is at least about 54 pixels wide (e.g. the first downsampling shortcut of a width-8 ResNet-18 on 128-px
canvases). ``channels_last`` therefore runs every strided 1×1 convolution (no padding) as a stride-1 convolution of
the subsampled input: the same linear map of the same pixels, without the crashing kernel.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext

import torch
from torch import Tensor, nn

from poschan.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")
MEMORY_FORMATS = ("channels_last", "contiguous")


def _strided_pointwise(module: nn.Module) -> bool:
    return (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.stride != (1, 1)
            and module.padding == (0, 0) and module.dilation == (1, 1))


@contextmanager
def _subsampled(conv: nn.Conv2d) -> Iterator[None]:
    """``conv`` (1×1, stride s) as a stride-1 convolution of its input subsampled by s, inside the block."""
    sy, sx = conv.stride

    def subsample(_: nn.Module, args: tuple) -> tuple:
        return (args[0][..., ::sy, ::sx], *args[1:])

    handle = conv.register_forward_pre_hook(subsample)
    conv.stride = (1, 1)
    try:
        yield
    finally:
        conv.stride = (sy, sx)
        handle.remove()


@contextmanager
def channels_last(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """``model`` in channels_last memory format inside the block (contiguous again after it), its strided 1×1
    convolutions run subsampled (see the module docstring). Inputs may come in either format."""
    if not enabled:
        yield model
        return
    with ExitStack() as stack:
        for module in model.modules():
            if _strided_pointwise(module):
                stack.enter_context(_subsampled(module))
        model.to(memory_format=torch.channels_last)
        try:
            yield model
        finally:
            model.to(memory_format=torch.contiguous_format)


def to_channels_last(x: Tensor, enabled: bool = True) -> Tensor:
    """A 4-D batch in channels_last format (other tensors, or ``enabled`` False: unchanged)."""
    return x.contiguous(memory_format=torch.channels_last) if enabled and x.dim() == 4 else x


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA (autocast), fp32 elsewhere; bf16 is refused off CUDA (on this CPU it is slower)."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16" and device.type != "cuda":
        raise UserError(f"precision bf16 runs on CUDA devices only, not on {device.type}; use fp32 or auto")
    return precision


def autocast(precision: str, device: torch.device):
    """The autocast context of a resolved precision (none for fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def compiled(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` when ``enabled`` (shares its parameters; save ``model``'s state), else ``model``."""
    return torch.compile(model) if enabled else model
