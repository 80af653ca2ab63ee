"""poschan.ranking: the streaming statistics, and the three rankings on models with planted answers."""

import math

import pytest
import torch
from torch import Tensor, nn

from poschan.data.sources import ImageSet
from poschan.errors import UserError
from poschan.locate.designs import RankSpec, _same_class_partners, accumulate
from poschan.locate.moments import CoMoments, Moments, dimension_counts, region_cells, standardised_difference
from poschan.locate.ranking import ranking_order, top_overlap

RIGHT = [2, 7]  # channels = the content's x-coordinate (fire more when the content is on the right)
LEFT = [9]  # channel = 1 − x-coordinate (fires more when the content is on the left)
POSITION = RIGHT + LEFT
CLASS = [0, 5]  # channels = the content's mean intensity, set by its class
CHANNELS = 10


def toy_images(n: int = 120, classes: int = 4, side: int = 8, seed: int = 0) -> ImageSet:
    """Positive textures whose brightness is set by the class (class k: (k + 1) × texture in [0.5, 1.5])."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    texture = 0.5 + torch.rand(n, 1, side, side, generator=g)
    return ImageSet(texture * (labels + 1).view(-1, 1, 1, 1), labels, tuple("abcdefghij"[:classes]), (0.0,), (1.0,),
                    "toy", "train")


class PlantedNet(nn.Module):
    """A (B, 10, 1, 1) map of a canvas with a positive item on a zero background:
    ch 2, 7 = x-coordinate of the intensity centroid in [0, 1] (×1, ×1.5); ch 9 = 1 − x; ch 0, 5 = mean intensity
    (×2.5, ×4: the class, up to the texture; scales comparable with the coordinates'); ch 4, 8 = 0.01 × mean
    squared intensity; ch 1 = 1; ch 3, 6 = 0."""

    def forward(self, x: Tensor) -> Tensor:
        w = x.abs().sum(1)  # (B, H, W)
        cols = (torch.arange(x.shape[-1], dtype=x.dtype) + 0.5) / x.shape[-1]
        cx = (w * cols).sum((1, 2)) / w.sum((1, 2))
        mean, square = x.mean((1, 2, 3)), 0.01 * (x ** 2).mean((1, 2, 3))
        one, zero = torch.ones_like(cx), torch.zeros_like(cx)
        out = torch.stack([2.5 * mean, one, cx, zero, square, 4 * mean, zero, 1.5 * cx, square, 1 - cx], 1)
        return out[:, :, None, None]


class Wrap(nn.Module):
    """Puts a model under the name "net" (so layers are addressed as in a PoolNet-like container)."""

    def __init__(self, net: nn.Module, flip: bool = False):
        super().__init__()
        self.net, self.flip = net, flip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flip(-1) if self.flip else x)


def conv_net(symmetric: bool = False) -> nn.Module:
    """Random stride-1 zero-padded convs; ``symmetric``: every kernel mirror-symmetric in both axes."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU())
    if symmetric:
        for conv in (net[0], net[2]):
            w = conv.weight.data
            conv.weight.data = (w + w.flip(-1) + w.flip(-2) + w.flip(-1, -2)) / 4
    return Wrap(net)


def strided_net() -> nn.Module:
    torch.manual_seed(1)
    return Wrap(nn.Sequential(nn.Conv2d(1, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(6, 7, 3, padding=(0, 1))))


def scores(model: nn.Module, layer: str, method: str, images: ImageSet | None = None, **kw):
    spec_keys = {"grid", "flip_input", "semantic_pairs"}
    spec = RankSpec(method, **{k: v for k, v in kw.items() if k in spec_keys})
    tally = accumulate(model, layer, images or toy_images(), spec,
                       **{k: v for k, v in kw.items() if k not in spec_keys})
    return tally.real.scores(), tally.null.scores(), tally


def top(s: Tensor, n: int) -> set[int]:
    return set(ranking_order(s)[:n].tolist())


# ---- statistics ----------------------------------------------------------------------------------------------

def test_merged_moments_equal_direct_ones():
    x = torch.randn(50, 4, dtype=torch.float64) * 3 + 100
    merged = Moments.zero(4)
    for chunk in x.split([1, 20, 0, 29]):
        merged = merged + Moments.of(chunk)
    assert merged.n == 50
    assert torch.allclose(merged.mean, x.mean(0), rtol=0, atol=1e-12)
    assert torch.allclose(merged.variance, x.var(0, unbiased=False), rtol=1e-12)


def test_merged_comoments_give_the_joint_mean_covariance_of_esser():
    a, b = torch.randn(40, 3, dtype=torch.float64), torch.randn(40, 3, dtype=torch.float64) + 2
    merged = CoMoments.of(a[:13], b[:13]) + CoMoments.of(a[13:], b[13:])
    mu = (a.mean(0) + b.mean(0)) / 2
    assert torch.allclose(merged.joint_mean_covariance(), ((a - mu) * (b - mu)).mean(0), atol=1e-12)


def test_standardised_difference_is_cohens_d():
    g, r = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[5.0], [7.0]])
    pooled = math.sqrt((2.0 + 2.0) / (3 + 2 - 2))  # squared deviations: 2 (group) and 2 (rest)
    d = standardised_difference(Moments.of(g), Moments.of(r))
    assert d.item() == pytest.approx((2 - 6) / pooled)


def test_dimension_counts_softmax_with_residual_one():
    zero = dimension_counts(0.0, 0.0, 100)  # e^0 / (2 + e) = 0.2119...
    assert (zero["position"], zero["semantic"], zero["residual"]) == (21, 21, 58)
    assert zero["percent"]["residual"] == 58.0
    high = dimension_counts(3.0, -1.0, 320)
    assert high["position"] + high["semantic"] + high["residual"] == 320 and high["position"] > 0.8 * 320


def test_regions_of_3x3_and_4x4_grids():
    three = {k: v.nonzero().flatten().tolist() for k, v in region_cells(3).items()}
    assert three == {"left": [0, 3, 6], "right": [2, 5, 8], "top": [0, 1, 2], "bottom": [6, 7, 8], "center": [4],
                     "q1": [0], "q2": [2], "q3": [6], "q4": [8]}
    four = region_cells(4)
    assert four["center"].nonzero().flatten().tolist() == [5, 6, 9, 10]
    assert four["q4"].nonzero().flatten().tolist() == [10, 11, 14, 15]
    assert not region_cells(2)["center"].any()


def test_ranking_order_is_descending_and_keeps_ties_in_channel_order():
    assert ranking_order(torch.tensor([0.0, 2.0, 0.0, -1.0, 2.0])).tolist() == [1, 4, 0, 2, 3]


def test_ranking_order_and_top_overlap_match_a_plain_python_sort():
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(-5, 6, (40,), generator=g).double() for _ in range(2))  # many ties
    by_hand = {name: sorted(range(40), key=lambda c: (-s[c].item(), c)) for name, s in (("a", a), ("b", b))}
    assert ranking_order(a).tolist() == by_hand["a"]
    for n in (1, 5, 40):
        assert top_overlap(a, b, n) == len(set(by_hand["a"][:n]) & set(by_hand["b"][:n]))
    assert top_overlap(a, -a, 5) == 0 and top_overlap(a, a, 5) == 5


def test_class_partners_share_the_class_and_differ_from_the_image():
    labels = torch.tensor([0, 1, 0, 2, 1, 0])  # class 2 has one member: its partner is itself
    order = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    partners = _same_class_partners(labels, order, torch.Generator().manual_seed(1))
    assert torch.equal(labels[partners], labels[order])
    alone = order == 3
    assert torch.equal(partners[alone], order[alone]) and (partners[~alone] != order[~alone]).all()


# ---- planted answers -----------------------------------------------------------------------------------------

def test_flip_ranks_the_coordinate_channels_on_top_with_the_documented_sign():
    real, null, _ = scores(Wrap(PlantedNet()), "net", "flip")
    assert top(real["overall"], 3) == set(POSITION)
    # content on the left: x-coordinate channels fire less than on the mirror -> "right" channels, 1 − x -> "left"
    assert top(real["right"], 2) == set(RIGHT) and top(real["left"], 1) == set(LEFT)
    assert real["overall"][CLASS].abs().max() < 1e-6
    assert (real["top"][POSITION].abs() < 1e-6).all()  # a vertical flip does not move the x-coordinate
    assert (null["left"][POSITION].abs() < real["left"][POSITION].abs() / 3).all()  # random signs: noise level


def test_shift_ranks_the_coordinate_channels_on_top_overall_and_by_side():
    real, null, tally = scores(Wrap(PlantedNet()), "net", "shift")
    assert top(real["overall"], 3) == set(POSITION)
    assert top(real["right"], 2) == set(RIGHT) and top(real["left"], 1) == set(LEFT)
    assert top(real["cell:2"], 2) == set(RIGHT)  # row 0, rightmost column
    assert real["overall"][CLASS].abs().max() < 1e-3
    assert null["overall"][POSITION].max() < real["overall"][POSITION].min() / 3
    assert len(real) == 1 + 9 + 9 and tally.real.cell_scores().shape == (9, CHANNELS)


@pytest.mark.parametrize("pairs", ["item", "class"])
def test_dimest_ranks_coordinate_channels_for_position_and_class_channels_for_semantics(pairs):
    real, null, tally = scores(Wrap(PlantedNet()), "net", "dimest", semantic_pairs=pairs)
    assert top(real["position"], 3) == set(POSITION)
    assert top(real["semantic"], 2) == set(CLASS)
    # semantic pairs sit in different cells: their coordinates covary little (slightly negatively)
    assert real["semantic"][POSITION].max() < real["semantic"][CLASS].min() / 3
    dims, dims_null = tally.real.dims(), tally.null.dims()
    assert min(dims["factor_scores"].values()) > 0.3 and max(map(abs, dims_null["factor_scores"].values())) < 0.1
    assert dims["position"] >= dims_null["position"] and sum(dims[k] for k in ("position", "semantic",
                                                                                   "residual")) == CHANNELS


@pytest.mark.parametrize("flip_input", ["canvas", "image"])
def test_flip_equivariant_channel_symmetric_model_scores_zero(flip_input):
    for symmetric, bound in ((True, 1e-6), (False, None)):
        real, _, _ = scores(conv_net(symmetric), "net.3", "flip", flip_input=flip_input)
        biggest = max(float(s.abs().max()) for s in real.values())
        if bound is None:
            assert biggest > 1e-3  # the same convs with plain random kernels do see the flip
        else:
            assert biggest < bound


def test_mirrored_model_swaps_left_and_right():
    """Mirrored model: M'(x) = M(hflip(x)). Then f'(x) − f'(hflip x) = −(f(x) − f(hflip x)) for every input, so
    the `left` scores of M' are the `right` scores of M and vice versa (and `overall` is unchanged)."""
    plain, _, _ = scores(strided_net(), "net.2", "flip")
    mirrored, _, _ = scores(Wrap(strided_net().net, flip=True), "net.2", "flip")
    assert plain["left"].abs().max() > 1e-3
    for a, b in (("left", "right"), ("right", "left"), ("overall", "overall")):
        assert torch.allclose(mirrored[a], plain[b], atol=1e-6), a
        assert torch.equal(ranking_order(mirrored[a]), ranking_order(plain[b])), a


@pytest.mark.parametrize("method, extra", [("flip", {}), ("flip", {"flip_input": "image"}), ("shift", {}),
                                           ("dimest", {"semantic_pairs": "class"})])
def test_scores_do_not_depend_on_the_batch_size(method, extra):
    images = toy_images(n=20)
    runs = [scores(strided_net(), "net.2", method, images, batch_size=b, **extra) for b in (1, 7, 64)]
    for real, null, _ in runs[1:]:
        for key in real:
            assert torch.allclose(real[key], runs[0][0][key], rtol=1e-5, atol=1e-5), key
            assert torch.allclose(null[key], runs[0][1][key], rtol=1e-5, atol=1e-5), key


def test_bad_input():
    net, images = Wrap(PlantedNet()), toy_images()
    with pytest.raises(UserError, match="at least 3 images"):
        accumulate(net, "net", images.subset(2), RankSpec())
    with pytest.raises(UserError, match="batch_size"):
        accumulate(net, "net", images, RankSpec(), batch_size=0)
    with pytest.raises(UserError, match="unknown method 'rank'"):
        accumulate(net, "net", images, RankSpec("rank"))
    with pytest.raises(UserError, match="2×2"):
        accumulate(net, "net", images, RankSpec("shift", grid=1))
    with pytest.raises(UserError, match="background"):
        accumulate(net, "net", images, RankSpec(background="noise"))
