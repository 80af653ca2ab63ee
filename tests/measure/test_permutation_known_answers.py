"""The channel-permutation controls against known answers: ChannelPermute, taps.permute_channels, gap-study test-only.

Inputs are coded so that every value names its sample and its channel (row i, channel j holds 100 i + j), so the
permutation a row went through can be read off the output. A uniformly random permutation of C channels gives
each of the C! orders with probability 1 / C!; a per-sample permutation draws an independent one per row.
"""

import itertools

import pytest
import torch
from scipy.stats import chisquare
from torch import Tensor, nn

from poschan.experiments.gap_study import Config
from poschan.measure.gap_study import Variant, evaluators
from poschan.models.heads import ChannelPermute
from poschan.taps import permute_channels

C = 4  # 4! = 24 orders: enough draws per order for a chi-square test in a few milliseconds
ALL_ORDERS = list(itertools.permutations(range(C)))


def coded(b: int, c: int = C) -> Tensor:
    return torch.arange(c, dtype=torch.float32) + 100 * torch.arange(b, dtype=torch.float32)[:, None]


def row_orders(out: Tensor) -> list[tuple[int, ...]]:
    """The order each row of a permuted ``coded`` batch went through; fails unless every row is a permutation
    of its own values."""
    orders = (out - 100 * torch.arange(out.shape[0])[:, None]).long()
    assert torch.equal(orders.sort(dim=1).values, torch.arange(out.shape[1]).expand_as(orders))
    return [tuple(o) for o in orders.tolist()]


def shared_order(out: Tensor) -> tuple[int, ...]:
    """The one order of a batch permuted per batch; fails if rows went through different orders."""
    orders = row_orders(out)
    assert len(set(orders)) == 1, f"rows of one batch went through {len(set(orders))} different orders"
    return orders[0]


def assert_uniform(orders: list[tuple[int, ...]]) -> None:
    """Chi-square test of the draws against the uniform distribution over all C! orders."""
    counts = [orders.count(o) for o in ALL_ORDERS]
    assert sum(counts) == len(orders)
    p = chisquare(counts).pvalue
    assert p > 1e-3, f"orders are not uniform over the {len(ALL_ORDERS)} permutations (p = {p:.2g}): {counts}"


def assert_independent_rows(orders: list[tuple[int, ...]]) -> None:
    """Neighbouring rows share their order about 1 / C! of the time (binomial: mean n / 24, sd about 3 % of n)."""
    repeats = sum(a == b for a, b in zip(orders, orders[1:]))
    assert repeats < 1.5 * (len(orders) - 1) / len(ALL_ORDERS), f"{repeats} neighbouring rows share their order"


def test_per_batch_permutation_is_shared_by_the_batch_and_uniform_afresh_each_call():
    torch.manual_seed(0)
    permute = ChannelPermute().eval()
    assert_uniform([shared_order(permute(coded(3))) for _ in range(1200)])


@pytest.mark.parametrize("spatial", [(), (2, 3)])
def test_per_sample_permutations_are_independent_uniform_draws(spatial):
    torch.manual_seed(0)
    x = coded(2400).view(2400, C, *[1] * len(spatial)).expand(-1, -1, *spatial)
    out = ChannelPermute(per_sample=True)(x)
    if spatial:
        assert torch.equal(out, out[..., :1, :1].expand_as(out))  # whole channels move
        out = out[..., 0, 0]
    orders = row_orders(out)
    assert_uniform(orders)
    assert_independent_rows(orders)


class Recorder(nn.Module):
    """Identity that keeps what it receives (after any forward pre-hook has edited it)."""

    def __init__(self):
        super().__init__()
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return x


def test_permute_input_per_batch_and_per_sample():
    net = nn.Sequential(nn.Identity(), Recorder())
    torch.manual_seed(0)
    with permute_channels(net, "1", where="input"):
        for _ in range(1200):
            net(coded(3))
    assert_uniform([shared_order(x) for x in net[1].seen])
    with permute_channels(net, "1", per_sample=True, where="input"):
        net(coded(2400))
    orders = row_orders(net[1].seen[-1])
    assert_uniform(orders)
    assert_independent_rows(orders)
    net(coded(3))
    assert torch.equal(net[1].seen[-1], coded(3))  # the hook is gone after the block


class CodeNet(nn.Module):
    """Codes (B, C) -> a constant (B, C, 2, 2) map through stage ``backbone.body`` -> pooled -> ``head.fc``;
    both recorders keep what they receive, so the permutation applied before each can be read off."""

    stages = {"stage3": "body"}

    def __init__(self):
        super().__init__()
        self.backbone, self.head = nn.Module(), nn.Module()
        self.backbone.body, self.head.fc = Recorder(), Recorder()

    def forward(self, x: Tensor) -> Tensor:
        fmap = self.backbone.body(x[:, :, None, None].expand(-1, -1, 2, 2))
        return self.head.fc(fmap.mean(dim=(2, 3)))


class CodedBatches:
    """``batches`` coded batches of ``size`` rows per epoch, labels 0."""

    def __init__(self, batches: int, size: int):
        self.batches, self.size = batches, size

    def __len__(self) -> int:
        return self.batches

    def epoch(self, epoch, device=None):
        for _ in range(self.batches):
            yield coded(self.size), torch.zeros(self.size, dtype=torch.long)


def test_gap_study_test_only_permutes_per_batch_with_fresh_uniform_orders():
    scorers = evaluators(Config(stage="stage3"), Variant("location", "gap-fc", "zeros", 3))
    assert set(scorers) == {"accuracy", "test-only@pooled", "test-only@stage3"}
    for name, recorder in (("test-only@pooled", lambda m: m.head.fc), ("test-only@stage3", lambda m: m.backbone.body)):
        net = CodeNet()
        torch.manual_seed(0)
        scorers[name](net, CodedBatches(600, 3), 2, torch.device("cpu"))
        seen = recorder(net).seen
        assert len(seen) == 1200
        if seen[0].dim() == 4:
            assert all(torch.equal(x, x[..., :1, :1].expand_as(x)) for x in seen)  # whole channels move
            seen = [x[..., 0, 0] for x in seen]
        assert_uniform([shared_order(x) for x in seen])
    net = CodeNet()
    scorers["accuracy"](net, CodedBatches(2, 3), 1, torch.device("cpu"))
    assert all(torch.equal(x, coded(3)) for x in net.head.fc.seen)  # the variant's own score: no permutation
