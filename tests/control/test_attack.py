"""control.attack.region_attack: known answers on a segmenter whose left half is read from channel 0 and right half
from channel 1, against both controls and masked PGD; the statistics of compare_regions' rows on known counts."""

import numpy as np
import pytest
import torch
from torch import nn

from poschan.control.ablation import SegEval, random_channels
from poschan.control.attack import AttackArm, _clean, _comparisons, _row, region_attack
from poschan.errors import UserError
from poschan.locate.ranking import ChannelRanking

SIDE = 8


class LeftRight(nn.Module):
    """``body``: channels 0 and 1 = the image, channel 2 = 1. Class 1 wins where the image is > 0.5, read from
    channel 0 on the left half of the image and from channel 1 on the right half (class 0: logit 0.5)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(1, 3, 1)
        with torch.no_grad():
            self.body.weight.copy_(torch.tensor([1.0, 1.0, 0.0]).view(3, 1, 1, 1))
            self.body.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))

    def forward(self, x):
        f = self.body(x)
        left = torch.arange(f.shape[-1], device=f.device) < f.shape[-1] // 2
        on = torch.where(left, f[:, 0], f[:, 1])
        return {"out": torch.stack([torch.full_like(on, 0.5), on], dim=1)}


def data(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 (image 1) on the top half, class 0 (image 0) on the bottom half."""
    images = torch.zeros(n, 1, SIDE, SIDE)
    images[:, :, : SIDE // 2] = 1
    return images, images[:, 0].long()


RANKING = ChannelRanking("body", "flip", {"left": torch.tensor([1.0, 0.0, 0.0]), "right": torch.tensor([0.0, 1.0, 0.0]),
                                          "overall": torch.tensor([0.0, 0.0, 1.0])})
# By hand: a half region holds 16 class-1 pixels (top) and 16 class-0 pixels (bottom). Its channel masked, every
# pixel of the half is predicted 0: IoU(class 0) = 16 / 32, IoU(class 1) = 0 / 16, mIoU 0.25; the other half keeps
# mIoU 1. PGD with eps 0.6 (in the images' units) moves every pixel of the region across the 0.5 threshold: mIoU 0.
BROKEN = 0.25
# Per image, the IoU counts of a half (true positives of class 0, 1; target pixels of class 0, 1; predicted pixels
# of class 0, 1):
WHOLE = [16, 16, 16, 16, 16, 16]
BROKEN_COUNTS = [16, 0, 16, 16, 32, 0]  # every pixel of the half predicted 0


def test_masking_a_regions_channel_breaks_that_region_only():
    result = region_attack(LeftRight(), "body", RANKING, data(), region="left", n=1, random_draws=5)
    assert [(a.method, a.n) for a in result.arms] == [("flip", 1), ("flip-opposite", 1), ("random", 1)]
    ranked, control, random = result.arms
    assert ranked.channels == [[0]] and ranked.clean == (1.0, 1.0) and ranked.after == [(BROKEN, 1.0)]
    assert ranked.drop_in == [1 - BROKEN] and ranked.drop_out == [0.0]
    assert control.channels == [[1]] and control.after == [(1.0, BROKEN)] and control.drop_in == [0.0]
    assert {k: v.tolist() for k, v in ranked.clean_counts.items()} == {"in": [WHOLE] * 2, "out": [WHOLE] * 2}
    assert [{k: v.tolist() for k, v in a.items()} for a in ranked.after_counts] == [
        {"in": [BROKEN_COUNTS] * 2, "out": [WHOLE] * 2}]
    assert control.after_counts[0]["out"].tolist() == [BROKEN_COUNTS] * 2
    expected = {0: (BROKEN, 1.0), 1: (1.0, BROKEN), 2: (1.0, 1.0)}
    assert random.channels == [d.tolist() for d in random_channels(3, 1, 5)]
    assert random.after == [expected[d[0]] for d in random.channels]
    right = region_attack(LeftRight(), "body", RANKING, data(), region="right", n=1, random_draws=0)
    assert [(a.method, a.channels, a.after) for a in right.arms] == [("flip", [[1]], [(BROKEN, 1.0)]),
                                                                    ("flip-opposite", [[0]], [(1.0, BROKEN)])]


def test_per_seed_channel_sets_and_a_mask_region_without_opposite():
    per_seed = ChannelRanking("body", "shift", RANKING.scores, per_seed={
        0: {"left": torch.tensor([1.0, 0, 0]), "right": torch.tensor([0.0, 1, 0]), "overall": torch.ones(3)},
        1: {"left": torch.tensor([0.0, 0, 1]), "right": torch.tensor([0.0, 1, 0]), "overall": torch.ones(3)}})
    mask = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    mask[:, : SIDE // 2] = True  # the left half, as a mask: no opposite control
    for region in ("left", mask):
        result = region_attack(LeftRight(), "body", {"shift": per_seed}, data(), region=region, n=1, random_draws=0,
                               key="left")
        shift = result.arm("shift", 1)
        assert shift.channels == [[0], [2]] and shift.after == [(BROKEN, 1.0), (1.0, 1.0)]
        assert (result.arm("shift-opposite", 1) is None) == (region is mask)


def test_masked_pgd_breaks_the_region_and_eps_zero_changes_nothing():
    ev = SegEval(LeftRight(), "body", data(3), batch_size=2)
    result = region_attack(ev.model, "body", RANKING, ev, region="left", n=1, methods=["pgd"], pgd_eps=0.6,
                           pgd_steps=5, pgd_seeds=(0, 1), examples=2)
    (pgd,) = result.arms
    assert (pgd.method, pgd.n, pgd.channels, pgd.clean) == ("pgd", None, [], (1.0, 1.0))
    assert pgd.after == [(0.0, 1.0), (0.0, 1.0)]
    # every pixel of the left half flipped: tp 0, 16 target and 16 predicted pixels per class; the clean on 3 images
    assert [a["in"].tolist() for a in pgd.after_counts] == [[[0, 0, 16, 16, 16, 16]] * 3] * 2
    assert pgd.clean_counts["in"].tolist() == [WHOLE] * 3
    assert torch.equal(pgd.examples[:, :, : SIDE // 2], 1 - data(2)[1][:, :, : SIDE // 2])  # flipped inside
    assert torch.equal(result.clean_examples, data(2)[1])
    still = region_attack(ev.model, "body", RANKING, ev, region="left", n=1, methods=["pgd"], pgd_eps=0.0)
    assert still.arms[0].after == [(1.0, 1.0)]
    for std, after in ((0.5, (0.0, 1.0)), (1.0, (1.0, 1.0))):  # a raw budget of 0.3 is 0.3 / std normalised units
        raw = region_attack(ev.model, "body", RANKING, ev, region="left", n=1, methods=["pgd"], pgd_eps=0.3,
                            mean=[0.0], std=[std])
        assert raw.arms[0].after == [after]


def test_region_miou_averages_over_the_classes_of_the_regions_target():
    # The top half holds class 1 only (the bottom half class 0 only). Channel 0 masked, the left half of the image is
    # predicted 0: inside, class 1 keeps IoU 16 / 32 and class 0, absent from the region's target, is left out of the
    # mean (over target or prediction the mIoU would be (0.5 + 0) / 2); outside, every pixel stays right.
    result = region_attack(LeftRight(), "body", RANKING, data(), region="top", n=1, methods=["flip"], key="left")
    (ranked,) = result.arms
    assert ranked.channels == [[0]] and ranked.clean == (1.0, 1.0) and ranked.after == [(0.5, 1.0)]
    assert ranked.after_counts[0]["in"].tolist() == [[0, 16, 0, 32, 16, 16]] * 2
    assert ranked.after_counts[0]["out"].tolist() == [[32, 0, 32, 0, 32, 0]] * 2


def test_bad_input():
    with pytest.raises(UserError, match="unknown attack methods \\['shift'\\]"):
        region_attack(LeftRight(), "body", RANKING, data(), methods=["shift"])
    with pytest.raises(UserError, match="pgd needs pgd_eps"):
        region_attack(LeftRight(), "body", RANKING, data(), methods=["pgd"])
    with pytest.raises(UserError, match="cell:9"):
        region_attack(LeftRight(), "body", RANKING, data(), region="cell:9")


def test_attack_rows_score_the_classes_of_each_regions_target():
    """A region whose target holds class 1 only (K = 3; outside: class 0 only), two images. The ranked channels
    make one pixel of image 0 inside predicted 2, a class absent from the region's target: the region's mIoU is
    IoU(1) = 7 / 8 (over target or prediction it would be (7 / 8 + 0) / 2); the random channels change nothing."""
    inside, outside = [0, 4, 0, 0, 4, 0, 0, 4, 0], [4, 0, 0, 4, 0, 0, 4, 0, 0]  # tp; target; predicted pixels
    clean = {"in": np.array([inside] * 2, dtype=np.float64), "out": np.array([outside] * 2, dtype=np.float64)}
    stray = {"in": np.array([[0, 3, 0, 0, 4, 0, 0, 3, 1], inside], dtype=np.float64), "out": clean["out"]}
    ranked = AttackArm("left", "flip", 1, (1.0, 1.0), [(7 / 8, 1.0)], [[0]], None, clean, [stray])
    random = AttackArm("left", "random", 1, (1.0, 1.0), [(1.0, 1.0)], [[1]], None, clean, [clean])
    row = _row([ranked], _clean([ranked]))
    assert row["miou_in_clean"]["mean"] == row["miou_out_clean"]["mean"] == 1.0
    keys = ("miou_in", "miou_out", "drop_in", "drop_out", "selectivity", "pixel_accuracy_in", "pixel_accuracy_drop_in",
            "fw_iou_selectivity")
    assert [v for key in keys for v in row[key]["values"]] == pytest.approx([7 / 8, 1, 1 / 8, 0, 1 / 8, 7 / 8, 1 / 8,
                                                                           1 / 8])
    assert row["drop_ratio"]["estimable"] is False  # no drop outside
    versus = _comparisons([[ranked], [random]])
    assert [c["name"] for c in versus] == ["left_n1_flip_vs_random_drop_in", "left_n1_flip_vs_random_selectivity"]
    assert [v for c in versus for v in c["values"]] == pytest.approx([1 / 8, 1 / 8])

    # two networks: units are the networks, each one's ranking seeds pooled (mean counts): the second network's
    # two seeds, one with the stray pixel and one without, average to 7.5 of 8 true positives inside
    second = AttackArm("left", "flip", 1, (1.0, 1.0), [(7 / 8, 1.0), (1.0, 1.0)], [[0], [2]], None, clean,
                       [stray, clean])
    row = _row([ranked, second], _clean([ranked, second]))
    assert row["miou_in"]["values"] == pytest.approx([7 / 8, 7.5 / 8])  # IoU(1) = tp / (target + pred − tp)
    assert "trained networks" in row["miou_in"]["method"] and "one trained model" not in row["miou_in"]["method"]
    assert row["drop_in"]["values"] == pytest.approx([1 - v for v in row["miou_in"]["values"]])
    assert row["channels"] == [[[0]], [[0], [2]]]
    both = _comparisons([[ranked, second], [random, random]])
    assert [v for c in both for v in c["values"]] == pytest.approx([1 / 8, 1 - row["miou_in"]["values"][1]] * 2)
    assert "trained network i paired with trained network i" in both[0]["method"]
