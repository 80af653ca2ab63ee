"""engine.fit under a real 2-process gloo group on CPU.

Known answer: DDP averages the gradients of the ranks, and rank r takes batches r, r + 2, ..., so one step of 2 ranks
on batches (2k, 2k + 1) of equal size is one step of a single process on their union (the loss is a batch mean).
Float64 keeps the two summation orders equal far below the tolerance. The ranks are forked (as DataLoader workers
are, one thread each) after the parent imported what DDP imports, so the test takes seconds, not imports.
"""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from poschan.engine import fit

WORLD, BATCH, N_BATCHES, EPOCHS, LR = 2, 8, 5, 2, 1e-2  # 5 batches: the odd one out is dropped on every rank


class FixedBatches:
    """``N_BATCHES`` float64 batches per epoch, a pure function of the epoch."""

    def __len__(self) -> int:
        return N_BATCHES

    def epoch(self, epoch, device=None):
        g = torch.Generator().manual_seed(epoch)
        for _ in range(N_BATCHES):
            y = torch.randint(0, 2, (BATCH,), generator=g)
            yield torch.randn(BATCH, 2, generator=g, dtype=torch.float64) + 2 * y[:, None], y


class MergedPairs:
    """Batches (2k, 2k + 1) of ``FixedBatches`` as one batch: what one step of the two ranks sees together."""

    def __len__(self) -> int:
        return N_BATCHES // 2

    def epoch(self, epoch, device=None):
        batches = list(FixedBatches().epoch(epoch, device))
        for k in range(len(self)):
            (x0, y0), (x1, y1) = batches[2 * k], batches[2 * k + 1]
            yield torch.cat([x0, x1]), torch.cat([y0, y1])


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()


def _rank_main(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        model = make_model()
        fit(model, FixedBatches(), epochs=EPOCHS, lr=LR, progress=False)
        torch.save(model.state_dict(), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_two_ranks_train_as_one_process_on_the_union_of_their_batches(tmp_path):
    import torch._dynamo  # noqa: F401  (DistributedDataParallel imports it: once here, not in every rank)

    mp.start_processes(_rank_main, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    single = make_model()
    fit(single, MergedPairs(), epochs=EPOCHS, lr=LR, progress=False)
    start = make_model().state_dict()
    for key, value in single.state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key])  # the ranks stay in sync
        assert not torch.allclose(value, start[key], atol=1e-3)  # training moved every tensor
        torch.testing.assert_close(ranks[0][key], value, rtol=0, atol=1e-10)
