"""rank_channels on any module: known answers, every input form, seeds, and the ranking file round trip."""

import dataclasses
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from poschan.errors import UserError
from poschan.locate.designs import RankSpec
from poschan.locate.rank import rank_channels, ranking_controls
from poschan.locate.ranking import ChannelRanking, ranking_order


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


def test_a_rank_spec_and_per_seed_images_are_ranked_as_given():
    x = images(n=8)
    model = Ramp(8)
    spec = RankSpec("flip", flip_input="image")
    given = rank_channels(model, "out", x, spec, seeds=(0, 1))
    assert given.design == dataclasses.asdict(spec)
    plain = rank_channels(model, "out", x, seeds=(0, 1))
    assert all(torch.equal(given.scores[k], plain.scores[k]) for k in plain.keys)
    halves = {0: x[:4], 1: x[4:]}
    each = rank_channels(model, "out", halves.__getitem__, spec, seeds=(0, 1))
    alone = rank_channels(model, "out", x[4:], spec, seeds=(1,))
    assert torch.equal(each.per_seed[1]["overall"], alone.per_seed[1]["overall"])
    assert each.n_images == 8 and each.data["images"] == plain.data["images"]  # the union of the seeds' images


def test_ranking_controls_recompute_the_null_and_the_seed_overlap_by_hand():
    ranking = rank_channels(Ramp(8), "out", images(n=8), seeds=(0, 1, 2))
    controls = ranking_controls(ranking, n=1)
    assert controls.top["overall"] == [0] and controls.seed_overlap_chance == 1 / 2
    null = controls.null["overall"]
    assert null["mean_abs_score"] == float(ranking.scores["overall"].abs().mean())
    assert null["null_mean_abs_score"] == float(ranking.null["overall"].abs().mean())
    assert null["top_overlap"] == int(ranking_order(ranking.null["overall"])[0] == 0)
    assert null["chance_overlap"] == 1 / 2
    overlap = controls.seed_overlap["overall"]
    assert overlap["values"] == [1.0, 1.0, 1.0] and overlap["n"] == 3  # every seed puts the ramp channel first
    assert controls.dims is None and "dims" not in controls.metrics()
    dimest = ranking_controls(rank_channels(Ramp(18), "out", images(side=6), "dimest", seeds=(0, 1)), n=2)
    assert dimest.dims["position"] + dimest.dims["semantic"] + dimest.dims["residual"] == 2
    assert dimest.position_percent["n"] == 2 and set(dimest.seed_overlap) == {"position", "semantic"}


def test_cell_scores_stack_the_cell_keys_of_a_shift_ranking():
    shift = rank_channels(Ramp(18), "out", images(side=6), "shift")
    cells = shift.cell_scores()
    assert cells.shape == (9, 2) and torch.equal(cells[4], shift.scores["cell:4"])
    with pytest.raises(UserError, match="no cell scores"):
        rank_channels(Ramp(8), "out", images()).cell_scores()
