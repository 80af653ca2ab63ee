"""`poschan seg-train --flip`: the auto rule, explicit choices, bad values, and the resolved choice in the training
stream, the checkpoint's meta, the metrics and config.yaml."""

import json

import pytest
import torch
import yaml

from poschan.cli import main
from poschan.data.scenes import SceneSpec
from poschan.data.segdata import SegData
from poschan.experiments.seg_train import resolve_flip

TINY = ["--preset", "smoke", "--no-progress", "--side", "56", "--train-size", "8", "--batch-size", "4",
        "--test-size", "4"]


@pytest.mark.parametrize("flip, source, layout, prior, expected, rule", [
    ("auto", "scenes", "top-bottom", 0.9, True, "top-bottom"),
    ("auto", "scenes", "left-right", 0.9, False, "left-right layout prior 0.9"),
    ("auto", "scenes", "left-right", 0.0, True, "prior 0"),
    ("auto", "voc:/data/VOC2012", "left-right", 0.9, True, "real data"),
    ("on", "scenes", "left-right", 0.9, True, "set"),
    ("off", "scenes", "top-bottom", 0.0, False, "set"),
])
def test_auto_flips_where_a_mirror_keeps_the_layout_and_explicit_choices_win(flip, source, layout, prior, expected,
                                                                             rule):
    on, why = resolve_flip(flip, SegData(source, SceneSpec(layout=layout, layout_prior=prior)))
    assert on is expected and rule in why and why.startswith("auto" if flip == "auto" else "set")


def test_a_bad_flip_is_one_line_of_bad_input(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["seg-train", *TINY, "--flip", "maybe", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 1 and "allowed: auto, on, off" in lines[0] and "'maybe'" in lines[0]
    assert not out.exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("flags, hflip, rule", [
    ([], True, "auto: layout prior 0"),
    (["--layout-prior", "0.9"], False, "auto: left-right layout prior 0.9"),
    (["--layout-prior", "0.9", "--flip", "on"], True, "set: flip on"),
])
def test_the_resolved_flip_trains_and_is_recorded(tmp_path, monkeypatch, flags, hflip, rule):
    streams = []
    train_source = SegData.train_source

    def recording(self, *args, **kwargs):
        streams.append(train_source(self, *args, **kwargs))
        return streams[-1]

    monkeypatch.setattr(SegData, "train_source", recording)
    out = tmp_path / "run"
    assert main(["seg-train", *TINY, *flags, "--out", str(out)]) == 0
    assert [s.hflip for s in streams] == [hflip]
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    assert metrics["hflip"] is hflip and metrics["hflip_rule"].startswith(rule)
    assert torch.load(out / "seed0/checkpoint.pt", weights_only=True)["meta"]["hflip"] is hflip
    assert yaml.safe_load((out / "config.yaml").read_text())["flip"] == ("on" if "--flip" in flags else "auto")


def test_efficientnet_lite0_starts_from_its_packaged_weights_unless_told_not_to(tmp_path, monkeypatch):
    import poschan.experiments.seg_train as seg_train

    built = []
    real = seg_train.build_segmenter

    def spy(spec, *, pretrained=False):
        built.append(pretrained)
        return real(spec, pretrained=pretrained)

    monkeypatch.setattr(seg_train, "build_segmenter", spy)
    base = ["seg-train", "--preset", "smoke", "--no-progress", "--model", "efficientnet-lite0", "--epochs", "1",
            "--train-size", "16", "--test-size", "8"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert built[-1] is True  # the trained model (prepare's shape check builds one without weights first)
    built.clear()
    assert main([*base, "--no-pretrained", "--out", str(tmp_path / "b")]) == 0
    assert built and not any(built)
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["pretrained"] is False
