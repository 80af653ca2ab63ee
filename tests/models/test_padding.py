import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poschan.errors import UserError
from poschan.models.padding import PADDING_MODES, NoPadConv2d, PartialConv2d, convert_padding
from poschan.models.resnet_paper import resnet18_paper


def _stack() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 5, padding=2)).eval()


@pytest.mark.parametrize("shift", [(0, 1), (3, 5), (-7, 2), (8, 8)])
def test_circular_padding_makes_pooled_features_roll_invariant(shift):
    torch.manual_seed(1)
    x = torch.randn(2, 1, 16, 16)
    rolled = torch.roll(x, shifts=shift, dims=(2, 3))
    circ = convert_padding(_stack(), "circular")
    zero = _stack()
    with torch.no_grad():
        assert torch.allclose(circ(x).mean((2, 3)), circ(rolled).mean((2, 3)), atol=1e-5)
        assert not torch.allclose(zero(x).mean((2, 3)), zero(rolled).mean((2, 3)), atol=1e-3)


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_every_mode_keeps_resnet18_paper_shapes(mode):
    torch.manual_seed(0)
    x = torch.randn(2, 1, 37, 45)
    reference = resnet18_paper(1, width=8).eval()
    model = convert_padding(resnet18_paper(1, width=8), mode).eval()
    with torch.no_grad():
        assert model(x).shape == reference(x).shape == (2, 64, 3, 3)
    padded = [m for m in model.modules() if isinstance(m, nn.Conv2d) and any(m._reversed_padding_repeated_twice)]
    expected = {"none": NoPadConv2d, "partial": PartialConv2d}.get(mode, nn.Conv2d)
    assert padded and all(type(m) is expected for m in padded)
    if expected is nn.Conv2d:
        assert all(m.padding_mode == mode for m in padded)


def test_conversion_keeps_names_and_parameter_objects():
    model = resnet18_paper(1, width=8)
    params = dict(model.named_parameters())
    keys = list(model.state_dict())
    for mode in ("partial", "none", "circular", "zeros"):
        convert_padding(model, mode)
        assert list(model.state_dict()) == keys
        assert all(p is params[n] for n, p in model.named_parameters())


def test_reconversion_to_zeros_restores_the_original_function():
    torch.manual_seed(0)
    model, x = _stack(), torch.randn(1, 1, 12, 12)
    with torch.no_grad():
        before = model(x)
        after = convert_padding(convert_padding(model, "partial"), "zeros")(x)
    assert torch.equal(before, after)


def test_torch_modes_equal_explicit_pad_then_valid_conv():
    torch.manual_seed(0)
    conv, x = nn.Conv2d(2, 3, 3, padding=1), torch.randn(1, 2, 9, 7)
    for mode in ("circular", "reflect", "replicate"):
        converted = convert_padding(nn.Sequential(conv), mode)[0]
        expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode=mode), conv.weight, conv.bias)
        assert torch.allclose(converted(x), expected, atol=1e-6)


def test_none_is_bilinear_upsampling_then_valid_conv():
    torch.manual_seed(0)
    conv, x = nn.Conv2d(2, 3, 3, padding=1), torch.randn(1, 2, 9, 7)
    converted = convert_padding(nn.Sequential(conv), "none")[0]
    up = F.interpolate(x, size=(11, 9), mode="bilinear", align_corners=False)
    assert torch.allclose(converted(x), F.conv2d(up, conv.weight, conv.bias), atol=1e-6)


@pytest.mark.parametrize("kernel,stride", [(3, 1), (7, 2)])
def test_none_has_no_padding_constant_in_constant_out(kernel, stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, kernel, stride=stride, padding=kernel // 2)
    x = torch.full((1, 1, 15, 15), 3.0)
    with torch.no_grad():
        zero_out = conv(x)
        none_out = convert_padding(conv, "none")(x)
    assert none_out.shape == zero_out.shape
    flat = none_out.flatten(2)
    assert torch.allclose(flat, flat[..., :1].expand_as(flat), atol=1e-5)
    assert not torch.allclose(zero_out, zero_out[..., :1, :1].expand_as(zero_out), atol=1e-3)


@pytest.mark.parametrize("kernel,stride,size", [(3, 1, 6), (7, 2, 9), (5, 1, 5)])
def test_partial_reweights_border_windows_to_full_area(kernel, stride, size):
    conv = nn.Conv2d(1, 1, kernel, stride=stride, padding=kernel // 2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(0.5)
    x = torch.ones(1, 1, size, size)
    with torch.no_grad():
        zero_out = conv(x)
        partial_out = convert_padding(conv, "partial")(x)
    assert torch.allclose(partial_out, torch.full_like(partial_out, kernel * kernel + 0.5))
    assert zero_out[0, 0, 0, 0] < kernel * kernel  # zero padding loses mass at the border


def test_partial_ratio_is_cached_per_size_device_dtype():
    conv = convert_padding(nn.Conv2d(1, 1, 3, padding=1), "partial")
    first = conv._ratio(8, 8, torch.device("cpu"), torch.float32)
    assert conv._ratio(8, 8, torch.device("cpu"), torch.float32) is first
    assert conv._ratio(8, 6, torch.device("cpu"), torch.float32).shape == (1, 1, 8, 6)
    assert first[0, 0, 0, 0] == 9 / 4 and first[0, 0, 3, 3] == 1


def test_unknown_mode_is_refused_with_the_allowed_list():
    with pytest.raises(UserError, match="circular"):
        convert_padding(_stack(), "mirror")


def test_foreign_conv_subclasses_are_left_for_zeros_and_refused_otherwise():
    class SameConv(nn.Conv2d):  # pads inside its own forward
        def forward(self, x):
            return super().forward(F.pad(x, (1, 1, 1, 1)))

    model = nn.Sequential(SameConv(1, 1, 3))
    assert type(convert_padding(model, "zeros")[0]) is SameConv
    with pytest.raises(UserError, match="SameConv"):
        convert_padding(model, "circular")


def test_pooling_layers_are_not_converted():
    model = convert_padding(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(3, 2, padding=1)), "partial")
    assert type(model[1]) is nn.MaxPool2d and model[1].padding == 1
