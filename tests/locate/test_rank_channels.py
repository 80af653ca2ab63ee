"""rank_channels on any module: known answers, every input form, seeds, and the ranking file round trip."""

import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from poschan.errors import UserError
from poschan.locate.rank import rank_channels
from poschan.locate.ranking import ChannelRanking


class Ramp(nn.Module):
    """Channel 0 = the image weighted by a left-to-right ramp (its pooled value moves when the content is mirrored),
    channel 1 = the image itself (its pooled value is the same for the image and its mirror)."""

    def __init__(self, width: int):
        super().__init__()
        self.register_buffer("ramp", torch.linspace(0, 1, width))
        self.out = nn.Identity()

    def forward(self, x):
        return self.out(torch.cat([x * self.ramp, x], dim=1))


def images(n: int = 6, side: int = 8) -> torch.Tensor:
    x = torch.zeros(n, 1, side, side)
    x[..., : side // 2] = torch.rand(n, 1, side, side // 2, generator=torch.Generator().manual_seed(0)) + 0.5
    return x  # content in the left half


def test_flip_of_plain_images_has_the_known_answer():
    x = images()
    ranking = rank_channels(Ramp(8), "out", x)  # flipped as they are (no canvas)
    ramp = torch.linspace(0, 1, 8)
    pooled = (x * ramp).mean(dim=(1, 2, 3)).double()
    mirrored = (x.flip(-1) * ramp).mean(dim=(1, 2, 3)).double()
    assert torch.allclose(ranking.scores["overall"], torch.stack([(pooled - mirrored).abs().mean(),
                                                                  torch.tensor(0.0, dtype=torch.float64)]), atol=1e-7)
    assert ranking.scores["left"][0] < 0 < ranking.scores["right"][0]  # the ramp fires less with content on the left
    assert ranking.top("overall", 1).tolist() == [0] and ranking.design["flip_input"] == "image"
    assert ranking.channels == 2 and ranking.n_images == 6 and ranking.seeds == [0]


def test_tensor_dataset_and_dataloader_give_the_same_ranking():
    x = images()
    model = Ramp(8)
    a = rank_channels(model, "out", x, seeds=(0, 1))
    b = rank_channels(model, "out", TensorDataset(x, torch.zeros(6, dtype=torch.long)), seeds=(0, 1))
    c = rank_channels(model, "out", DataLoader(TensorDataset(x), batch_size=4), seeds=(0, 1))
    for other in (b, c):
        assert all(torch.equal(a.scores[k], other.scores[k]) and torch.equal(a.null[k], other.null[k]) for k in a.keys)
    assert a.seeds == [0, 1] and not torch.equal(a.per_seed[0]["overall"], a.null["overall"])


def test_shift_and_dimest_use_canvases_and_the_file_round_trips(tmp_path):
    x = images(side=6)
    model = Ramp(18)  # canvases of 3 x 6 px
    shift = rank_channels(model, "out", x, method="shift")
    assert "cell:0" in shift.keys and shift.design["flip_input"] == "canvas"
    assert rank_channels(model, "out", x, method="dimest").keys == ["position", "semantic"]
    loaded = ChannelRanking.load(shift.save(tmp_path / "r.json"))
    assert loaded.keys == shift.keys and all(torch.equal(loaded.scores[k], shift.scores[k]) for k in shift.keys)
    assert torch.equal(loaded.order("left", seed=0), shift.order("left", seed=0))
    assert loaded.weights == shift.weights is not None


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="N, C, H, W"):
        rank_channels(Ramp(8), "out", torch.zeros(3, 8, 8))
    with pytest.raises(UserError, match="a dataset of images"):
        rank_channels(Ramp(8), "out", 3)
    with pytest.raises(UserError, match="unknown layer"):
        rank_channels(Ramp(8), "nope", images())
    (tmp_path / "x.json").write_text('{"keys": {}}')
    with pytest.raises(UserError, match="not a poschan ranking file"):
        ChannelRanking.load(tmp_path / "x.json")
    with pytest.raises(UserError, match="no key 'cell:0'"):
        rank_channels(Ramp(8), "out", images()).top("cell:0", 1)


FIVE_LINES = """import poschan
model = poschan.build_model("tv:resnet18", num_classes=1000, in_chans=3, weights={weights!r})
photos = poschan.load_images({photos!r}, size=48)
ranking = poschan.rank_channels(model, "layer4", photos)
ranking.save({out!r})
"""


def test_a_five_line_script_ranks_a_torchvision_checkpoint_on_a_photo_folder(tmp_path):
    import torchvision
    from torchvision.transforms.functional import to_pil_image

    from poschan.data.sources import photo_bank

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")  # with fc.*
    (tmp_path / "photos").mkdir()
    for i, img in enumerate(photo_bank(48)[:3]):
        to_pil_image(img).save(tmp_path / "photos" / f"{i}.png")
    script = FIVE_LINES.format(weights=str(tmp_path / "resnet18.pth"), photos=str(tmp_path / "photos"),
                               out=str(tmp_path / "ranking.json"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ranking = ChannelRanking.load(tmp_path / "ranking.json")
    assert (ranking.layer, ranking.channels, ranking.n_images) == ("backbone.layer4", 512, 3)
