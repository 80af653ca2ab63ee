"""How a network runs fastest on this hardware: channels_last memory format (with the one workaround this torch
needs), ``torch.compile``, bf16 autocast where the hardware computes in bf16 natively. The numbers a run gives do
not depend on these beyond float rounding (for bf16: the paired check in results/precision-check).

Native bf16: a CUDA device that supports it, or a CPU with AMX-BF16 or AVX512-BF16 (read from torch's cpuinfo,
never from the CPU's model name). Elsewhere torch emulates bf16 with conversions, slower than fp32.

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
COMPILE_MODES = ("auto", "always", "never")
# ``compile: auto`` compiles a run of at least this many training steps. Measured by bench/train_loop.py (its
# "compile" lines, 2 cores, AVX512-BF16 without AMX): compiled steps are 5-10 ms faster (width 8 and 16, fp32 and
# bf16); compiling costs 25-55 s in a process with a cold inductor cache (a fresh machine, CI, a new worker's first
# model) but 1-5 s with a warm one, so it pays after about 4,000-8,000 steps cold and a few hundred warm. The rule
# takes the cold case (what a run cannot know in advance) with a margin for the recompilation that an epoch's last,
# smaller batch triggers.
COMPILE_MIN_STEPS = 10_000


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


def cpu_capability() -> dict:
    """What this CPU computes natively, as torch reads it: its vector ISA and the bf16 instructions."""
    return {"isa": torch.backends.cpu.get_cpu_capability(), "amx_bf16": bool(torch.cpu._is_amx_tile_supported()),
            "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported())}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively (see the module docstring)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        cpu = cpu_capability()
        return cpu["amx_bf16"] or cpu["avx512_bf16"]
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 (autocast) where ``device`` computes in bf16 natively, fp32 elsewhere; an explicit bf16 is
    refused where it is not native (emulated, it is slower than fp32)."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and not native_bf16(device):
        raise UserError(f"precision bf16 needs native bf16 (a CUDA device with bf16, or a CPU with AMX-BF16 or "
                        f"AVX512-BF16), which this {device.type} lacks; use fp32 or auto")
    return precision


def autocast(precision: str, device: torch.device):
    """The autocast context of a resolved precision (none for fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def resolve_compile(mode: str | bool, steps: int) -> bool:
    """Whether to compile a training run of ``steps`` steps in all (every epoch's, resumed or not, so a resume
    decides as the first start did): ``always``/true, ``never``/false, or ``auto`` (``COMPILE_MIN_STEPS``)."""
    if isinstance(mode, bool):
        return mode
    if mode not in COMPILE_MODES:
        raise UserError(f"unknown compile mode {mode!r}; allowed: {', '.join(COMPILE_MODES)}")
    return mode == "always" or (mode == "auto" and steps >= COMPILE_MIN_STEPS)


def compiled(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` when ``enabled`` (shares its parameters; save ``model``'s state), else ``model``."""
    return torch.compile(model) if enabled else model
