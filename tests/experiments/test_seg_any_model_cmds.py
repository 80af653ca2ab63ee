"""`poschan ablate` / `attack` on any segmentation network: a torchvision DeepLabv3 from a weights file and a user's
factory file with --layer; `ablate --ranking` takes a ranking of the same weights and layer (however it was made)
and refuses one of another layer or other weights with exit 2 and one line."""

import json
from pathlib import Path

import pytest
import torch

from poschan.cli import main
from poschan.data.scenes import SceneSpec
from poschan.data.segdata import SegData
from poschan.locate.rank import rank_channels
from poschan.models.segmentation import load_segmenter
from poschan.models.weights import weights_fingerprint

SMALL = ["--preset", "smoke", "--no-progress"]
TINY = ["--test-size", "4", "--rank-scenes", "4", "--batch-size", "4", "--n", "1"]
FLIP_ONLY = ["--rankings", "flip"]  # a knock-out of each of 2048 channels is slow on a CPU
FACTORY = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=2, dilation=2), nn.ReLU())
        self.classifier = nn.Conv2d(16, 11, 1)

    def forward(self, x):
        return self.classifier(self.body(self.stem(x)))


def make():
    return Tiny()
'''


def metrics(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def deeplab(tmp_path_factory) -> tuple[Path, str]:
    """A DeepLabv3-ResNet50 state dict with random weights and its auxiliary head (11 classes: the scenes'), and
    the fingerprint of the torchvision module that holds it (auxiliary head left out)."""
    from torchvision.models.segmentation import deeplabv3_resnet50

    with torch.random.fork_rng():
        torch.manual_seed(3)
        net = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=11, aux_loss=True)
    path = tmp_path_factory.mktemp("weights") / "deeplab.pt"
    torch.save(net.state_dict(), path)
    net.aux_classifier = None
    return path, weights_fingerprint(net)


def test_ablate_and_attack_a_torchvision_deeplab(deeplab, tmp_path):
    path, fingerprint = deeplab
    model = ["--model", "tv:deeplabv3_resnet50", "--weights", str(path)]
    out = tmp_path / "ablate"
    assert main(["ablate", *SMALL, *model, *TINY, *FLIP_ONLY, "--side", "32", "--out", str(out)]) == 0
    m = metrics(out)
    assert (m["layer"], m["channels"], m["test_images"]) == ("backbone.layer4", 2048, 4)
    assert 0 <= m["miou_clean"]["mean"] <= 1 and len(m["reliance"][0]["random_channels"][0]) == 5
    ranking = json.loads((out / "ranking.json").read_text())
    assert (ranking["layer"], ranking["channels"], ranking["weights"]) == ("backbone.layer4", 2048, fingerprint)
    assert ranking["model"] == "tv:deeplabv3_resnet50" and ranking["data"]["split"] == "rank"
    out = tmp_path / "attack"
    assert main(["attack", *SMALL, *model, *TINY, "--side", "56", "--region", "left",
                 "--methods", "flip,flip-opposite,random", "--out", str(out)]) == 0
    rows = metrics(out)["attack"]
    assert [(r["region"], r["method"]) for r in rows] == [("left", "flip"), ("left", "flip-opposite"),
                                                          ("left", "random")]
    assert json.loads((out / "ranking_flip_left.json").read_text())["weights"] == fingerprint


@pytest.fixture(scope="module")
def factory(tmp_path_factory) -> tuple[str, Path]:
    """A user's factory file, and an ablate run of its layer ``body`` (random weights of seed 0)."""
    root = tmp_path_factory.mktemp("factory")
    (root / "tiny_seg.py").write_text(FACTORY)
    name = f"{root / 'tiny_seg.py'}:make"
    out = root / "ablate"
    assert main(["ablate", *SMALL, "--model", name, "--layer", "body", "--out", str(out)]) == 0
    return name, out


def test_ablate_and_attack_a_user_factory(factory, tmp_path):
    name, ablated = factory
    m = metrics(ablated)
    assert (m["layer"], m["channels"], m["test_images"]) == ("body", 16, 16)
    ranking = json.loads((ablated / "ranking.json").read_text())
    assert ranking["layer"] == "body" and ranking["weights"] == load_segmenter(
        model=name, num_classes=11, layer="body", seed=0).fingerprint()
    out = tmp_path / "attack"
    assert main(["attack", *SMALL, "--model", name, "--layer", "body", "--region", "left,cell:4", "--out",
                 str(out)]) == 0
    methods = {(r["region"], r["method"]) for r in metrics(out)["attack"]}
    assert {("left", "flip"), ("left", "shift"), ("left", "flip-opposite"), ("left", "random"), ("left", "pgd"),
            ("cell:4", "shift"), ("cell:4", "random"), ("cell:4", "pgd")} <= methods


def test_ablate_reuses_a_ranking_made_elsewhere_of_the_same_weights(factory, tmp_path):
    """A ranking of the module load_segmenter builds (as `poschan rank` makes it) is accepted and applied."""
    name, ablated = factory
    seg = load_segmenter(model=name, num_classes=11, layer="body", seed=0)
    images = SegData("scenes", SceneSpec()).rank_images(8, seed=0)
    path = rank_channels(seg.module, seg.layer, images, "flip", seeds=(0,)).save(tmp_path / "ranking.json")
    out = tmp_path / "again"
    assert main(["ablate", *SMALL, "--model", name, "--layer", "body", "--ranking", str(path), "--out",
                 str(out)]) == 0
    m = metrics(out)
    assert m["ranking"] == {"source": str(path), "seeds": [0]} and not (out / "ranking.json").exists()
    assert m["miou_clean"] == metrics(ablated)["miou_clean"]


def run_bad(tmp_path: Path, args: list[str], capsys) -> str:
    out = tmp_path / "bad"
    assert main([*args, *SMALL, "--out", str(out)]) == 2
    assert not out.exists() and not Path(f"{out}.partial").exists()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().count("\n") == 0
    return captured.err.strip()


def test_rankings_of_another_layer_or_other_weights_are_refused(factory, deeplab, tmp_path, capsys):
    name, ablated = factory
    ranking = ["--ranking", str(ablated / "ranking.json")]
    model = ["ablate", "--model", name]
    assert "layer 'body'" in run_bad(tmp_path, [*model, "--layer", "stem", *ranking], capsys)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        other = load_segmenter(model=name, num_classes=11, layer="body", seed=1).module.state_dict()
    torch.save(other, tmp_path / "other.pt")
    err = run_bad(tmp_path, [*model, "--layer", "body", "--weights", str(tmp_path / "other.pt"), *ranking], capsys)
    assert "other weights" in err
    assert "needs --layer" in run_bad(tmp_path, model, capsys)
    assert "not both" in run_bad(tmp_path, [*model, "--checkpoint", str(ablated / "ranking.json")], capsys)
    assert "allowed: tv:deeplabv3_resnet50" in run_bad(tmp_path, ["ablate", "--model", "tv:unet"], capsys)
    assert "do not fit" in run_bad(tmp_path, ["attack", "--model", "tv:fcn_resnet50", "--weights",
                                              str(deeplab[0])], capsys)


RANK = ["--limit", "6", "--batch-size", "6", "--split", "train", "--num-classes", "11"]


def test_ablate_accepts_a_ranking_written_by_poschan_rank(factory, deeplab, tmp_path):
    """`poschan rank` of a segmenter writes the ranking file `ablate --ranking` reads: same layer, same weights."""
    name, ablated = factory
    ranked = tmp_path / "rank"
    assert main(["rank", *SMALL, *RANK, "--model", name, "--segmenter", "--layer", "body", "--out", str(ranked)]) == 0
    ranking = json.loads((ranked / "ranking.json").read_text())
    assert (ranking["layer"], ranking["channels"]) == ("body", 16)
    assert ranking["weights"] == json.loads((ablated / "ranking.json").read_text())["weights"]
    out = tmp_path / "ablate"
    assert main(["ablate", *SMALL, "--model", name, "--layer", "body", "--ranking", str(ranked / "ranking.json"),
                 "--out", str(out)]) == 0
    m = metrics(out)
    assert m["ranking"] == {"source": str(ranked / "ranking.json"), "seeds": [0]} and m["layer"] == "body"
    assert m["miou_clean"] == metrics(ablated)["miou_clean"]  # the same weights were evaluated
    path, fingerprint = deeplab
    ranked = tmp_path / "rank-deeplab"
    assert main(["rank", *SMALL, *RANK, "--model", "tv:deeplabv3_resnet50", "--weights", str(path), "--out",
                 str(ranked)]) == 0
    ranking = json.loads((ranked / "ranking.json").read_text())
    assert (ranking["layer"], ranking["channels"], ranking["weights"]) == ("backbone.layer4", 2048, fingerprint)
    out = tmp_path / "ablate-deeplab"
    assert main(["ablate", *SMALL, "--model", "tv:deeplabv3_resnet50", "--weights", str(path), *TINY, *FLIP_ONLY,
                 "--side", "32", "--ranking", str(ranked / "ranking.json"), "--out", str(out)]) == 0
