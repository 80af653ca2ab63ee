"""control.ablation: known answers on a segmenter whose prediction depends on one channel only (scores and the
per-image IoU counts behind them); the cached-feature path of a SegNet agrees bit for bit with the masking hook."""

import numpy as np
import pytest
import torch
from tests.experiments.seg_fixture import calibrated_weights, segmenter
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from poschan.control.ablation import SegEval, ablation_curve, channel_counts, channel_means, random_channels
from poschan.data.scenes import SceneSpec, fixed_scenes, scene_items
from poschan.errors import UserError
from poschan.locate.ranking import ChannelRanking
from poschan.metrics.segmentation import miou_of, pixel_accuracy_of

SIDE = 8


class OneChannel(nn.Module):
    """``body``: channel 0 = the image, channels 1..3 = 1; the head predicts class 1 where channel 0 > 0.5 (logit 0.5
    for class 0): the prediction depends on channel 0 alone. Returns {"out": logits}, as torchvision's models."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(1, 4, 1)
        self.head = nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            self.body.weight.zero_()
            self.body.weight[0, 0] = 1
            self.body.bias.copy_(torch.tensor([0.0, 1, 1, 1]))
            self.head.weight.zero_()
            self.head.weight[1, 0] = 1
            self.head.bias.copy_(torch.tensor([0.5, 0.0]))

    def forward(self, x):
        return {"out": self.head(self.body(x))}


def left_half_data(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Images 1 on the left half, 0 on the right; masks: class 1 on the left half, 0 on the right."""
    images = torch.zeros(n, 1, SIDE, SIDE)
    images[..., : SIDE // 2] = 1
    return images, images[:, 0].long()


# By hand, on an 8×8 image with 32 class-1 pixels (left) and 32 class-0 pixels (right):
# clean: every pixel right, mIoU 1. Channel 0 masked (zero): every pixel predicted 0: IoU(class 0) = 32 / 64 and
# IoU(class 1) = 0 / 32, mIoU 0.25, pixel accuracy 0.5. Channel 0 replaced by 1 (mean mode): every pixel 1, the same.
MASKED_MIOU = 0.25
# Per image, IoU counts = (true positives of class 0, 1; target pixels of class 0, 1; predicted pixels of class 0, 1):
CLEAN_COUNTS = [32, 32, 32, 32, 32, 32]
MASKED_COUNTS = [32, 0, 32, 32, 64, 0]  # every pixel predicted 0


def test_masking_the_one_channel_drops_miou_to_the_hand_value_and_others_do_nothing():
    model = OneChannel().eval()
    ranking = ChannelRanking("body", "flip", {"overall": torch.tensor([3.0, 0.0, 1.0, 2.0])})  # order 0, 3, 2, 1
    curve = ablation_curve(model, "body", ranking, left_half_data(), n=[1, "50%", 4], random_draws=6)
    assert (curve.miou_clean, curve.pixel_accuracy_clean, curve.channels, curve.seeds) == (1.0, 1.0, 4, [0])
    assert [p.n for p in curve.points] == [1, 2, 4]
    for point in curve.points:
        assert point.ranked_channels == [[0, 3, 2, 1][:point.n]]
        assert point.ranked_miou == [MASKED_MIOU] and point.ranked_pixel_accuracy == [0.5]
        assert point.ranked_drop == [1.0 - MASKED_MIOU]
        expected = [MASKED_MIOU if 0 in draw else 1.0 for draw in point.random_channels]
        assert point.random_miou == expected and point.random_drop == [1.0 - e for e in expected]
        assert all(len(set(d)) == point.n for d in point.random_channels) and len(point.random_channels) == 6
        assert [c.tolist() for c in point.ranked_counts] == [[MASKED_COUNTS] * 3]  # one row per image
        for draw, counts in zip(point.random_channels, point.random_counts):
            assert counts.tolist() == [MASKED_COUNTS if 0 in draw else CLEAN_COUNTS] * 3
    assert curve.clean_counts.tolist() == [CLEAN_COUNTS] * 3
    assert miou_of(np.array(MASKED_COUNTS)) == MASKED_MIOU and pixel_accuracy_of(np.array(MASKED_COUNTS)) == 0.5
    drawn = {v for p in curve.points[:2] for v in p.random_miou}
    assert drawn == {1.0, MASKED_MIOU}  # draws with and without channel 0
    others = ablation_curve(model, "body", torch.tensor([1, 2, 3, 0]), left_half_data(), n=[3], random_draws=0)
    assert others.points[0].ranked_miou == [1.0] and others.points[0].ranked_drop == [0.0]  # all but channel 0


def test_mean_mode_fills_the_channel_and_batches_keep_every_image():
    model = OneChannel().eval()
    images, masks = left_half_data(4)
    masks[3, 0, 0] = 255  # one pixel of the last image (second batch) not scored
    assert torch.equal(channel_means(model, "body", images), torch.tensor([0.5, 1, 1, 1]))
    curve = ablation_curve(model, "body", [0, 1, 2, 3], (images, masks), n=[1], mode="mean",
                           means=torch.tensor([1.0, 1, 1, 1]), random_draws=0, batch_size=3)
    # every pixel predicted 1: per image tp (0, 32), target (32, 32), predicted (0, 64); the last image lacks one
    # class-1 pixel (top left)
    assert curve.points[0].ranked_counts[0].tolist() == [[0, 32, 32, 32, 0, 64]] * 3 + [[0, 31, 32, 31, 0, 63]]
    assert curve.clean_counts.tolist() == [CLEAN_COUNTS] * 3 + [[32, 31, 32, 31, 32, 31]]
    assert curve.points[0].ranked_miou == [pytest.approx(MASKED_MIOU, abs=2e-3)] and curve.mode == "mean"
    assert curve.miou_clean == 1.0
    with pytest.raises(UserError, match="needs the per-channel means"):
        ablation_curve(model, "body", [0, 1, 2, 3], (images, masks), n=[1], mode="mean")


def test_per_seed_rankings_give_one_ranked_value_per_seed():
    model = OneChannel().eval()
    ranking = ChannelRanking("body", "flip", {"overall": torch.tensor([0.0, 1, 2, 3])},
                             per_seed={5: {"overall": torch.tensor([9.0, 0, 0, 0])},
                                       2: {"overall": torch.tensor([0.0, 1, 2, 3])}})
    (point,) = ablation_curve(model, "body", ranking, left_half_data(), n=[1], random_draws=0).points
    assert point.ranked_channels == [[0], [3]] and point.ranked_miou == [MASKED_MIOU, 1.0]


def test_datasets_and_loaders_are_read_as_image_mask_pairs():
    model = OneChannel().eval()
    images, masks = left_half_data(5)
    pairs = TensorDataset(images, masks)
    for data in (pairs, DataLoader(pairs, batch_size=2)):
        ev = SegEval(model, "body", data, batch_size=2)
        assert len(ev) == 5 and ev.scores([0]) == {"miou": MASKED_MIOU, "pixel_accuracy": 0.5}


def test_bad_input_is_one_line():
    model = OneChannel().eval()
    with pytest.raises(UserError, match="unknown layer 'bdy'"):
        SegEval(model, "bdy", left_half_data())
    with pytest.raises(UserError, match="class ids up to 2"):
        SegEval(model, "body", (left_half_data()[0], torch.full((3, SIDE, SIDE), 2)))
    with pytest.raises(UserError, match="outside 1..4"):
        ablation_curve(model, "body", [0, 1, 2, 3], left_half_data(), n=[5])
    with pytest.raises(UserError, match="has 3 channels, layer 'body' has 4"):
        ablation_curve(model, "body", ChannelRanking("body", "flip", {"overall": torch.ones(3)}), left_half_data())
    assert channel_counts(["5%", "50%", 3], 64) == [3, 32]  # 5% of 64 is 3: one condition, run once
    assert channel_counts(["1%", "2%", "10%"], 32) == [1, 3]
    assert [d.tolist() for d in random_channels(10, 3, 2)] == [d.tolist() for d in random_channels(10, 3, 2)]
    per_network = [[d.tolist() for d in random_channels(64, 8, 3, seed)] for seed in range(4)]
    assert len({str(draws) for draws in per_network}) == 4  # each network draws its own random channels


class Wrapped(nn.Module):
    """A SegNet seen as any module: the cached-feature fast path does not apply."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def test_cached_features_of_a_segnet_agree_bit_for_bit_with_the_hook_path():
    model = segmenter(calibrated_weights(48))  # a SegNet that predicts every class (tests/experiments/seg_fixture)
    images, masks = fixed_scenes(scene_items("test", limit=300), SceneSpec(side=48), 7, seed=3)
    fast = SegEval(model, "backbone", (images, masks), batch_size=3)
    slow = SegEval(model, "backbone", (images, masks), batch_size=3, fast=False)
    assert fast.features is not None and slow.features is None
    means = torch.rand(32)
    left = torch.zeros(48, 48, dtype=torch.bool)
    left[:, :24] = True
    for channels, mode in (([], "zero"), ([1, 5, 7], "zero"), (list(range(0, 32, 2)), "mean")):
        a = fast.meter(channels, mode=mode, means=means, regions={"left": left})
        b = slow.meter(channels, mode=mode, means=means, regions={"left": left})
        assert all(torch.equal(a.images(k), b.images(k)) for k in a.masks)
    ranking = ChannelRanking("backbone", "flip", {"overall": torch.rand(32, generator=torch.Generator().manual_seed(1))})
    curves = [ablation_curve(m, layer, ranking, (images, masks), n=["10%", "50%"], batch_size=3)
              for m, layer in ((model, "backbone"), (Wrapped(model), "net.backbone"))]
    curves[1].layer = curves[0].layer
    assert curves[0] == curves[1]
    assert np.array_equal(curves[0].clean_counts, curves[1].clean_counts)
    for a, b in zip(curves[0].points, curves[1].points):
        assert all(np.array_equal(x, y) for x, y in zip(a.ranked_counts + a.random_counts,
                                                           b.ranked_counts + b.random_counts))
    assert curves[0].miou_clean != curves[0].points[1].ranked_miou[0]  # masking half the channels changes the answer


def test_several_rankings_by_name_share_the_random_draws():
    model = OneChannel().eval()
    curve = ablation_curve(model, "body", {"first": [0, 1, 2, 3], "last": [1, 2, 3, 0]}, left_half_data(), n=[1, 2],
                           random_draws=3, control_seed=7)
    assert [(p.ranking, p.n) for p in curve.points] == [("first", 1), ("last", 1), ("first", 2), ("last", 2)]
    assert curve.point("first", 1).ranked_miou == [MASKED_MIOU] and curve.point("last", 2).ranked_miou == [1.0]
    for n in (1, 2):
        first, last = curve.point("first", n), curve.point("last", n)
        assert first.random_channels == last.random_channels == [d.tolist() for d in random_channels(4, n, 3, 7)]
        assert first.random_miou == last.random_miou
