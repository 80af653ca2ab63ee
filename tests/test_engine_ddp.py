"""engine.fit under a real 2-process gloo group on CPU.

Known answer: the ranks split every batch (7 rows: 4 and 3), weight their losses by their share of the rows and
synchronise BatchNorm, so two ranks take the steps of one process on the same batches, batch statistics, running
statistics and an uneven split included. Float64 keeps the two summation orders equal far below the tolerance. A
run resumed from its end-of-epoch checkpoint ends where the uninterrupted one does. The ranks are forked (as DataLoader workers
are, one thread each) after the parent imported what DDP imports, so the test takes seconds, not imports.
"""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from poschan.engine import fit

WORLD, BATCH, N_BATCHES, EPOCHS, LR = 2, 7, 5, 2, 1e-2


class FixedBatches:
    """``N_BATCHES`` float64 batches per epoch, a pure function of the epoch."""

    def __len__(self) -> int:
        return N_BATCHES

    def epoch(self, epoch, device=None):
        g = torch.Generator().manual_seed(epoch)
        for _ in range(N_BATCHES):
            y = torch.randint(0, 2, (BATCH,), generator=g)
            yield torch.randn(BATCH, 2, generator=g, dtype=torch.float64) + 2 * y[:, None], y


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8, bias=False), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 2)).double()


def _rank_main(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        model = make_model()
        fit(model, FixedBatches(), epochs=EPOCHS, lr=LR, progress=False)
        torch.save(model.state_dict(), f"{out}/rank{rank}.pt")
        checkpoint = Path(out) / "checkpoint.pt"  # one epoch, then the rest from the checkpoint
        fit(make_model(), FixedBatches(), epochs=1, lr=LR, progress=False, checkpoint=checkpoint)
        resumed = make_model()
        fit(resumed, FixedBatches(), epochs=EPOCHS, lr=LR, progress=False, checkpoint=checkpoint)
        torch.save(resumed.state_dict(), f"{out}/resumed{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_two_ranks_train_as_one_process_on_the_same_batches(tmp_path):
    import torch._dynamo  # noqa: F401  (DistributedDataParallel imports it: once here, not in every rank)

    mp.start_processes(_rank_main, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    resumed = [torch.load(tmp_path / f"resumed{r}.pt", weights_only=True) for r in range(WORLD)]
    single = make_model()
    fit(single, FixedBatches(), epochs=EPOCHS, lr=LR, progress=False)
    start = make_model().state_dict()
    for key, value in single.state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key])  # the ranks stay in sync
        if key.endswith("num_batches_tracked"):
            assert int(value) == N_BATCHES * EPOCHS
        else:
            assert not torch.allclose(value, start[key], atol=1e-3)  # training moved every tensor
        torch.testing.assert_close(ranks[0][key], value, rtol=0, atol=1e-10)
        torch.testing.assert_close(resumed[0][key], value, rtol=0, atol=1e-10)
