import copy

import pytest
import torch
from torch import nn

from poschan.errors import UserError
from poschan.models.heads import HEADS, ChannelPermute, GapFcHead, GapNetHead, attach_stage_permute, build_head
from poschan.models.poolnet import PoolNet
from poschan.models.resnet_paper import STAGES, resnet18_paper


def _rows(b: int = 4, c: int = 16) -> torch.Tensor:
    """Row i holds 100*i + 0..c-1: every value tells its sample and its channel."""
    return torch.arange(c, dtype=torch.float32) + 100 * torch.arange(b, dtype=torch.float32)[:, None]


def _orders(x: torch.Tensor) -> torch.Tensor:
    return (x - 100 * torch.arange(x.shape[0])[:, None]).long()


def test_shared_permutation_keeps_values_and_is_one_order_for_the_batch():
    torch.manual_seed(0)
    x = _rows()
    out = ChannelPermute()(x)
    assert torch.equal(out.sort(dim=1).values, x)
    orders = _orders(out)
    assert not torch.equal(orders[0], torch.arange(16))
    assert all(torch.equal(orders[i], orders[0]) for i in range(4))


def test_per_sample_permutations_differ_across_samples():
    torch.manual_seed(0)
    x = _rows()
    out = ChannelPermute(per_sample=True)(x)
    assert torch.equal(out.sort(dim=1).values, x)
    orders = _orders(out)
    assert len({tuple(o.tolist()) for o in orders}) == 4


def test_fresh_permutation_each_call_and_active_in_eval():
    torch.manual_seed(0)
    permute, x = ChannelPermute().eval(), _rows(1, 32)
    first, second = permute(x), permute(x)
    assert not torch.equal(first, second)
    assert not torch.equal(first, x)
    torch.manual_seed(0)
    assert torch.equal(permute(x), first)  # global RNG: reproducible under a seed


@pytest.mark.parametrize("per_sample", [False, True])
def test_feature_maps_permute_whole_channels(per_sample):
    torch.manual_seed(0)
    x = torch.randn(3, 8, 5, 5)
    out = ChannelPermute(per_sample)(x)
    for b in range(3):
        for c in range(8):
            matches = [j for j in range(8) if torch.equal(out[b, c], x[b, j])]
            assert len(matches) == 1
    assert ChannelPermute().extra_repr() == "per_sample=False"


def test_gap_fc_head_permutes_the_pooled_vector_before_fc():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4, 4)
    head = GapFcHead(6, 3, permute=ChannelPermute())
    torch.manual_seed(5)
    out = head(x)
    torch.manual_seed(5)
    expected = head.fc(x.mean((2, 3))[:, torch.randperm(6)])
    assert torch.allclose(out, expected)
    plain = GapFcHead(6, 3)
    assert torch.allclose(plain(x), plain.fc(x.mean((2, 3))))


def test_gapnet_logits_are_spatial_means_of_its_conv_channels():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 5)
    head = GapNetHead(6, 4)
    assert head.conv.kernel_size == (3, 3) and head.conv.padding == (1, 1)
    assert not any(isinstance(m, nn.Linear) for m in head.modules())
    assert torch.allclose(head(x), head.conv(x).mean((2, 3)))
    assert head(x).shape == (2, 4)


def test_build_head_kinds_and_errors():
    assert isinstance(build_head("gap-fc", 8, 3), GapFcHead)
    assert isinstance(build_head("gapnet", 8, 3), GapNetHead)
    assert HEADS == ("gap-fc", "gapnet")
    with pytest.raises(UserError, match="gap-fc, gapnet"):
        build_head("fc", 8, 3)
    with pytest.raises(UserError, match="gap-fc"):
        build_head("gapnet", 8, 3, permute=ChannelPermute())


def _model() -> PoolNet:
    torch.manual_seed(0)
    return PoolNet(resnet18_paper(1, width=4), GapFcHead(32, 3), 1, 3, STAGES).eval()


def _stage_io(model: PoolNet):
    """(output of layer1, input of layer2 as layer2 sees it) for one forward."""
    seen = {}
    model.backbone.layer1.register_forward_hook(lambda m, a, out: seen.update(out=out))
    model.backbone.layer2.register_forward_pre_hook(lambda m, args: seen.update(inp=args[0]))
    with torch.no_grad():
        model(torch.randn(2, 1, 32, 32))
    return seen["out"], seen["inp"]


def test_stage_permute_permutes_the_stage_input_and_survives_deepcopy():
    model = _model()
    keys = list(model.state_dict())
    attach_stage_permute(model, "stage2", per_sample=False)
    assert list(model.state_dict()) == keys  # no layer renamed, no parameters added
    for net in (model, copy.deepcopy(model)):
        out, inp = _stage_io(net)
        assert not torch.equal(out, inp)
        assert torch.equal(out.sum((2, 3)).sort(dim=1).values, inp.sum((2, 3)).sort(dim=1).values)
    clone = copy.deepcopy(model)
    hook = next(iter(clone.backbone.layer2._forward_pre_hooks.values()))
    assert hook.__self__ is clone.stage_permute


def test_stage_permute_errors():
    model = _model()
    with pytest.raises(UserError, match="stage1, stage2, stage3, stage4"):
        attach_stage_permute(model, "layer2", per_sample=False)
    attach_stage_permute(model, "stage1", per_sample=True)
    with pytest.raises(UserError, match="already"):
        attach_stage_permute(model, "stage3", per_sample=False)


@pytest.mark.parametrize("per_sample", [False, True])
def test_compiled_permutation_draws_what_eager_draws_for_every_batch_size(per_sample):
    """A batch of a new size recompiles with a symbolic size (an epoch's last batch); the permutation still runs
    eagerly from the global RNG stream, so compiled outputs equal eager ones draw for draw."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3), ChannelPermute(per_sample), nn.Conv2d(6, 4, 1)).eval()
    compiled = torch.compile(model)
    for batch in (5, 5, 3, 5):
        x = torch.randn(batch, 1, 8, 8)
        torch.manual_seed(batch)
        eager = model(x)
        torch.manual_seed(batch)
        assert torch.allclose(compiled(x), eager, atol=1e-6)
