"""The one weights loader: whole PoolNets, backbones, and torchvision / timm classifier checkpoints as users have them."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from poschan.cli import main
from poschan.data.sources import IMAGENET_MEAN, IMAGENET_STD
from poschan.errors import UserError
from poschan.models.registry import build_model
from poschan.models.weights import ModelNote, load_state, load_weights, weights_shape


def _classifier(name: str) -> torch.nn.Module:
    """A randomly initialised classifier as users build it (torchvision ``tv:NAME`` or timm ``timm:NAME``)."""
    torch.manual_seed(1)
    kind, arch = name.split(":")
    if kind == "tv":
        return torchvision.models.get_model(arch, weights=None)
    timm = pytest.importorskip("timm")
    return timm.create_model(arch, pretrained=False)


def _save(state: dict, path: Path) -> str:
    torch.save(state, path)
    return str(path)


def _build(name: str, weights: str | None = None, in_chans: int = 3):
    torch.manual_seed(2)
    return build_model(name, 4, in_chans, weights=weights)


@pytest.mark.parametrize("name,head,rename", [
    ("tv:resnet18", ["fc.bias", "fc.weight"], lambda k: k),
    ("tv:mobilenet_v3_small", ["classifier.0.bias", "classifier.0.weight", "classifier.3.bias", "classifier.3.weight"],
     lambda k: "features." + k),
    ("timm:resnet18", ["fc.bias", "fc.weight"], lambda k: k.removeprefix("net.")),
])
def test_classifier_checkpoint_loads_into_the_backbone_without_its_head(tmp_path, name, head, rename):
    source = _classifier(name).state_dict()
    path = _save(source, tmp_path / "classifier.pth")
    with pytest.warns(UserWarning, match=", ".join(head[:2])):
        model = _build(name, weights=path)
    backbone = model.backbone.state_dict()
    assert sorted(rename(k) for k in backbone) == sorted(set(source) - set(head))
    for key, tensor in backbone.items():
        assert torch.equal(tensor, source[rename(key)]), key
    with pytest.warns(UserWarning):
        assert load_weights(_build(name), path) == head


def test_backbone_and_whole_model_files_drop_nothing(tmp_path):
    model = _build("tv:resnet18")
    for state in (model.state_dict(), model.backbone.state_dict()):
        assert load_weights(_build("tv:resnet18"), _save(state, tmp_path / "w.pt")) == []


def test_wrong_key_shape_and_pickled_files_are_one_line_user_errors(tmp_path):
    source = _classifier("tv:resnet18").state_dict()
    renamed = {("layer1.0.conv9.weight" if k == "layer1.0.conv1.weight" else k): v for k, v in source.items()}
    with pytest.raises(UserError, match=r"1 missing keys \['layer1.0.conv1.weight'\], 1 unexpected keys "
                                        r"\['layer1.0.conv9.weight'\]") as err:
        _build("tv:resnet18", weights=_save(renamed, tmp_path / "renamed.pth"))
    assert "\n" not in str(err.value)
    narrow = {**source, "layer2.0.conv1.weight": source["layer2.0.conv1.weight"][:64]}
    with pytest.raises(UserError, match=r"size mismatch for layer2.0.conv1.weight: \(64, 64, 3, 3\) in the file, "
                                        r"\(128, 64, 3, 3\) in the model") as err:
        _build("tv:resnet18", weights=_save(narrow, tmp_path / "narrow.pth"))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"size mismatch for conv1.weight: \(64, 3, 7, 7\) in the file, \(64, 1, 7, 7\) "
                                        r"in the model \(the model takes 1-channel images, the file 3-channel"):
        load_weights(_build("tv:resnet18", in_chans=1), _save(source, tmp_path / "rgb.pth"))


def test_the_one_state_loader_names_a_head_of_other_classes_and_loads_nothing_on_a_mismatch():
    def net(classes: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, classes, 1))

    model, before = net(3), net(3).state_dict()
    model.load_state_dict(before)
    with pytest.raises(UserError, match=r"size mismatch for 2.weight: \(21, 8, 1, 1\) in the file, \(3, 8, 1, 1\) in "
                                        r"the model \(the file's head has 21 classes, the model 3\) \(2 tensors"):
        load_state(model, net(21).state_dict(), "voc.pth")
    with pytest.raises(UserError, match=r"0 missing keys \[\], 1 unexpected keys \['3.bias'\]"):
        load_state(model, {**net(3).state_dict(), "3.bias": torch.zeros(1)}, "extra.pth")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    other = net(3).state_dict()
    load_state(model, other, "same.pth")
    assert all(torch.equal(v, other[k]) for k, v in model.state_dict().items())


def test_the_model_takes_the_input_channels_and_classes_its_weights_say(tmp_path):
    rgb = _save(_classifier("tv:resnet18").state_dict(), tmp_path / "rgb.pth")
    with pytest.warns(ModelNote, match="3 input channels"):
        model = _build("tv:resnet18", weights=rgb, in_chans=1)
    assert model.in_chans == 3 and model.num_classes == 4
    torch.manual_seed(3)
    nine = build_model("resnet18-paper", 9, 1, width=8)
    with pytest.warns(ModelNote, match="9 classes"):
        model = build_model("resnet18-paper", 10, 1, width=8, weights=_save(nine.state_dict(), tmp_path / "nine.pt"))
    assert model.num_classes == 9 and torch.equal(model.state_dict()["head.fc.weight"], nine.state_dict()["head.fc.weight"])
    assert weights_shape(nine.state_dict()) == (1, 9)
    assert weights_shape(nine.backbone.state_dict()) == (1, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModelNote)  # agreeing weights: no note
        build_model("resnet18-paper", 9, 1, width=8, weights=_save(nine.state_dict(), tmp_path / "same.pt"))


def test_rank_takes_a_torchvision_rgb_checkpoint_on_the_default_grey_data(tmp_path, capsys):
    path = _save(_classifier("tv:resnet18").state_dict(), tmp_path / "resnet18.pth")
    out = tmp_path / "run"
    assert main(["rank", "--model", "tv:resnet18", "--weights", path, "--layer", "layer4", "--method", "flip",
                 "--preset", "smoke", "--no-progress", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "poschan: note: weights" in err and "3 input channels" in err
    assert json.loads((out / "ranking.json").read_text())["channels"] == 512
    with pytest.raises(UserError, match="pickled Python objects"):
        _build("tv:resnet18", weights=_save(_classifier("tv:resnet18"), tmp_path / "pickled.pth"))


def test_input_norm_is_the_architectures_own_for_three_channels():
    assert _build("tv:resnet18").input_norm == (IMAGENET_MEAN, IMAGENET_STD)
    assert _build("tv:resnet18", in_chans=1).input_norm is None
    pytest.importorskip("timm")
    assert _build("timm:resnet18").input_norm == (IMAGENET_MEAN, IMAGENET_STD)
    assert _build("timm:resnet18", in_chans=1).input_norm is None


@pytest.mark.parametrize("name", ["tv:resnet18", "timm:resnet18"])
def test_rank_runs_on_a_classifier_checkpoint_and_an_rgb_folder(tmp_path, name, capsys):
    folder = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for i in range(4):
            (folder / split / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / split / f"c{i % 2}/{i}.png")
    path = _save(_classifier(name).state_dict(), tmp_path / "classifier.pth")
    out = tmp_path / "out"
    code = main(["rank", "--preset", "smoke", "--no-progress", "--model", name, "--weights", path,
                 "--data", f"folder:{folder}", "--layer", "stage4", "--out", str(out)])
    assert code == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "fc.bias, fc.weight" in line]
    assert len(warned) == 1 and warned[0].startswith("poschan: warning (UserWarning): ")  # one line
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    assert metrics["channels"] == 512 and metrics["n_images"] == 4
