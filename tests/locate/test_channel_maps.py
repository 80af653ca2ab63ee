"""Known answers for ``channel_maps`` on a planted model: channel 5 is a left-to-right ramp of the content, the
other channels the content itself (position-free); and its figure."""

import matplotlib.image
import numpy as np
import pytest
import torch
from torch import nn

from poschan.data.sources import as_image_set
from poschan.errors import UserError
from poschan.locate.channel_maps import channel_maps
from poschan.locate.ranking import ChannelRanking
from poschan.report.channel_figures import channel_figure

RAMP = 5


class Body(nn.Module):
    """8 channels: channel RAMP = content × x (0 at the left edge, 1 at the right), channel c ≠ RAMP = (c + 1) ×
    content, where content = max(image, 0) (the background is 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        content = x[:, :1].clamp_min(0)
        out = content * torch.arange(1, 9, dtype=x.dtype).view(1, -1, 1, 1)
        out[:, RAMP] = content[:, 0] * torch.linspace(0, 1, x.shape[-1]).view(1, 1, -1)
        return out


class Planted(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = Body()
        self.down = nn.AvgPool2d(2)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.down(self.body(x)).mean((2, 3)))


def items(n: int = 12, side: int = 8, seed: int = 0):
    """``n`` positive random 8×8 items (grey), as the model takes them."""
    return as_image_set(torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed)) + 0.1)


def test_the_ramp_channel_rises_left_to_right_and_the_others_are_flat():
    maps = channel_maps(Planted(), "body", items(), [RAMP, 2], grid=3, random=3, seed=0)
    ramp, flat = maps.cell_means[0], maps.cell_means[1]
    assert maps.cell_means.shape == (2, 3, 3) and maps.random_cell_means.shape == (3, 3, 3)
    assert (np.diff(ramp, axis=1) > 0.05 * ramp.max()).all()  # strictly rising along every row
    assert np.allclose(ramp, ramp[:1], rtol=1e-5)  # the same in every row: no vertical position
    spread = ramp.max() - ramp.min()
    assert flat.max() - flat.min() < 1e-4 * spread and flat.min() > 0
    for cells in maps.random_cell_means:  # the controls are all position-free here
        assert cells.max() - cells.min() < 1e-4 * spread
    assert maps.position_share[0] > 0.5 and maps.position_share[1] < 1e-6
    assert (maps.random_position_share < 1e-6).all()


def test_random_channels_avoid_the_top_list_and_follow_the_seed():
    model, data = Planted(), items(4)
    draws = [channel_maps(model, "body", data, [RAMP, 0], seed=s).random_channels for s in range(6)]
    for drawn in draws:
        assert len(drawn) == 2 and len(set(drawn)) == 2 and not set(drawn) & {RAMP, 0}
        assert all(0 <= c < 8 for c in drawn)
    assert channel_maps(model, "body", data, [RAMP, 0], seed=3).random_channels == draws[3]
    assert len({tuple(d) for d in draws}) > 1
    assert channel_maps(model, "body", data, list(range(7))).random_channels == [7]  # at most the others


def test_photo_maps_are_the_feature_maps_at_the_photos_size():
    photos = as_image_set(torch.rand(3, 1, 20, 12, generator=torch.Generator().manual_seed(1)))
    maps = channel_maps(Planted(), "body", items(), [RAMP], photos=photos, n_photos=2, random=1)
    assert maps.photo_maps.shape == (2, 1, 20, 12) and maps.random_photo_maps.shape == (2, 1, 20, 12)
    assert maps.photos.shape == (2, 1, 20, 12)
    x = photos.images[:2]
    expected = x[:, 0].clamp_min(0) * torch.linspace(0, 1, 12)
    assert np.allclose(maps.photo_maps[:, 0], expected.numpy(), atol=1e-6)
    (other,) = maps.random_channels
    assert np.allclose(maps.random_photo_maps[:, 0], (other + 1) * x[:, 0].clamp_min(0).numpy(), atol=1e-5)
    down = channel_maps(Planted(), "down", items(), [RAMP], photos=photos, n_photos=2)
    assert down.photo_maps.shape == (2, 1, 20, 12)
    assert (np.diff(down.photo_maps[:, 0].mean((0, 1))) > 0).all()  # still rising left to right, upsampled


def test_a_ranking_gives_its_top_k_channels_and_is_checked_against_the_layer():
    scores = torch.tensor([0.1, 0.0, 0.5, 0.2, 0.3, 0.9, 0.0, 0.0], dtype=torch.float64)
    ranking = ChannelRanking(layer="body", method="flip", scores={"overall": scores})
    maps = channel_maps(Planted(), "body", items(4), ranking, k=2)
    assert maps.channels == [RAMP, 2] and maps.cell_means.shape == (2, 3, 3)
    other = ChannelRanking(layer="down", method="flip", scores={"overall": scores})
    with pytest.raises(UserError, match="layer 'down'"):
        channel_maps(Planted(), "body", items(4), other, k=2)


def test_metrics_are_plain_lists():
    metrics = channel_maps(Planted(), "body", items(4), [RAMP], random=1).metrics()
    assert metrics["channels"] == [RAMP] and len(metrics["random_channels"]) == 1
    assert isinstance(metrics["cell_means"][0][0][0], float) and len(metrics["cell_means"][0]) == 3
    assert 0.0 <= metrics["position_share"][0] <= 1.0


@pytest.mark.parametrize("layer, channels, match", [
    ("bdy", [RAMP], "unknown layer 'bdy'"),
    ("body", [8], "channel 8 out of range"),
    ("body", [-1], "channel -1 out of range"),
    ("body", [], "at least one channel"),
    ("body", [1, 1], "each once"),
    ("body", [1.5], "channel indices"),
    ("head", [0], "not a \\(B, C, H, W\\) feature map"),
])
def test_bad_input_is_one_line(layer, channels, match):
    with pytest.raises(UserError, match=match) as err:
        channel_maps(Planted(), layer, items(2), channels)
    assert "\n" not in str(err.value)


def test_too_many_random_channels_is_refused():
    with pytest.raises(UserError, match="random must be in 0..6"):
        channel_maps(Planted(), "body", items(2), [0, 1], random=7)


def test_channel_figure_writes_a_png_that_grows_with_the_photos(tmp_path):
    model, data = Planted(), items(6)
    one = channel_maps(model, "body", data, [RAMP, 2, 3], n_photos=1)
    four = channel_maps(model, "body", data, [RAMP, 2, 3], n_photos=4)
    channel_figure(one, tmp_path / "one.png")
    channel_figure(four, tmp_path / "four.png")
    small, big = (matplotlib.image.imread(tmp_path / f"{n}.png") for n in ("one", "four"))
    assert small.ndim == 3 and small.shape[2] in (3, 4) and big.shape[2] == small.shape[2]
    assert big.shape[0] > 1.8 * small.shape[0]  # 2 + 2 × 4 rows against 2 + 2 × 1
    assert abs(big.shape[1] - small.shape[1]) < 0.1 * small.shape[1]  # 1 + 3 columns both
    assert big[..., :3].std() > 0.05  # something is drawn
    assert not list(tmp_path.glob("*.tmp*")) and sorted(p.name for p in tmp_path.iterdir()) == ["four.png", "one.png"]
