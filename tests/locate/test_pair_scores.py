"""Flip pair scores separate a position channel from a chirality channel; top-list overlaps against chance."""

import dataclasses
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import hypergeom
from torch import nn

from poschan.data.scene_pairs import PAIRS, scene_pairs
from poschan.data.scenes import ITEM_SIDE, SceneSpec, scene_items
from poschan.data.segdata import SegData
from poschan.data.sources import ImageSet
from poschan.errors import UserError
from poschan.locate.pair_scores import chirality_summary, pair_scores, top_overlaps
from poschan.locate.segmentation import segmenter_ranking
from poschan.taps import pooled_features

FM_MEAN, FM_STD = 0.2860, 0.3530


class PositionAndChirality(nn.Module):
    """Pooled layer "out": channel 0 = mean of the left half − mean of the right half (position: the sign flips
    when content moves to the other half, content mirrored in place does not change it); channel 1 = the
    energy of diagonal minus anti-diagonal edges, a fixed 2×2 convolution (chirality: the sign flips when the
    content is mirrored, moving it does not change it). Input channels are averaged."""

    def __init__(self, side: int):
        super().__init__()
        self.edges = nn.Conv2d(1, 2, 2, bias=False)
        self.edges.weight.data = torch.tensor([[[[1.0, 0.0], [0.0, -1.0]]], [[[0.0, 1.0], [-1.0, 0.0]]]])
        sign = torch.ones(side, side)
        sign[:, side // 2:] = -1
        self.register_buffer("sign", 2 * sign)
        self.out = nn.Identity()
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        x = x.mean(1, keepdim=True)
        e = torch.relu(self.edges(x))
        return self.out(torch.cat([x * self.sign, F.pad(e[:, :1] - e[:, 1:], (0, 1, 0, 1))], 1))


def framed_items() -> ImageSet:
    """One item per class: a few strokes of random offset and intensity down the main diagonal (strongly chiral:
    their mirrors run down the other diagonal) inside a background frame of 2 px, so an item's edges stay in its
    box (an item mirrored in place has exactly the mirrored edges)."""
    g = torch.Generator().manual_seed(0)
    row, col = torch.arange(24)[:, None], torch.arange(24)
    offsets = torch.randint(-12, 13, (10, 4), generator=g)
    strokes = (col - row == offsets[..., None, None]).float() * (0.5 + torch.rand(10, 4, 1, 1, generator=g) / 2)
    raw = torch.zeros(10, 1, ITEM_SIDE, ITEM_SIDE)
    raw[:, 0, 2:26, 2:26] = strokes.amax(1)
    return ImageSet((raw - FM_MEAN) / FM_STD, torch.arange(10), tuple(f"c{i}" for i in range(10)), (FM_MEAN,),
                    (FM_STD,), "framed", "test")


def test_position_and_chirality_channels_have_the_known_scores():
    side = 64
    pairs = scene_pairs(framed_items(), SceneSpec(side=side, min_items=1, max_items=1, region="left"), 40, seed=0)
    model = PositionAndChirality(side)
    scores = pair_scores(model, "out", pairs, batch_size=16)
    f = pooled_features(model, pairs.images, ["out"])["out"].double()
    twice = 2 * f.abs().mean(0)  # a sign flip of every pooled value
    assert twice[0] > 0.05 and twice[1] > 0.05
    assert set(scores) == set(PAIRS) and all(s.dtype == torch.float64 and s.shape == (2,) for s in scores.values())
    expected = {"canvas": twice, "mirror-in-place": torch.stack([torch.tensor(0.0).double(), twice[1]]),
                "position-only": torch.stack([twice[0], torch.tensor(0.0).double()])}
    for name in PAIRS:
        assert torch.allclose(scores[name], expected[name], rtol=1e-4, atol=1e-6), name


def test_on_real_scenes_position_and_chirality_part_as_expected():
    side = 96
    pairs = scene_pairs(scene_items("rank", None, limit=300), SceneSpec(side=side, max_items=2), 60, seed=1)
    s = pair_scores(PositionAndChirality(side), "out", pairs, batch_size=32)
    position, chirality = (torch.stack([s[name][c] for name in PAIRS]) for c in (0, 1))
    # not exactly 0: overlapping items, and items that straddle the midline or touch the canvas's edge
    assert position[1] < 0.1 * min(position[0], position[2])  # mirror-in-place keeps positions ...
    assert chirality[2] < 0.1 * min(chirality[0], chirality[1])  # ... position-only keeps content


def test_scores_do_not_depend_on_the_batch_and_run_in_eval_mode():
    side = 64
    pairs = scene_pairs(framed_items(), SceneSpec(side=side, max_items=2), 10, seed=3)
    model = PositionAndChirality(side).train()
    one, many = (pair_scores(model, "out", pairs, batch_size=b) for b in (1, 64))
    assert model.training and model.modes and not any(model.modes)
    for name in PAIRS:
        assert torch.allclose(one[name], many[name], rtol=1e-6, atol=1e-9)


def test_images_are_expanded_and_renormalised_for_the_model():
    side = 64
    pairs = scene_pairs(framed_items(), SceneSpec(side=side, max_items=2), 10, seed=4)
    model = PositionAndChirality(side)
    plain = pair_scores(model, "out", pairs)
    # half the std doubles every normalised value; both channels are positively homogeneous of degree 1
    doubled = pair_scores(model, "out", pairs, in_chans=3, input_norm=((FM_MEAN,) * 3, (FM_STD / 2,) * 3))
    for name in PAIRS:
        assert torch.allclose(doubled[name], 2 * plain[name], rtol=1e-4, atol=1e-6), name


def test_bad_batch_size_is_a_user_error():
    pairs = scene_pairs(framed_items(), SceneSpec(side=64), 2, seed=0)
    with pytest.raises(UserError, match="batch_size must be >= 1"):
        pair_scores(PositionAndChirality(64), "out", pairs, batch_size=0)


SCORES = {"canvas": torch.tensor([6.0, 5, 4, 3, 2, 1]), "mirror-in-place": torch.tensor([6.0, 5, 1, 2, 3, 4]),
          "position-only": torch.tensor([1.0, 2, 3, 4, 5, 6])}


def test_top_overlaps_count_chance_and_hypergeometric_p_values():
    rows = top_overlaps(SCORES, 3)  # tops {0, 1, 2}, {0, 1, 5}, {5, 4, 3} of 6 channels
    assert [(r["a"], r["b"], r["overlap"]) for r in rows] == [
        ("canvas", "mirror-in-place", 2), ("canvas", "position-only", 0), ("mirror-in-place", "position-only", 1)]
    assert all(r["n"] == 3 and r["channels"] == 6 and r["chance"] == 1.5 for r in rows)
    # P(X >= k), X the overlap of two random 3-sets of 6: P(X = j) = C(3, j) C(3, 3 − j) / C(6, 3) = (1, 9, 9, 1) / 20
    by_hand = [Fraction(10, 20), Fraction(20, 20), Fraction(19, 20)]
    for row, p in zip(rows, by_hand):
        assert row["p_value"] == pytest.approx(float(p), abs=1e-12)
        assert row["p_value"] == pytest.approx(float(hypergeom.sf(row["overlap"] - 1, 6, 3, 3)), abs=1e-12)


def test_top_overlaps_chance_is_n_squared_over_channels():
    scores = {k: torch.rand(40, generator=torch.Generator().manual_seed(i)) for i, k in enumerate(PAIRS)}
    assert {r["chance"] for r in top_overlaps(scores, 8)} == {8 * 8 / 40}
    assert {r["overlap"] for r in top_overlaps(scores, 40)} == {40}


@pytest.mark.parametrize(("scores", "n", "message"), [
    (SCORES, 0, r"top n must be in 1\.\.6"),
    (SCORES, 7, r"top n must be in 1\.\.6"),
    ({"canvas": torch.zeros(6), "position-only": torch.zeros(5)}, 2, r"same layer, got sizes \[5, 6\]"),
])
def test_top_overlaps_bad_input_is_a_user_error(scores, n, message):
    with pytest.raises(UserError, match=message):
        top_overlaps(scores, n)


def test_chirality_summary_canvas_is_the_segmenter_flip_ranking_of_its_seed_and_region():
    side = 64
    data = SegData("scenes", SceneSpec(side=side, max_items=2))
    model = PositionAndChirality(side)
    summary = chirality_summary(model, "out", data, count=12, ns=(1, 2), seed=2, region="left")
    assert set(summary["scores"]) == set(PAIRS)
    assert [(r["n"], r["a"], r["b"]) for r in summary["overlaps"]] == [
        (n, a, b) for n in (1, 2) for a, b in (PAIRS[:2], PAIRS[::2], PAIRS[1:])]
    ranking = segmenter_ranking(model, "out", data, "flip", count=12, seeds=(2,), region="left")
    assert torch.allclose(summary["scores"]["canvas"], ranking.scores["overall"], rtol=1e-9, atol=1e-12)
    other = chirality_summary(model, "out", data, count=12, ns=(1,), seed=2)  # items anywhere
    assert not torch.equal(other["scores"]["canvas"], summary["scores"]["canvas"])


def test_chirality_summary_needs_scenes():
    data = dataclasses.replace(SegData("scenes", SceneSpec(side=64)), source="voc:/nowhere")
    with pytest.raises(UserError, match="need scenes"):
        chirality_summary(PositionAndChirality(64), "out", data, count=4, ns=(1,))
