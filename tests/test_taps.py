import copy

import pytest
import torch
from torch import nn

from poschan.errors import UserError
from poschan.taps import capture, get_layer, layer_names, layer_shapes, mask_channels, permute_channels, pooled_features


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def test_layer_names_and_close_match():
    net = small_net()
    assert layer_names(net)[:3] == ["0", "1", "2"] and "2.0" in layer_names(net)
    with pytest.raises(UserError, match=r"closest: .*2\.0"):
        get_layer(net, "2.O")


def test_capture_and_pooled_match_manual_forward():
    net = small_net()
    x = torch.randn(5, 1, 8, 8)
    inner = net[2](net[1](net[0](x)))
    with capture(net, ["2"]) as store:
        net(x)
    assert torch.equal(store["2"], inner)
    pooled = pooled_features(net, x, ["0", "2"])
    assert torch.allclose(pooled["2"], inner.mean((2, 3)))
    assert pooled["0"].shape == (5, 4)


def test_pooled_rejects_non_feature_map():
    with pytest.raises(UserError, match="not a \\(B, C, H, W\\) feature map"):
        pooled_features(small_net(), torch.randn(2, 1, 8, 8), ["5"])


def test_mask_zero_and_mean_then_model_unchanged():
    net = small_net()
    before = copy.deepcopy(net.state_dict())
    x = torch.randn(3, 1, 8, 8)
    clean = net(x)
    with capture(net, ["2"]) as store, mask_channels(net, "2", [1, 4]):
        net(x)
    assert store["2"][:, [1, 4]].abs().sum() == 0 and store["2"][:, 0].abs().sum() > 0
    means = torch.arange(6.0)
    with capture(net, ["2"]) as store, mask_channels(net, "2", [2], mode="mean", means=means):
        net(x)
    assert torch.all(store["2"][:, 2] == 2.0)
    assert torch.equal(net(x), clean)  # hooks removed
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(m._forward_hooks for m in net.modules())


def test_mask_no_channel_is_bit_identical():
    net = small_net()
    x = torch.randn(2, 1, 8, 8)
    with mask_channels(net, "2", []):
        assert torch.equal(net(x), small_net()(x))


def test_mask_bad_inputs():
    net = small_net()
    with pytest.raises(UserError, match="out of range"), mask_channels(net, "2", [6]):
        net(torch.randn(1, 1, 8, 8))
    with pytest.raises(UserError, match="unknown mask mode"), mask_channels(net, "2", [0], mode="noise"):
        pass


def test_layer_shapes_in_order():
    shapes = dict(layer_shapes(small_net(), torch.randn(1, 1, 8, 8)))
    assert shapes["2.0"] == (1, 6, 8, 8) and shapes["5"] == (1, 3)


def test_permute_input_changes_order_only_inside_block():
    net = small_net()
    x = torch.randn(4, 1, 8, 8)
    torch.manual_seed(1)
    with capture(net, ["3"]) as store:
        net(x)
    pooled = store["3"].flatten(1)
    seen = []
    net[5].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with permute_channels(net, "5", per_sample=True, where="input"):
        net(x)
    permuted = seen[-1]
    assert not torch.equal(permuted, pooled)
    assert torch.equal(permuted.sort(dim=1).values, pooled.sort(dim=1).values)
    net(x)
    assert torch.equal(seen[-1], pooled)


def nested_net() -> nn.Module:
    """The masked layer "1.0" is followed by a 1×1 conv with bias inside its parent "1": a mask of the wrong layer
    (the parent, the model, the layer's input) changes the output."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1),
                         nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(6, 6, 1)),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_mask_edits_exactly_the_named_nested_layer(mode):
    net, x = nested_net(), torch.randn(3, 1, 8, 8)
    means = torch.linspace(-2.0, 3.0, 6)
    stem = net[0](x)
    inner = net[1][0](stem)
    edited = inner.clone()
    for c in (1, 4):  # recomputed by hand: the channels of "1.0"'s output replaced
        edited[:, c] = 0.0 if mode == "zero" else means[c]
    expected = net[4](net[3](net[2](net[1][1](edited))))
    with capture(net, ["0", "1.0", "1"]) as store, mask_channels(net, "1.0", [1, 4], mode=mode, means=means):
        out = net(x)
    torch.testing.assert_close(store["0"], stem, rtol=0, atol=0)  # layers before it untouched
    torch.testing.assert_close(store["1.0"], edited, rtol=0, atol=0)  # observers of the layer see the edit
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(out, net(x), atol=1e-3)  # the mask matters here, so a mask elsewhere is seen


def test_permute_channels_output_is_a_seeded_channel_permutation_removed_on_exit():
    net = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU())
    x = torch.randn(4, 1, 8, 8)
    plain = net(x)
    with permute_channels(net, "0", generator=torch.Generator().manual_seed(3)):
        a = net(x)
    with permute_channels(net, "0", generator=torch.Generator().manual_seed(3)):
        b = net(x)
    assert torch.equal(a, b)  # the generator decides the permutation
    order = [int((plain[0] - a[0, c]).abs().flatten(1).sum(1).argmin()) for c in range(6)]
    assert sorted(order) == list(range(6)) and order != list(range(6))
    assert torch.equal(a, plain[:, order])  # one permutation shared by the batch
    with permute_channels(net, "0", per_sample=True, generator=torch.Generator().manual_seed(0)):
        c = net(x)
    orders = [[int((plain[i] - c[i, k]).abs().flatten(1).sum(1).argmin()) for k in range(6)] for i in range(4)]
    assert all(torch.equal(c[i], plain[i, o]) for i, o in enumerate(orders)) and len({tuple(o) for o in orders}) > 1
    assert torch.equal(net(x), plain)


def test_resolve_layers_maps_stage_and_backbone_relative_names():
    from poschan.models.registry import build_model
    from poschan.taps import resolve_layers

    model = build_model("resnet18-paper", num_classes=3, in_chans=1, width=4)
    assert resolve_layers(model, ["stage4", "layer3", "backbone.layer2", "layer3"]) == [
        "backbone.layer4", "backbone.layer3", "backbone.layer2"]
    with pytest.raises(UserError, match="layer9"):
        resolve_layers(model, ["layer9"])
