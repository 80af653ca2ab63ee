"""torchrun support: the process group from the environment, the rank guard, sharding and merging.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` set) :func:`start` joins the process group (gloo on
CPU, nccl on CUDA, each rank on ``cuda:LOCAL_RANK``). Every rank then runs the same code: the deterministic parts
on every rank, the sharded parts (training rows, ranking passes, evaluation batches) on each rank's share and
merged with :func:`merge`, so every rank holds the same results, and only rank 0 writes files (poschan's writers
check :func:`is_main`). Without torchrun everything here is the one-process identity.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from poschan.errors import UserError
from poschan.runtime import resolve_device

T = TypeVar("T")
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its environment)."""
    return all(key in os.environ for key in _TORCHRUN_ENV)


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    return (dist.get_rank(), dist.get_world_size()) if active() else (0, 1)


def is_main() -> bool:
    """Whether this process writes files: rank 0, or the only process."""
    return rank_world()[0] == 0


def start(device: str | None) -> None:
    """Join the torchrun process group (once): nccl when ``device`` is CUDA, else gloo; a CUDA rank is put on
    ``cuda:LOCAL_RANK``, so that ``--device cuda`` means each rank's own GPU. Nothing without torchrun."""
    if not launched() or active():
        return
    cuda = resolve_device(device or "cpu").type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=30))
    atexit.register(_stop)


def _stop() -> None:
    if active():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def agree(error: str | None) -> None:
    """Raise UserError on every rank when any rank had ``error`` (the first in rank order), so that a bad input
    seen by one rank ends them all with the same one-line message."""
    errors = merge(error)
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise UserError(first)


def merge(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank (picklable objects of poschan's own ranks)."""
    if not active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard(items: Iterable[T]) -> Iterator[tuple[int, T]]:
    """(k, item) for this rank's items of ``items``: every world-th, from the rank's own index."""
    rank, world = rank_world()
    for k, item in enumerate(items):
        if k % world == rank:
            yield k, item


def gather_in_order(pieces: list[tuple[int, T]]) -> list[T]:
    """The (k, piece) pairs of every rank, as one list ordered by k (what one process would have made)."""
    return [piece for _, piece in sorted((p for part in merge(pieces) for p in part), key=lambda p: p[0])]


def all_sum(values: Tensor) -> Tensor:
    """``values`` summed over the ranks (float64 on the CPU for gloo; a copy)."""
    out = values.detach().clone()
    if active():
        dist.all_reduce(out)
    return out


def rows(x: Tensor) -> Tensor:
    """This rank's rows of a global batch: contiguous, sizes differing by at most one."""
    rank, world = rank_world()
    return torch.tensor_split(x, world)[rank] if world > 1 else x


class _CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, all-reduced over the ranks with
    autograd (torch.distributed.nn), on any device. Hand-written because torch's SyncBatchNorm refuses CPU
    tensors. Built by :meth:`sharing`, it holds the very parameters and buffers of the layer it stands for."""

    @classmethod
    def sharing(cls, bn: nn.modules.batchnorm._BatchNorm) -> _CpuSyncBatchNorm:
        synced = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        for name, value in [*bn.named_parameters(recurse=False), *bn.named_buffers(recurse=False)]:
            setattr(synced, name, value)
        return synced.train(bn.training)

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected a (B, C, ...) input, got {x.dim()} dimensions")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims, shape, c = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2), x.shape[1]
        local = torch.cat([x.sum(dims).double(), (x * x).sum(dims).double(),
                           torch.full((1,), x.numel() / c, dtype=torch.float64, device=x.device)])
        total = all_reduce(local)  # one collective per layer: the sums in float64, so E[x²] − E[x]² keeps its digits
        count = total[-1]
        mean64 = total[:c] / count
        mean, var = mean64.to(x.dtype), (total[c:2 * c] / count - mean64 ** 2).clamp(min=0).to(x.dtype)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(mean, alpha=m)
            self.running_var.mul_(1 - m).add_(var * (count / (count - 1).clamp(min=1)), alpha=m)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


@contextmanager
def synced_batchnorm(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, every BatchNorm of ``model`` normalises with the global batch's statistics (ranks hold
    rows of one batch); restored on exit. torch's SyncBatchNorm on CUDA, the hand-written one on the CPU."""
    if rank_world()[1] == 1:
        yield model
        return
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and child.track_running_stats:
                cuda = next(child.buffers()).device.type == "cuda"
                synced = (nn.SyncBatchNorm.convert_sync_batchnorm(child) if cuda
                          else _CpuSyncBatchNorm.sharing(child))
                setattr(parent, name, synced)
                swapped.append((parent, name, child))
    try:
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
