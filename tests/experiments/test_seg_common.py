"""seg_common.read_ranking: a ranking file is refused when it was computed on the evaluation images (by content) or
on the evaluation split (by name), and read otherwise."""

from types import SimpleNamespace

import pytest
import torch

from poschan.data.fingerprint import image_fingerprint
from poschan.data.scenes import SceneSpec
from poschan.data.segdata import SegData
from poschan.errors import UserError
from poschan.experiments.seg_common import read_ranking
from poschan.locate.ranking import ChannelRanking

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
