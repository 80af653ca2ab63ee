"""Anti-aliased downsampling (Zhang 2019, "Making convolutional networks shift-invariant again") for any model.

``antialias(model)`` turns every stride-2 layer into its stride-1 version followed by a BlurPool (a fixed
binomial low-pass filter applied depthwise with stride 2: ``timm.layers.BlurPool2d``, reflect padding):

- stride-2 ``nn.Conv2d`` (any subclass: padding modes, TF-"same" convs): the SAME module with stride 1, whose
  output is blurred and subsampled by a BlurPool stored as its child ``blur`` and applied by a forward hook.
  Parameters and state-dict keys are unchanged (the blur filter is a non-persistent buffer), so weights of the
  original model load as they are.
- stride-2 ``nn.MaxPool2d``: MaxPool (same kernel and padding, stride 1) followed by a BlurPool (Zhang's recipe).

Blur placement: directly after the strided conv, so a Conv-BN-ReLU becomes conv(s1) -> blur(s2) -> BN -> ReLU.
Zhang places the blur after the ReLU (conv(s1) -> BN -> ReLU -> blur(s2)); BN (affine per channel at test time)
commutes with the per-channel blur, so the one difference is that the ReLU runs at the low resolution here:
cheaper, and still alias-free since nothing is subsampled after it. Output sizes equal the original ones for
every kernel, padding and input size (both give ceil(n / 2) of the stride-1 output size n).
"""

from __future__ import annotations

from timm.layers import BlurPool2d
from torch import Tensor, nn

from poschan.errors import UserError
from poschan.models.poolnet import replace_module


def _blur_output(conv: nn.Module, _inputs: tuple, output: Tensor) -> Tensor:
    """Forward hook of an anti-aliased conv: its stride-1 output, blurred and subsampled."""
    return conv.blur(output)


def _is_stride2(module: nn.Module) -> bool:
    stride = module.stride if isinstance(module.stride, tuple) else (module.stride, module.stride)
    return tuple(stride) == (2, 2)


def antialias(model: nn.Module, filt_size: int = 3) -> nn.Module:
    """Anti-alias every stride-2 conv and max-pool of ``model`` in place (see the module doc); return it.

    ``filt_size``: odd binomial filter size >= 3 (3 = [1, 2, 1] / 4, Zhang's "Tri-3"; 5 = "Bin-5"); even sizes
    would change output sizes with this padding. Convert paddings (``convert_padding``) BEFORE, and apply it to a
    model with PartialConv2d layers before its first forward (their ratio cache assumes the original stride).
    The blur's reflect padding needs maps larger than filt_size // 2 before each blur (a forward on smaller ones
    raises RuntimeError). Raises UserError when the model has no stride-2 conv or max-pool.
    """
    if filt_size < 3 or filt_size % 2 == 0:
        raise UserError(f"filt_size must be an odd number >= 3 (3 or 5 as in Zhang 2019), got {filt_size}")
    changed = 0
    for name, layer in list(model.named_modules()):
        if isinstance(layer, nn.Conv2d) and _is_stride2(layer):
            layer.stride = (1, 1)
            layer.blur = BlurPool2d(layer.out_channels, filt_size=filt_size, stride=2)
            layer.register_forward_hook(_blur_output)
            changed += 1
        elif isinstance(layer, nn.MaxPool2d) and _is_stride2(layer) and name:
            dense = nn.MaxPool2d(layer.kernel_size, 1, layer.padding, layer.dilation, ceil_mode=layer.ceil_mode)
            replace_module(model, name, nn.Sequential(dense, BlurPool2d(None, filt_size=filt_size, stride=2)))
            changed += 1
    if not changed:
        raise UserError(f"{type(model).__name__} has no stride-2 conv or max-pool to anti-alias")
    return model
