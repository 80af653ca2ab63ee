"""GPU execution (skipped without CUDA): bf16 autocast, channels_last, pinned non-blocking copies and torchrun with
nccl on one GPU per rank; the numbers of the CPU run within bf16's rounding."""

import json
import subprocess
import sys

import pytest
import torch

from poschan.cli import main
from poschan.runtime import to_device

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SMOKE = ["train", "--preset", "smoke", "--no-progress"]


def test_batches_reach_the_gpu_through_pinned_memory():
    x = torch.arange(6.0)
    y = to_device(x, "cuda")
    torch.cuda.synchronize()
    assert y.device.type == "cuda" and torch.equal(y.cpu(), x)


def test_train_on_the_gpu_in_bf16_matches_the_cpu(tmp_path):
    assert main([*SMOKE, "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    assert main([*SMOKE, "--device", "cuda", "--precision", "bf16", "--out", str(tmp_path / "gpu")]) == 0
    cpu, gpu = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("cpu", "gpu"))
    assert gpu["config"]["precision"] == "bf16" and gpu["env"]["device"] == "cuda"
    assert gpu["metrics"]["train_loss_per_seed"][0] == pytest.approx(cpu["metrics"]["train_loss_per_seed"][0],
                                                                    rel=0.05)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_torchrun_with_nccl_on_two_gpus(tmp_path):
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "poschan",
            *SMOKE, "--device", "cuda", "--out", str(tmp_path / "two")]
    assert subprocess.run(argv, capture_output=True, timeout=600).returncode == 0
    assert json.loads((tmp_path / "two" / "results.json").read_text())["config"]["world_size"] == 2
