"""poschan.execution: channels_last training with the workaround for this torch's crash, and its settings."""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from poschan.errors import UserError
from poschan.execution import channels_last, resolve_precision, to_channels_last

# The crash: the weight gradient of a 1×1, stride-2 convolution with fewer than 16 input channels, channels_last,
# on an input at least about 54 pixels wide (the first shortcut of a width-8 ResNet-18 on 128-px canvases).
RAW_CASE = """
import torch
from torch import nn
conv = nn.Conv2d(8, 16, 1, stride=2, bias=False).to(memory_format=torch.channels_last)
x = torch.randn(48, 8, 64, 64).contiguous(memory_format=torch.channels_last)
conv(x).sum().backward()
"""

# The same training step through poschan.execution.channels_last: in float32 it must run (the crashing kernel's
# dtype); in float64 (where rounding cannot hide a wrong pixel) it must give the contiguous gradients.
WORKAROUND_CASE = """
import torch
import torch.nn.functional as F
from poschan.execution import channels_last, to_channels_last
from poschan.models.registry import build_model
for dtype in (torch.float32, torch.float64):
    torch.manual_seed(0)
    model = build_model("resnet18-paper", 9, 1, width=8).to(dtype)
    x, y = torch.randn(8, 1, 128, 128, dtype=dtype), torch.randint(0, 9, (8,))
    F.cross_entropy(model(x), y).backward()
    reference = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with channels_last(model):
        F.cross_entropy(model(to_channels_last(x)), y).backward()
print(max(float((p.grad - r).abs().max() / r.abs().max()) for p, r in zip(model.parameters(), reference)))
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_this_torch_still_crashes_on_the_raw_case():
    """If this fails, torch has fixed the crash: the subsampling workaround of poschan.execution can go."""
    done = run_python(RAW_CASE)
    assert done.returncode != 0, "the channels_last 1×1 stride-2 weight gradient no longer crashes this torch"


def test_channels_last_training_runs_the_crashing_shape_with_the_contiguous_gradients():
    done = run_python(WORKAROUND_CASE)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) < 1e-9  # float64, relative: the same gradients


def test_channels_last_restores_the_model_afterwards():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 1, stride=2))
    x = torch.randn(2, 3, 20, 20)
    before = model(x)
    with channels_last(model):
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert model[1].stride == (1, 1)
        inside = model(to_channels_last(x))
    assert model[1].stride == (2, 2) and not model[1]._forward_pre_hooks
    assert model[0].weight.is_contiguous()
    assert inside.shape == before.shape == (2, 16, 9, 9)
    torch.testing.assert_close(inside, before, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def test_precision_resolution():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("auto", gpu) == "bf16"
    assert resolve_precision("fp32", gpu) == "fp32"
    for bad, device in (("bf16", cpu), ("fp16", gpu)):
        with pytest.raises(UserError):
            resolve_precision(bad, device)
