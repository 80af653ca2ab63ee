"""locate.segmenter_rankings: ``read_ranking`` refuses a ranking file computed on the evaluation images (by content)
or on the evaluation split (by name) and reads it otherwise; the rankings that real data allows; which ranking a
region attack masks."""

from types import SimpleNamespace

import pytest
import torch

from poschan.data.fingerprint import image_fingerprint
from poschan.data.scenes import SceneSpec
from poschan.data.segdata import SegData
from poschan.errors import UserError
from poschan.locate.ranking import ChannelRanking
from poschan.locate.segmenter_rankings import RegionRankings, available_rankings, read_ranking

EVAL = torch.rand(5, 1, 8, 8)
LOADED = SimpleNamespace(layer="backbone", channels=4, fingerprint="weights1", data=SegData("scenes", SceneSpec()),
                         test=SimpleNamespace(images=EVAL))


def write(tmp_path, **data) -> str:
    ranking = ChannelRanking("backbone", "flip", {"overall": torch.arange(4.0)}, weights="weights1",
                             data={"source": "scenes", "split": "rank", **data})
    return str(ranking.save(tmp_path / "ranking.json"))


def test_ranking_of_the_evaluation_images_is_refused_by_content(tmp_path):
    path = write(tmp_path, images=image_fingerprint(EVAL.flip(0)))  # same images, other order, other split name
    with pytest.raises(UserError, match="computed on the evaluation images \\(the same 5 images, by content\\)"):
        read_ranking(path, LOADED)


def test_ranking_of_other_images_is_read(tmp_path):
    other = EVAL.clone()
    other[0, 0, 0, 0] += 1
    for fields in ({"images": image_fingerprint(other)}, {}):
        assert read_ranking(write(tmp_path, **fields), LOADED).data["split"] == "rank"


def test_ranking_on_the_evaluation_split_is_refused_by_name(tmp_path):
    with pytest.raises(UserError, match="computed on the evaluation split 'test'"):
        read_ranking(write(tmp_path, split="test"), LOADED)


def test_ranking_of_another_layer_or_other_weights_is_refused(tmp_path):
    path = write(tmp_path)
    for loaded, message in ((SimpleNamespace(**{**vars(LOADED), "layer": "backbone.layer3"}), "layer 'backbone'"),
                            (SimpleNamespace(**{**vars(LOADED), "channels": 8}), "4 channels"),
                            (SimpleNamespace(**{**vars(LOADED), "fingerprint": "weights2"}), "other weights")):
        with pytest.raises(UserError, match=message):
            read_ranking(path, loaded)


def test_real_data_allows_the_rankings_that_move_no_items():
    real = SimpleNamespace(data=SegData("voc:/nowhere", SceneSpec()))
    assert available_rankings(["flip", "shift", "probe", "knockout"], real) == ["flip", "knockout"]
    assert available_rankings(["shift", "flip"], LOADED) == ["shift", "flip"]  # scenes: all, in the order asked
    with pytest.raises(UserError, match="unknown rankings \\['mirror'\\]"):
        available_rankings(["flip", "mirror"], LOADED)


def test_a_region_attack_masks_the_flip_ranking_of_its_half_and_the_one_shift_ranking():
    left, top, shift = (ChannelRanking("backbone", m, {"overall": torch.arange(4.0)}) for m in ("flip", "flip", "shift"))
    found = RegionRankings(["flip", "shift"], {("flip", "left"): left, ("flip", "top"): top, ("shift", None): shift})
    assert found.for_region("right") == {"flip": left, "shift": shift}  # right ranks on the left-half scenes too
    assert found.for_region("bottom")["flip"] is top and found.for_region("cell:4") == {"flip": None, "shift": shift}
    assert list(found.files()) == ["ranking_flip_left.json", "ranking_flip_top.json", "ranking_shift.json"]
    assert list(RegionRankings(["shift"], {("shift", None): None}).files()) == []  # real data: no shift ranking
