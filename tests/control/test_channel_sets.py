"""Known answers for the reliance controls: each channel's own knock-out cost, magnitude-matched random channels."""

import pytest
import torch
from torch import nn

from poschan.control.ablation import SegEval
from poschan.control.channel_sets import knockout_costs, matched_random
from poschan.errors import UserError


class OneChannelSegmenter(nn.Module):
    """Layer ``features`` holds 4 channels; only channel 2 decides the prediction (class 1 where it is bright)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(1, 4, 1, bias=False)
        self.head = nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            self.features.weight.fill_(1.0)
            self.head.weight.zero_()
            self.head.weight[1, 2] = 1.0
            self.head.bias.copy_(torch.tensor([0.5, 0.0]))

    def forward(self, x):
        return self.head(torch.relu(self.features(x)))


def test_knockout_costs_only_for_the_channel_the_prediction_reads():
    images = torch.zeros(6, 1, 8, 8)
    images[:, :, :, :4] = 1.0
    masks = (images[:, 0] > 0.5).long()
    ev = SegEval(OneChannelSegmenter(), "features", (images, masks), batch_size=4)
    costs = knockout_costs(ev)
    assert costs[2].item() == pytest.approx(1.0 - 0.25)  # perfect (mIoU 1) -> all background: IoU 0.5 and 0
    assert costs[[0, 1, 3]].tolist() == [0.0, 0.0, 0.0]


def test_matched_random_draws_near_the_ranked_channels():
    magnitude = torch.arange(40, dtype=torch.float64)
    spread = torch.arange(40, dtype=torch.float64)
    ranked = torch.tensor([37, 38, 39])
    sets = matched_random(ranked, magnitude, spread, draws=20, seed=0)
    assert len(sets) == 20 and all(len(s) == 3 and len(set(s.tolist())) == 3 for s in sets)
    chosen = torch.cat(sets)
    assert not set(chosen.tolist()) & {37, 38, 39}
    assert chosen.min() >= 31  # each pick among the 3 nearest free channels: never further than 6 below
    assert len({tuple(s.tolist()) for s in sets}) > 1  # random, not one fixed set
    again = matched_random(ranked, magnitude, spread, draws=20, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(sets, again))


def test_matched_random_refuses_more_than_half_the_channels():
    with pytest.raises(UserError, match="N <= 2"):
        matched_random(torch.tensor([0, 1, 2]), torch.rand(5), torch.rand(5), draws=1, seed=0)
