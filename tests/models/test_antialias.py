import pytest
import torch
from timm.layers import BlurPool2d
from torch import nn

from poschan.errors import UserError
from poschan.models.antialias import antialias
from poschan.models.registry import build_model


def _strided(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d))
            and m.stride in ((2, 2), 2)]


@pytest.mark.parametrize("side", [32, 37, 29])
def test_resnet_keeps_shapes_and_keys_and_loses_every_stride_2_conv(side):
    torch.manual_seed(0)
    original = build_model("resnet18-paper", 10, 1, width=4).eval()
    model = build_model("resnet18-paper", 10, 1, width=4)
    model.load_state_dict(original.state_dict())
    assert len(_strided(model)) == 7  # stem + (conv1, downsample) of stages 2-4
    antialias(model).eval()
    x = torch.randn(2, 1, side, side)
    with torch.no_grad():
        assert model.features(x).shape == original.features(x).shape
        assert model(x).shape == original(x).shape == (2, 10)
    assert _strided(model) == []
    assert sum(isinstance(m, BlurPool2d) for m in model.modules()) == 7
    assert model.state_dict().keys() == original.state_dict().keys()
    model.load_state_dict(original.state_dict())  # the original weights load as they are


def test_vgg_max_pools_become_dense_max_pool_plus_blur():
    torch.manual_seed(0)
    original = build_model("vgg11-bn", 10, 1, width=4).eval()
    model = antialias(build_model("vgg11-bn", 10, 1, width=4)).eval()
    x = torch.randn(2, 1, 64, 64)  # reflect-padded blur needs maps of at least 2 px before each pool
    with torch.no_grad():
        assert model.features(x).shape == original.features(x).shape
    assert _strided(model) == [] and any(isinstance(m, BlurPool2d) for m in model.modules())


def test_blurred_stride_2_conv_no_longer_aliases_a_one_pixel_shift():
    # a 1x1 stride-2 identity conv keeps an impulse at an even position and drops it at an odd one;
    # with the [1, 2, 1] / 4 blur both positions keep 1/4 of the impulse (1/2 per axis)
    def net() -> nn.Sequential:
        conv = nn.Conv2d(1, 1, 1, stride=2, bias=False)
        nn.init.ones_(conv.weight)
        return nn.Sequential(conv)

    plain, blurred = net(), antialias(net())
    totals = []
    for model in (plain, blurred):
        for at in (6, 7):
            x = torch.zeros(1, 1, 16, 16)
            x[..., at, at] = 1
            with torch.no_grad():
                totals.append(float(model(x).sum()))
    assert totals == pytest.approx([1.0, 0.0, 0.25, 0.25])


def test_bad_filter_or_nothing_to_blur_is_a_user_error():
    with pytest.raises(UserError, match="odd"):
        antialias(nn.Sequential(nn.Conv2d(1, 1, 3, stride=2)), filt_size=4)
    with pytest.raises(UserError, match="no stride-2"):
        antialias(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)))
