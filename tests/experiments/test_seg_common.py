"""seg_common.read_ranking: a ranking is refused when it was computed on the evaluation images."""

import json
from types import SimpleNamespace

import pytest
import torch

from poschan.data.fingerprint import image_fingerprint
from poschan.data.scenes import SceneSpec
from poschan.errors import UserError
from poschan.experiments.seg_common import LoadedModel, SegData, read_ranking

EVAL = torch.rand(5, 1, 8, 8)
LOADED = LoadedModel(SimpleNamespace(feature_layer="backbone"), SegData("scenes", SceneSpec()), "weights1", "m.pt")


def write(tmp_path, **fields) -> str:
    ranking = {"keys": {}, "channels": 4, "layer": "backbone", "fingerprint": "weights1", "split": "rank", **fields}
    path = tmp_path / "ranking.json"
    path.write_text(json.dumps(ranking))
    return str(path)


def test_ranking_of_the_evaluation_images_is_refused_by_content(tmp_path):
    path = write(tmp_path, images=image_fingerprint(EVAL.flip(0)))  # same images, other order, other split name
    with pytest.raises(UserError, match="computed on the evaluation images \\(the same 5 images, by content\\)"):
        read_ranking(path, LOADED, 4, EVAL)


def test_ranking_of_other_images_is_read(tmp_path):
    other = EVAL.clone()
    other[0, 0, 0, 0] += 1
    for fields in ({"images": image_fingerprint(other)}, {}):
        assert read_ranking(write(tmp_path, **fields), LOADED, 4, EVAL)["split"] == "rank"


def test_ranking_on_the_evaluation_split_is_refused_by_name(tmp_path):
    with pytest.raises(UserError, match="computed on the evaluation split 'test'"):
        read_ranking(write(tmp_path, split="test"), LOADED, 4, EVAL)
