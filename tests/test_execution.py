"""poschan.execution: channels_last training with the workaround for this torch's crash, and its settings."""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from poschan import execution
from poschan.errors import UserError
from poschan.execution import (
    COMPILE_MIN_STEPS,
    channels_last,
    cpu_capability,
    resolve_compile,
    resolve_precision,
    to_channels_last,
)

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


def cpu_with(monkeypatch, amx: bool, avx512_bf16: bool) -> None:
    """This process's torch reports a CPU with (or without) AMX-BF16 tiles and AVX512-BF16."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)


@pytest.mark.parametrize(("amx", "avx512_bf16", "auto"), [(False, False, "fp32"), (True, False, "bf16"),
                                                          (False, True, "bf16"), (True, True, "bf16")])
def test_auto_precision_follows_the_cpus_native_bf16(monkeypatch, amx, avx512_bf16, auto):
    cpu_with(monkeypatch, amx, avx512_bf16)
    cpu = torch.device("cpu")
    assert cpu_capability()["amx_bf16"] is amx and cpu_capability()["avx512_bf16"] is avx512_bf16
    assert resolve_precision("auto", cpu) == auto and resolve_precision("fp32", cpu) == "fp32"
    if auto == "bf16":
        assert resolve_precision("bf16", cpu) == "bf16"
    else:  # emulated bf16 is slower than fp32: refused with one line
        with pytest.raises(UserError, match="needs native bf16"):
            resolve_precision("bf16", cpu)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cuda_follows_its_bf16_support(monkeypatch, native):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
    gpu = torch.device("cuda", 0)
    assert resolve_precision("auto", gpu) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", gpu) == "fp32"
    with pytest.raises(UserError):
        resolve_precision("fp16", gpu)


def test_compile_auto_compiles_runs_from_the_measured_number_of_steps():
    assert not resolve_compile("auto", COMPILE_MIN_STEPS - 1) and resolve_compile("auto", COMPILE_MIN_STEPS)
    assert resolve_compile("always", 1) and resolve_compile(True, 1)
    assert not resolve_compile("never", 10**9) and not resolve_compile(False, 10**9)
    with pytest.raises(UserError, match="unknown compile mode"):
        resolve_compile("sometimes", 1)


def test_fit_decides_compile_by_the_whole_run_also_when_resumed(monkeypatch, tmp_path):
    """A resumed run compiles as its first start did (the decision counts every epoch's steps, not those left):
    otherwise a resume would change the float rounding of the epochs still to run."""
    from tests.test_engine import Blobs, make_model

    from poschan import engine

    decided = []
    monkeypatch.setattr(execution, "COMPILE_MIN_STEPS", 8)
    monkeypatch.setattr(engine, "compiled", lambda net, enabled: decided.append(enabled) or net)
    fit = engine.fit
    fit(make_model(), Blobs(n_batches=4), epochs=1, compile="auto", progress=False)  # 4 steps
    fit(make_model(), Blobs(n_batches=4), epochs=2, compile="auto", progress=False)  # 8 steps
    fit(make_model(), Blobs(n_batches=4), epochs=1, checkpoint=tmp_path / "c.pt", compile="auto", progress=False)
    fit(make_model(), Blobs(n_batches=4), epochs=2, checkpoint=tmp_path / "c.pt", compile="auto", progress=False)
    assert decided == [False, True, False, True]  # the resumed 8-step run has 4 steps left, and compiles
