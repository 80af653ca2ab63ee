"""models.segmenters: a seg-train checkpoint or run loaded with its own data (scene settings overridable) and its
fixed test images; every seed of a run; bad input refused in one line."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from tests.experiments.seg_fixture import SPEC

from poschan.data.scenes import SceneSpec
from poschan.data.segdata import SegData
from poschan.errors import UserError
from poschan.models.segmentation import build_segmenter
from poschan.models.segmenters import checkpoints, describe, load_segmenter_on_data, load_segmenters

SIDE = 56


def save_run(root, seeds=(0, 2), side: int = SIDE) -> None:
    """A seg-train run layout: ``seed<S>/checkpoint.pt`` with the model and the data settings in "meta"."""
    for seed in seeds:
        torch.manual_seed(seed)
        (root / f"seed{seed}").mkdir(parents=True)
        meta = {"segmentation": asdict(SPEC), "data": "scenes", "scenes": asdict(SceneSpec(side=side))}
        torch.save({"model": build_segmenter(SPEC).state_dict(), "meta": meta}, root / f"seed{seed}/checkpoint.pt")


def test_a_run_loads_every_seed_on_its_own_data(tmp_path):
    save_run(tmp_path)
    assert checkpoints(tmp_path) == [str(tmp_path / "seed0/checkpoint.pt"), str(tmp_path / "seed2/checkpoint.pt")]
    nets = load_segmenters(checkpoint=tmp_path, test_size=3, scenes={"layout_prior": 0.5, "side": None})
    assert [net.source for net in nets] == checkpoints(tmp_path)
    first = nets[0]
    assert (first.layer, first.channels, len(first.test.images)) == ("backbone", 32, 3)
    assert first.data.scenes.side == SIDE and first.data.scenes.layout_prior == 0.5  # None keeps the checkpoint's
    assert torch.equal(first.test.images, SegData("scenes", first.data.scenes).test_set(3).images)
    assert first.fingerprint != nets[1].fingerprint and first.label(width=True) == "resnet18-paper w4"
    assert describe(first.data) == "prior 0.5 left-right"


def test_bad_input_is_one_line(tmp_path):
    save_run(tmp_path)
    one = str(tmp_path / "seed0/checkpoint.pt")
    with pytest.raises(UserError, match="was trained on 'scenes'"):
        load_segmenter_on_data(checkpoint=one, data="voc:/x", test_size=3)
    with pytest.raises(UserError, match="without seed<S>/checkpoint.pt"):
        checkpoints(tmp_path / "seed0")
    with pytest.raises(UserError, match="unknown layer"):
        load_segmenter_on_data(checkpoint=one, layer="nope", test_size=3)
    save_run(tmp_path / "other", seeds=(0,), side=64)
    (tmp_path / "seed2/checkpoint.pt").rename(tmp_path / "seed2/old.pt")
    (tmp_path / "other/seed0/checkpoint.pt").rename(tmp_path / "seed2/checkpoint.pt")
    with pytest.raises(UserError, match="differ in their layer or test images"):
        load_segmenters(checkpoint=tmp_path, test_size=3)
