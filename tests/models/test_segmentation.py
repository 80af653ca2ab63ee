"""Segmentation models: shapes, masking through the taps, the cached-feature path, a planted left-half channel."""

import pytest
import torch
from torch import nn

from poschan.control.ablation import SegEval
from poschan.data.regions import region_mask
from poschan.errors import UserError
from poschan.metrics.segmentation import confusion, miou
from poschan.models.segmentation import (
    SegNet,
    SegSpec,
    build_segmenter,
    load_segmenter_state,
    spec_from_dict,
)
from poschan.models.weights import weights_fingerprint as fingerprint
from poschan.taps import mask_channels, masked

SMALL = SegSpec(width=4, aspp_channels=8, atrous_rates=[1, 2])


def small_model(padding: str = "zeros") -> SegNet:
    torch.manual_seed(0)
    return build_segmenter(SegSpec(width=4, aspp_channels=8, atrous_rates=[1, 2], padding=padding)).eval()


@pytest.mark.parametrize("padding", ["zeros", "circular", "none", "partial"])
def test_output_is_logits_at_input_size(padding):
    model = small_model(padding)
    x = torch.randn(2, 1, 48, 48)
    assert model(x).shape == (2, 11, 48, 48)
    assert model.features(x).shape == (2, 32, 6, 6)  # output stride 8 with the last stage dilated


def test_masking_hook_leaves_model_unchanged_and_empty_mask_is_bit_exact():
    model = small_model()
    x = torch.randn(3, 1, 40, 40)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        clean = model(x)
        with mask_channels(model, model.feature_layer, [0, 5, 7]):
            edited = model(x)
        with mask_channels(model, model.feature_layer, []):
            nothing = model(x)
        after = model(x)
        cached = model.decode(masked(model.features(x), torch.empty(0, dtype=torch.long)), x.shape[-2:])
    assert not torch.equal(clean, edited)
    assert torch.equal(clean, nothing) and torch.equal(clean, after) and torch.equal(clean, cached)
    assert all(torch.equal(before_state[k], v) for k, v in model.state_dict().items())
    assert not model.backbone._forward_hooks


def test_cached_features_match_the_hooked_network():
    model = small_model()
    x = torch.randn(4, 1, 40, 40)
    with torch.no_grad(), mask_channels(model, model.feature_layer, [1, 2, 3]):
        hooked = model(x)
    with torch.no_grad():
        cached = model.decode(masked(model.features(x), torch.tensor([1, 2, 3])), x.shape[-2:])
    assert torch.equal(hooked, cached)


class LeftRightHead(nn.Module):
    """Class 1 wins on the left half iff channel 0 is on, on the right half iff channel 1 is on."""

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        w = f.shape[-1]
        left = torch.arange(w) < w // 2
        on = torch.where(left, f[:, 0], f[:, 1])
        return torch.stack([torch.full_like(on, 0.5), on], dim=1)


def planted_model() -> SegNet:
    backbone = nn.Conv2d(1, 2, 1)
    nn.init.zeros_(backbone.weight)
    nn.init.ones_(backbone.bias)
    return SegNet(backbone, LeftRightHead(), SegSpec(num_classes=2)).eval()


def test_planted_left_channel_changes_only_the_left_half():
    model = planted_model()
    x = torch.zeros(2, 1, 16, 16)
    labels = torch.ones(2, 16, 16, dtype=torch.long)
    with torch.no_grad():
        clean = model(x).argmax(1)
        with mask_channels(model, model.feature_layer, [0]):
            attacked = model(x).argmax(1)
    left = region_mask("left", 16)
    assert torch.equal(clean, labels)
    assert (attacked[:, left] == 0).all() and torch.equal(attacked[:, ~left], clean[:, ~left])
    for fast in (True, False):  # cached features decoded, and the masking hook
        ev = SegEval(model, model.feature_layer, (x, labels), batch_size=2, device="cpu", fast=fast)
        assert (ev.features is not None) == fast
        meter = ev.meter([0], regions={"in": left, "out": ~left})
        assert meter.miou("in") == 0.0 and meter.miou("out") == 1.0 and 0 < meter.miou() < 1


def test_whole_image_region_miou_equals_full_miou():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randint(0, 4, (3, 8, 8), generator=g), torch.randint(0, 4, (3, 8, 8), generator=g)
    whole = torch.ones(8, 8, dtype=torch.bool)
    assert miou(confusion(pred, target, 4, whole)) == miou(confusion(pred, target, 4))


def test_state_round_trip_fingerprint_and_torchvision_names():
    a, b = small_model(), small_model()
    assert fingerprint(a) == fingerprint(b)
    with torch.no_grad():
        b.head[-1].bias.add_(1)
    assert fingerprint(a) != fingerprint(b)
    renamed = {k.replace("head.", "classifier.", 1): v for k, v in b.state_dict().items()}
    renamed["aux_classifier.0.weight"] = torch.zeros(1)
    load_segmenter_state(a, renamed, "tv-style")
    assert fingerprint(a) == fingerprint(b)


def test_bad_specs_and_weights():
    with pytest.raises(UserError, match="unknown segmentation model"):
        build_segmenter(SegSpec(model="unet"))
    with pytest.raises(UserError, match="atrous_rates"):
        build_segmenter(SegSpec(atrous_rates=[0]))
    with pytest.raises(UserError, match="not a poschan segmentation checkpoint"):
        spec_from_dict({"model": "resnet18-paper", "colour": "red"}, "x.pt")
    with pytest.raises(UserError, match="do not fit"):
        load_segmenter_state(small_model(), {"head.0.weight": torch.zeros(1)}, "w.pt")


def test_torchvision_deeplabv3_resnet50_builds_offline():
    model = build_segmenter(SegSpec(model="tv:deeplabv3_resnet50", in_chans=3, num_classes=5)).eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        assert model(x).shape == (1, 5, 64, 64)
        assert model.features(x).shape[1] == 2048
        with mask_channels(model, model.feature_layer, list(range(100))):
            assert model(x).shape == (1, 5, 64, 64)


@pytest.mark.parametrize("name", ["tv:deeplabv3_resnet50", "tv:deeplabv3_resnet101", "tv:fcn_resnet50",
                                  "tv:lraspp_mobilenet_v3_large"])
def test_torchvision_segmenters_build_offline_with_their_default_layer(name):
    from poschan.models.segmentation import IMAGENET_NORM, TV_SEGMENTERS, build_segmentation_model, logits_of
    from poschan.taps import capture

    seg = build_segmentation_model(name, 5)
    assert (seg.layer, seg.in_chans, seg.input_norm) == (TV_SEGMENTERS[name[3:]], 3, IMAGENET_NORM)
    assert not hasattr(seg.module, "aux_classifier") or seg.module.aux_classifier is None
    with torch.no_grad(), capture(seg.module.eval(), [seg.layer]) as store:
        out = logits_of(seg.module(torch.randn(1, 3, 64, 64)))
    assert out.shape == (1, 5, 64, 64) and store[seg.layer].dim() == 4
    assert store[seg.layer].shape[1] == (960 if "lraspp" in name else 2048)


def test_load_segmenter_same_arguments_same_fingerprint(tmp_path):
    from poschan.models.segmentation import load_segmenter

    factory = tmp_path / "seg_factory.py"
    factory.write_text("from torch import nn\n\ndef make():\n"
                       "    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))\n")
    name = f"{factory}:make"
    a, b = (load_segmenter(model=name, num_classes=3, layer="1", seed=0) for _ in range(2))
    assert a.fingerprint() == b.fingerprint() != load_segmenter(model=name, num_classes=3, layer="1", seed=1).fingerprint()
    assert (a.in_chans, a.input_norm, a.layer) == (1, None, "1") and not a.module.training
    state = {**a.module.state_dict(), "aux_classifier.0.weight": torch.zeros(1)}  # an auxiliary head is dropped
    torch.save(state, tmp_path / "w.pt")
    loaded = load_segmenter(model=name, num_classes=3, layer="1", weights=tmp_path / "w.pt", seed=7)
    assert loaded.fingerprint() == a.fingerprint()
    with pytest.raises(UserError, match="needs --layer"):
        load_segmenter(model=name, num_classes=3)
    with pytest.raises(UserError, match="--checkpoint or --model is required"):
        load_segmenter()
    with pytest.raises(UserError, match="unknown torchvision segmentation model 'tv:unet'"):
        load_segmenter(model="tv:unet", num_classes=3)
