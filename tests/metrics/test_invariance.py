"""Shift-invariance metrics on models with analytic answers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poschan.data.shift_pairs import ShiftPairTransform
from poschan.errors import UserError
from poschan.metrics.invariance import (
    circular_consistency,
    consistency,
    diagonal_shift_accuracy,
    fidelity,
    invariance_metrics,
    invariance_outcomes,
    latent_distance,
    latent_ratio,
    summarize_outcomes,
)
from poschan.models.heads import GapFcHead
from poschan.models.poolnet import PoolNet
from poschan.models.registry import build_model

SHIFT = ShiftPairTransform(crop=16, canvas=20)  # offsets 0..4; 8 px items sit at 6 - offset, always fully in view


class Constant(nn.Module):
    def __init__(self, k: int, classes: int = 10):
        super().__init__()
        self.logits = torch.zeros(classes)
        self.logits[k] = 1

    def forward(self, x):
        return self.logits.expand(len(x), -1)


class BrightestPixel(nn.Module):
    """Class = flat index of the brightest pixel of the view: it moves with every shift."""

    def forward(self, x):
        flat = x.sum(1).flatten(1)
        return F.one_hot(flat.argmax(1), flat.shape[1]).float()


def _spiky(n=500, side=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, side, side, generator=g)  # positive: brighter than the zero background
    spot = torch.randint(side * side, (n,), generator=g)
    images.view(n, -1)[torch.arange(n), spot] += 10
    return images


def _labels(n, classes=10):
    return torch.randint(classes, (n,), generator=torch.Generator().manual_seed(1))


def test_constant_model_is_perfectly_consistent_and_its_fidelity_is_its_accuracy():
    images, labels = _spiky(200), _labels(200)
    model = Constant(3)
    assert consistency(model, images, SHIFT, passes=2) == 1.0
    assert circular_consistency(model, images, SHIFT, passes=2) == 1.0
    hit = float((labels == 3).float().mean())
    assert fidelity(model, images, labels, SHIFT, passes=2) == pytest.approx(hit)
    assert diagonal_shift_accuracy(model, images, labels, SHIFT) == pytest.approx([hit] * 5)


def test_zero_offsets_make_any_deterministic_model_consistent():
    torch.manual_seed(0)
    model = build_model("resnet18-paper", 10, 1, width=4).eval()
    images, labels = torch.randn(64, 1, 8, 8), _labels(64)
    fixed = ShiftPairTransform(crop=16, canvas=16)
    assert consistency(model, images, fixed, passes=2) == 1.0
    assert latent_distance(model, images, fixed, passes=1) == 0.0
    acc = diagonal_shift_accuracy(model, images, labels, fixed)
    assert len(acc) == 1 and fidelity(model, images, labels, fixed, passes=1) == pytest.approx(acc[0])


def test_brightest_pixel_model_agrees_only_when_the_shifts_are_equal():
    images = _spiky()
    # agreement iff both shifts are equal: crops at 5 x 5 offsets -> 1/25; rolls in [-2, 2]^2 -> 1/25;
    # rolls in [-4, 4]^2 (the default max_shift S - s) -> 1/81
    model = BrightestPixel()
    assert consistency(model, images, SHIFT, passes=4) == pytest.approx(1 / 25, abs=0.015)
    assert circular_consistency(model, images, SHIFT, max_shift=2, passes=4) == pytest.approx(1 / 25, abs=0.015)
    assert circular_consistency(model, images, SHIFT, passes=4) == pytest.approx(1 / 81, abs=0.01)
    assert circular_consistency(BrightestPixel(), images, SHIFT, max_shift=0, passes=1) == 1.0


def test_diagonal_accuracy_peaks_only_at_the_labelled_offset():
    images = _spiky(100)
    # label = where the brightest pixel sits in the crop at offset (0, 0): the item's top-left is at (6, 6) there
    flat = images.sum(1).flatten(1).argmax(1)
    labels = (flat // 8 + 6) * 16 + flat % 8 + 6
    assert diagonal_shift_accuracy(BrightestPixel(), images, labels, SHIFT) == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_fidelity_is_bounded_by_consistency():
    torch.manual_seed(0)
    model = build_model("resnet18-paper", 3, 1, width=4).eval()
    images, labels = _spiky(120), _labels(120, 3)
    c, f = consistency(model, images, SHIFT, passes=2), fidelity(model, images, labels, SHIFT, passes=2)
    assert 0.0 <= f <= c <= 1.0 and f < c  # a random net is neither always right nor always inconsistent


def _conv_poolnet(stride: int) -> PoolNet:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.ReLU(),
                         nn.Conv2d(6, 6, 3, padding=1, stride=stride, bias=False), nn.ReLU())
    return PoolNet(body, GapFcHead(6, 4), 1, 4, num_features=6).eval()


def test_latent_distance_is_zero_for_a_translation_invariant_pooled_latent():
    images = torch.randn(100, 1, 8, 8)
    # no stride, no bias, zero background: the feature map only translates with the item, so its mean is fixed
    assert latent_distance(_conv_poolnet(1), images, SHIFT, passes=2) < 1e-10
    assert latent_distance(_conv_poolnet(2), images, SHIFT, passes=2) > 1e-3


class OneHotMap(nn.Module):
    """Backbone: a (B, s*s, 1, 1) one-hot map of the brightest pixel's position."""

    def forward(self, x):
        return BrightestPixel()(x)[:, :, None, None]


def _one_hot_poolnet() -> PoolNet:
    head = GapFcHead(SHIFT.crop ** 2, SHIFT.crop ** 2)
    with torch.no_grad():
        head.fc.weight.copy_(torch.eye(SHIFT.crop ** 2))
        head.fc.bias.zero_()
    return PoolNet(OneHotMap(), head, 1, SHIFT.crop ** 2, num_features=SHIFT.crop ** 2).eval()


def test_latent_distance_of_one_hot_latents_is_twice_the_disagreement():
    model, images = _one_hot_poolnet(), _spiky(300)
    c = consistency(model, images, SHIFT, passes=2)
    assert 0 < c < 0.2
    assert latent_distance(model, images, SHIFT, passes=2) == pytest.approx(2 * (1 - c))


def test_scores_are_seeded_per_sample_and_independent_of_the_batch_size():
    model = _one_hot_poolnet()
    images = _spiky(200)
    flat = images.sum(1).flatten(1).argmax(1)
    labels = (flat // 8 + 4) * 16 + flat % 8 + 4  # right at the centre crop (offset (2, 2)) only
    a = invariance_metrics(model, images, labels, SHIFT, passes=2, seed=7, batch_size=256)
    b = invariance_metrics(model, images, labels, SHIFT, passes=2, seed=7, batch_size=7)
    assert a.pop("diagonal_accuracy") == b.pop("diagonal_accuracy")
    assert a == pytest.approx(b) and 0 < a["consistency"] < 1
    assert a["consistency"] == consistency(model, images, SHIFT, passes=2, seed=7)
    assert a["fidelity"] == fidelity(model, images, labels, SHIFT, passes=2, seed=7)
    assert a["latent_distance"] == pytest.approx(latent_distance(model, images, SHIFT, passes=2, seed=7))
    assert a["circular_consistency"] == circular_consistency(model, images, SHIFT, passes=2, seed=7)
    assert a["accuracy"] == b["accuracy"] == diagonal_shift_accuracy(model, images, labels, SHIFT)[2] == 1.0
    other = invariance_metrics(model, images, labels, SHIFT, passes=2, seed=8)
    other.pop("diagonal_accuracy")
    assert other != a


def test_per_image_outcomes_have_known_answers_and_give_the_float_metrics():
    images, labels = _spiky(60), _labels(60)
    constant = invariance_outcomes(Constant(3), images, labels, SHIFT, passes=3, latent_layer="")
    hit = (labels == 3).double().numpy()
    assert np.array_equal(constant["accuracy"], hit) and np.array_equal(constant["fidelity"], hit)
    assert np.array_equal(constant["diagonal_accuracy"], np.repeat(hit[:, None], 5, axis=1))
    assert (constant["consistency"] == 1).all() and (constant["circular_consistency"] == 1).all()
    # the one-hot latent's squared distance is 2 on a disagreeing pair and 0 otherwise, its squared norm 1
    model = _one_hot_poolnet()
    out = invariance_outcomes(model, images, labels, SHIFT, passes=4, seed=3)
    assert out["latent_distance"].shape == (60, 2) and np.allclose(out["latent_distance"][:, 1], 1.0)
    assert np.allclose(out["latent_distance"][:, 0], 2 * (1 - out["consistency"]))
    assert set(np.unique(out["consistency"] * 4)) <= {0.0, 1.0, 2.0, 3.0, 4.0}  # shares of 4 pairs
    floats = invariance_metrics(model, images, labels, SHIFT, passes=4, seed=3)
    assert floats == summarize_outcomes(out)
    assert floats["consistency"] == pytest.approx(out["consistency"].mean())
    assert floats["latent_distance"] == pytest.approx(out["latent_distance"][:, 0].sum() / 60)
    assert latent_ratio(np.array([[1.0, 0.0], [3.0, 2.0]])).tolist() == [0.0, 1.5]


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError):
        consistency(Constant(0), torch.zeros(2, 1, 8, 8), SHIFT, passes=0)
    with pytest.raises(UserError):
        circular_consistency(Constant(0), torch.zeros(2, 1, 8, 8), SHIFT, max_shift=-1)
