"""Position maps (shapes, ranges, monotonic gradients) and their scores SPC / MAE (known answers)."""

import pytest
import torch
from scipy import stats

from poschan.errors import UserError
from poschan.measure.position_maps import TARGETS, mae, position_map, position_maps, spc


def test_maps_shapes_and_ranges():
    maps = position_maps(TARGETS, 7, 9)
    assert maps.shape == (3, 7, 9)
    for m in maps:
        assert float(m.min()) == 0.0 and float(m.max()) == 1.0


def test_horizontal_increases_along_x_and_is_constant_along_y():
    h = position_map("horizontal", 5, 8)
    assert bool((h.diff(dim=1) > 0).all())
    assert bool((h == h[:1]).all())
    assert h[0, 0] == 0 and h[0, -1] == 1
    assert torch.equal(position_map("vertical", 8, 5), h.T)


def test_gaussian_peaks_at_centre_and_is_symmetric():
    g = position_map("gaussian", 9, 9, sigma=0.2)
    assert g[4, 4] == 1 and float(g.min()) == 0
    assert torch.allclose(g, g.flip(0)) and torch.allclose(g, g.flip(1)) and torch.allclose(g, g.T)
    wide, narrow = position_map("gaussian", 9, 9, sigma=1.0), position_map("gaussian", 9, 9, sigma=0.1)
    assert wide[4, 2] > narrow[4, 2]


@pytest.mark.parametrize("kind", TARGETS)
def test_spc_of_a_map_with_itself_is_one(kind):
    m = position_map(kind, 6, 6)
    assert spc(m[None], m).item() == pytest.approx(1.0)
    assert spc(torch.exp(3 * m)[None], m).item() == pytest.approx(1.0)  # ranks only


def test_spc_of_a_gradient_with_its_mirror_is_minus_one():
    for kind, dim in (("horizontal", 1), ("vertical", 0)):
        m = position_map(kind, 6, 6)
        assert spc(m.flip(dim)[None], m).item() == pytest.approx(-1.0)


def test_spc_per_image_matches_scipy_and_constant_maps_score_zero():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(4, 5, 5, generator=g)
    pred[2] = 0.3  # constant prediction: SPC defined as 0
    target = position_map("gaussian", 5, 5)
    got = spc(pred, target)
    assert got.shape == (4,)
    assert got[2].item() == 0.0
    for i in (0, 1, 3):
        assert got[i].item() == pytest.approx(stats.spearmanr(pred[i].flatten(), target.flatten()).statistic, abs=1e-6)
    assert spc(pred, pred).tolist() == pytest.approx([1.0, 1.0, 0.0, 1.0])


def test_mae_known_values():
    m = position_map("horizontal", 4, 3)  # columns 0, 0.5, 1
    assert mae(m[None], m).item() == 0.0
    assert mae(torch.full((1, 4, 3), 0.5), m).item() == pytest.approx(1 / 3)
    assert mae(torch.stack([m, 1 - m]), m).tolist() == pytest.approx([0.0, 2 / 3])


def test_bad_arguments():
    with pytest.raises(UserError, match="unknown target"):
        position_map("diagonal", 4, 4)
    with pytest.raises(UserError, match="sigma"):
        position_map("gaussian", 4, 4, sigma=0)
    with pytest.raises(ValueError):
        spc(torch.zeros(2, 3, 3), torch.zeros(4, 4))
