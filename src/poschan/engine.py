"""One seeded, resumable training loop (``fit``), the same under torchrun DDP.

Determinism: the data of an epoch is a pure function of (seed, epoch) (see ``data.stream``), and the global
torch RNG (used by e.g. ``ChannelPermute``) is re-seeded at the start of every epoch, so a run resumed from
its end-of-epoch checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from poschan.data.stream import BatchSource
from poschan.distributed import all_sum, barrier, rank_world, rows, synced_batchnorm
from poschan.errors import UserError
from poschan.execution import MEMORY_FORMATS, autocast, channels_last, compiled, resolve_compile, to_channels_last
from poschan.results import atomic_torch_save, read_tensor_file
from poschan.runtime import seeded_torch_rng
from poschan.tables import write_csv

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
EvalFn = Callable[[nn.Module, int], dict]
SCHEDULES = ("constant", "one-cycle")


def cross_entropy_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x), y)


def epoch_seed(seed: int, epoch: int) -> int:
    """The global-RNG seed of one epoch of one run."""
    return (seed * 1_000_003 + epoch * 7_919) % (2**63)


def evaluation_seed(seed: int, epoch: int) -> int:
    """The RNG seed of the evaluation after ``epoch`` (0-based): re-running it later gives the same numbers."""
    return epoch_seed(seed, epoch) + 1


def check_options(schedule: str, memory_format: str, compile: str | bool = "auto") -> None:
    """Refuse, with one line, a schedule, memory format or compile mode that ``fit`` does not know."""
    resolve_compile(compile, 0)
    if schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if memory_format not in MEMORY_FORMATS:
        raise UserError(f"unknown memory_format {memory_format!r}; allowed: {', '.join(MEMORY_FORMATS)}")


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by :func:`fit`; pickled code is refused."""
    state = read_tensor_file(path, "checkpoint")
    if not isinstance(state, dict) or not {"model", "epoch"} <= set(state):
        raise UserError(f"{path} is not a poschan checkpoint: expected keys 'model' and 'epoch'")
    return state


def _tensorboard_writer(log_dir: Path | None):
    if log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(log_dir))


def fit(
    model: nn.Module,
    train: BatchSource,
    *,
    epochs: int,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.5, 0.999),
    seed: int = 0,
    device: torch.device | str = "cpu",
    checkpoint: Path | None = None,
    log_csv: Path | None = None,
    evaluate: EvalFn | None = None,
    loss_fn: LossFn = cross_entropy_loss,
    progress: bool = True,
    desc: str = "train",
    tensorboard: Path | None = None,
    meta: dict | None = None,
    schedule: str = "constant",
    memory_format: str = "contiguous",
    compile: str | bool = False,
    precision: str = "fp32",
) -> list[dict]:
    """Train ``model`` with Adam for ``epochs`` epochs; returns the per-epoch metrics history.

    If ``checkpoint`` exists, training resumes after its last completed epoch. A checkpoint (model, optimizer,
    epoch, history) is written atomically after every epoch. ``evaluate(model, epoch)`` returns extra metrics
    for the history; it runs with its own forked RNG so it never perturbs training.
    Under torchrun (an initialised process group) the model is wrapped in DistributedDataParallel and every
    batch is split across the ranks (``distributed.rows``), each rank's loss weighted by its share of the rows and
    BatchNorm synchronised, so the ranks take the steps one process would (up to float rounding; a per-sample
    channel permutation is drawn per rank); only rank 0 writes files. ``tensorboard`` names a log directory used when
    the tensorboard package is installed. ``meta`` (plain data: what the model is) is stored in every
    checkpoint under key "meta".

    ``schedule``: ``constant`` (the paper's Adam) or ``one-cycle`` (torch's OneCycleLR over all steps, stepped per
    batch, peak ``lr``, betas kept; its state is in the checkpoint). Execution (poschan.execution; results change
    by float rounding only): ``memory_format`` ``channels_last`` or ``contiguous``, ``compile`` (torch.compile of
    the training forward: true, false, or a mode of ``execution.resolve_compile`` decided by the run's number of
    steps), ``precision`` ``fp32`` or ``bf16`` (autocast of the training forward; evaluation stays fp32). Adam is
    torch's fused implementation (one kernel over all parameters, on CPU and CUDA).
    """
    check_options(schedule, memory_format, compile)
    device = torch.device(device)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, fused=device.type in ("cpu", "cuda"))
    rank, world = rank_world()
    steps = len(train)
    scheduler = (torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(1, epochs * steps),
                                                     cycle_momentum=False) if schedule == "one-cycle" else None)
    history: list[dict] = []
    start = 0
    if checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        start, history = int(state["epoch"]), list(state["history"])
    fast = memory_format == "channels_last"
    writer = _tensorboard_writer(tensorboard) if rank == 0 else None
    with channels_last(model, fast), synced_batchnorm(model):
        net: nn.Module = model
        if world > 1:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                      else None)
        net = compiled(net, resolve_compile(compile, epochs * steps))  # the whole run's steps, as at its start
        for epoch in range(start, epochs):
            torch.manual_seed(epoch_seed(seed, epoch))
            net.train()
            began, total, count = time.perf_counter(), 0.0, 0
            bar = tqdm(total=steps, desc=f"{desc} {epoch + 1}/{epochs}",
                       disable=None if progress and rank == 0 else True,  # None: only on a terminal
                       leave=False)
            for step, (x, y) in enumerate(train.epoch(epoch, device)):
                if len(y) < world:
                    raise UserError(f"batch {step + 1} of epoch {epoch + 1} holds {len(y)} rows, fewer than the "
                                    f"{world} ranks; use a larger batch_size or fewer processes")
                share = len(rows(y)) / len(y)
                x, y = rows(x), rows(y)
                with autocast(precision, device):
                    loss = loss_fn(net, to_channels_last(x, fast), y) * (share * world)  # the ranks' mean: the batch's
                value = float(loss.detach()) / (share * world)
                if not math.isfinite(value):
                    raise UserError(f"training diverged: the loss is {value} at epoch {epoch + 1}, step {step + 1} "
                                    f"(lr {lr}); lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                total, count = total + value * len(y), count + len(y)
                bar.update()
                bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
            bar.close()
            total, count = all_sum(torch.tensor([total, count], dtype=torch.float64)).tolist()
            row = {"epoch": epoch + 1, "train_loss": total / max(count, 1), "seconds": time.perf_counter() - began}
            if evaluate is not None:
                with seeded_torch_rng(evaluation_seed(seed, epoch)):
                    row.update(evaluate(model, epoch + 1))
            history.append(row)
            if rank == 0:
                if checkpoint is not None:
                    atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                       "epoch": epoch + 1, "history": history, **({"meta": meta} if meta else {}),
                                       **({"scheduler": scheduler.state_dict()} if scheduler else {})},
                                      checkpoint)
                if log_csv is not None:
                    write_csv(log_csv, history)
                if writer is not None:
                    for key, value in row.items():
                        if key != "epoch":
                            writer.add_scalar(key, value, epoch + 1)
                    writer.flush()
            barrier()  # the other ranks read nothing rank 0 has not finished writing
    if writer is not None:
        writer.close()
    return history
