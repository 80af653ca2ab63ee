"""DeepLabv3-style segmentation networks over a dilated backbone, answering one contract.

``SegNet``: ``features(x)`` -> the backbone's (B, C, h, w) feature map (the layer ``feature_layer``, where
position channels are ranked and masked), ``decode(f, size)`` -> (B, K, H, W) logits, ``forward = decode ∘
features``. Models:

- ``resnet18-paper``: the paper's ResNet-18 (width multiplier) with its last ``dilate_last`` stages dilated
  (output stride 8 with 1) and a DeepLabv3 head: torchvision's ASPP (width ``aspp_channels``, ``atrous_rates``)
  + 3×3 conv-BN-ReLU + 1×1 classifier, as torchvision's DeepLabHead (whose width is fixed at 256).
- ``efficientnet-lite0``: EfficientNet-Lite0's stem and blocks up to the end of its output-stride-16 group
  (112 channels at H/16), its packaged ImageNet weights loaded with ``pretrained``, and the same head; it takes
  3 channels normalised as those weights expect (``seg_input``).
- ``tv:deeplabv3_resnet50``: torchvision's DeepLabv3-ResNet50 (no auxiliary head, no download); user weights by
  path, with torchvision's key names (``classifier.*`` is read as ``head.*``; ``aux_classifier.*`` ignored).

Any other segmentation network is a ``Segmenter``: a module whose forward gives (B, K, H, W) logits (or a dict
with key "out", as torchvision's segmentation models return), the layer whose channels are ranked and masked, and
how images enter it. ``load_segmenter`` builds one from a `seg-train` checkpoint, a torchvision segmentation model
(``tv:deeplabv3_resnet50``, ``tv:deeplabv3_resnet101``, ``tv:fcn_resnet50``, ``tv:lraspp_mobilenet_v3_large``;
never downloaded, weights by path) or a user's ``FILE.py:factory``: the one way every command gets a segmenter,
so a ranking's weights fingerprint matches the module a later evaluation builds from the same arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from poschan.data.sources import IMAGENET_MEAN, IMAGENET_STD
from poschan.errors import UserError
from poschan.models.padding import convert_padding
from poschan.models.registry import LITE_NORM, efficientnet_lite, lite_stage_ends, load_factory
from poschan.models.resnet_paper import resnet18_paper
from poschan.models.weights import load_state, read_state_dict, weights_fingerprint
from poschan.results import read_tensor_file
from poschan.runtime import seeded_torch_rng

# torchvision segmentation models `load_segmenter` builds (weights=None, weights_backbone=None: never a download)
# and the layer ranked and masked by default: the backbone's last stage (lraspp: block 16 of MobileNetV3's
# features, 960 channels at output stride 16, the "high" input of the LR-ASPP head).
TV_SEGMENTERS = {"deeplabv3_resnet50": "backbone.layer4", "deeplabv3_resnet101": "backbone.layer4",
                 "fcn_resnet50": "backbone.layer4", "lraspp_mobilenet_v3_large": "backbone.16"}
TV_SEGMENTER_NAMES = tuple(f"tv:{arch}" for arch in TV_SEGMENTERS)  # as --model names them
IMAGENET_NORM = (IMAGENET_MEAN, IMAGENET_STD)  # the input normalisation of torchvision's segmentation models
InputNorm = tuple[tuple[float, ...], tuple[float, ...]]
# How images enter each SegSpec model: (input channels, None: the data's; normalisation, None: the data's own).
# efficientnet-lite0 takes the statistics its ImageNet weights were trained with, with or without them loaded
# (as registry._rgb_norm argues: they belong to the architecture); the others are trained here from scratch.
_SEG_INPUTS: dict[str, tuple[int | None, InputNorm | None]] = {
    "resnet18-paper": (None, None), "efficientnet-lite0": (3, LITE_NORM), "tv:deeplabv3_resnet50": (3, None)}
SEG_MODELS = tuple(_SEG_INPUTS)


@dataclass
class SegSpec:
    """Everything needed to rebuild a segmentation model (saved in its checkpoint); ``width`` and ``dilate_last``:
    resnet18-paper only."""

    model: str = "resnet18-paper"
    num_classes: int = 11
    in_chans: int = 1
    width: int = 16
    padding: str = "zeros"
    dilate_last: int = 1
    aspp_channels: int = 64
    atrous_rates: list[int] = field(default_factory=lambda: [2, 4, 6])

    def validate(self) -> None:
        if self.model not in SEG_MODELS:
            raise UserError(f"unknown segmentation model {self.model!r}; allowed: {', '.join(SEG_MODELS)}")
        chans = seg_input(self.model)[0]
        if chans is not None and self.in_chans != chans:
            raise UserError(f"{self.model} takes {chans} input channels, got in_chans={self.in_chans}")
        for key in ("num_classes", "in_chans", "width", "aspp_channels"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not self.atrous_rates or min(self.atrous_rates) < 1:
            raise UserError(f"atrous_rates must be positive dilation rates, got {self.atrous_rates}")


def seg_input(model: str) -> tuple[int | None, InputNorm | None]:
    """(input channels, input normalisation (mean, std)) that SegSpec model ``model`` takes; None: the data's own."""
    if model not in _SEG_INPUTS:
        raise UserError(f"unknown segmentation model {model!r}; allowed: {', '.join(SEG_MODELS)}")
    return _SEG_INPUTS[model]


def deeplab_head(in_channels: int, num_classes: int, width: int, atrous_rates: Sequence[int]) -> nn.Sequential:
    """torchvision's DeepLabHead layout with a chosen ASPP width."""
    from torchvision.models.segmentation.deeplabv3 import ASPP

    return nn.Sequential(ASPP(in_channels, list(atrous_rates), width), nn.Conv2d(width, width, 3, padding=1, bias=False),
                         nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, num_classes, 1))


class SegNet(nn.Module):
    """Backbone (image -> feature map at ``feature_layer``) + head (feature map -> logits at input size)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, spec: SegSpec, feature_layer: str = "backbone"):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.spec = spec
        self.feature_layer = feature_layer

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def features(self, x: Tensor) -> Tensor:
        out = self.backbone(x)
        return out["out"] if isinstance(out, dict) else out

    def decode(self, features: Tensor, size: Sequence[int]) -> Tensor:
        """(B, K, *size) logits from a feature map (bilinear up-sampling, as torchvision's DeepLabV3)."""
        return F.interpolate(self.head(features), size=tuple(size), mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.features(x), x.shape[-2:])


class LiteTrunk(nn.Module):
    """EfficientNet-Lite0 (``registry.efficientnet_lite``) cut after its output-stride-16 group: the stem and
    blocks 0..10 give the (B, 112, H/16, W/16) map. Blocks run without drop-connect (stochastic depth)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        # Cut rather than dilated (the last stride-2 block made stride 1, later depthwise convs dilated, as DeepLab
        # does to ResNets): every kept pretrained weight reads features at the spacing it was trained on, while
        # dilated stride-32 kernels would not (on 96-px scenes a 5x5 kernel dilated by 2 spans 9 pixels of a 6x6
        # map, mostly padding); and the trunk is the cheaper one.
        del net._blocks[lite_stage_ends(net)[2] + 1:], net._conv_head, net._bn1
        self.net = net
        self.channels: int = net._blocks[-1]._block_args.output_filters

    def forward(self, x: Tensor) -> Tensor:
        x = self.net._swish(self.net._bn0(self.net._conv_stem(x)))
        for block in self.net._blocks:
            x = block(x)
        return x


def build_segmenter(spec: SegSpec, *, pretrained: bool = False) -> SegNet:
    """A freshly initialised SegNet for ``spec`` (seed the global RNG before for reproducible weights); ``pretrained``
    (efficientnet-lite0 only) loads the packaged ImageNet weights into its backbone."""
    spec.validate()
    if pretrained and spec.model != "efficientnet-lite0":
        raise UserError(f"no pretrained weights are available for {spec.model!r} offline (only efficientnet-lite0)")
    if spec.model == "resnet18-paper":
        backbone = resnet18_paper(spec.in_chans, spec.width, spec.dilate_last)
        channels = spec.width * 8
        model = SegNet(backbone, deeplab_head(channels, spec.num_classes, spec.aspp_channels, spec.atrous_rates),
                       spec)
    elif spec.model == "efficientnet-lite0":
        trunk = LiteTrunk(efficientnet_lite("efficientnet-lite0", pretrained=pretrained,
                                            plain_convs=spec.padding != "zeros"))
        model = SegNet(trunk, deeplab_head(trunk.channels, spec.num_classes, spec.aspp_channels, spec.atrous_rates),
                       spec)
    else:
        from torchvision.models.segmentation import deeplabv3_resnet50

        net = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=spec.num_classes, aux_loss=False)
        # IntermediateLayerGetter returns a dict; its layer4 is the (B, 2048, h, w) map ranked and masked.
        model = SegNet(net.backbone, net.classifier, spec, feature_layer="backbone.layer4")
    convert_padding(model, spec.padding)
    return model


def load_segmenter_state(model: SegNet, state: dict[str, Tensor], source: str) -> None:
    """Load a state dict of ``model`` (torchvision key names accepted); mismatches are one-line UserErrors."""
    renamed = {("head." + k.removeprefix("classifier.") if k.startswith("classifier.") else k): v
               for k, v in state.items() if not k.startswith("aux_classifier.")}
    load_state(model, renamed, source)


def spec_from_dict(d: dict, source: str) -> SegSpec:
    """A SegSpec from a checkpoint's ``spec`` entry; unknown or missing fields are one-line UserErrors."""
    try:
        spec = SegSpec(**d)
    except TypeError as err:
        raise UserError(f"{source}: not a poschan segmentation checkpoint ({err})") from None
    spec.validate()
    return spec


# ---- any segmentation network ------------------------------------------------------------------------------------

@dataclass
class Segmenter:
    """A segmentation network ready to evaluate: ``module(x)`` gives (B, K, H, W) logits (or ``{"out": logits}``);
    ``layer`` names the layer whose channels are ranked and masked; images enter with ``in_chans`` channels,
    normalised with ``input_norm`` ((mean, std); None: the data's own normalisation, as the model was trained).
    ``meta``: the model and data settings a `seg-train` checkpoint records (None for other models)."""

    module: nn.Module
    layer: str
    name: str
    num_classes: int
    in_chans: int
    input_norm: InputNorm | None = None
    meta: dict | None = None
    source: str = ""

    def fingerprint(self) -> str:
        """The weights fingerprint a ranking of this module records (``weights_fingerprint(self.module)``)."""
        return weights_fingerprint(self.module)


def logits_of(output: Tensor | dict) -> Tensor:
    """The (B, K, H, W) logits of a segmenter's forward output (a tensor, or a dict with key "out")."""
    if isinstance(output, dict):
        if "out" not in output:
            raise UserError(f"the segmenter returned a dict without key 'out' (keys {', '.join(map(str, output))})")
        output = output["out"]
    if not isinstance(output, Tensor) or output.dim() != 4:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise UserError(f"a segmenter must return (B, K, H, W) logits or a dict with key 'out', got {shape}")
    return output


def first_conv_channels(module: nn.Module) -> int | None:
    """The input channels of ``module``'s first convolution (None without one)."""
    return next((m.in_channels for m in module.modules() if isinstance(m, nn.Conv2d)), None)


def build_segmentation_model(name: str, num_classes: int, weights: str | Path | None = None, *,
                             layer: str | None = None) -> Segmenter:
    """A segmentation network by name, with ``num_classes`` outputs, weights from a state-dict file (else random
    initialisation: seed the global RNG before, or use ``load_segmenter``).

    ``tv:NAME`` (NAME in TV_SEGMENTERS): torchvision's model built with ``weights=None, weights_backbone=None``
    and no auxiliary head (``aux_classifier.*`` keys of a weights file are dropped); it takes ImageNet-normalised
    RGB; ``layer`` defaults to TV_SEGMENTERS[NAME]. ``FILE.py:FACTORY`` / ``MODULE:FACTORY``: the module
    ``FACTORY()`` returns (see ``models.registry.load_factory``), whose forward must give (B, K, H, W) logits (or a
    dict with key "out"); ``layer`` is required; its input channels are those of its first convolution and images
    enter with the data's normalisation.
    """
    if num_classes < 1:
        raise UserError(f"num_classes must be >= 1, got {num_classes}")
    if name.startswith("tv:"):
        arch = name.removeprefix("tv:")
        if arch not in TV_SEGMENTERS:
            raise UserError(f"unknown torchvision segmentation model {name!r}; allowed: "
                            f"{', '.join('tv:' + a for a in TV_SEGMENTERS)}")
        import torchvision.models.segmentation as tvseg

        module = getattr(tvseg, arch)(weights=None, weights_backbone=None, num_classes=num_classes)
        in_chans, norm, layer = 3, IMAGENET_NORM, layer or TV_SEGMENTERS[arch]
    elif ":" in name:
        if not layer:
            raise UserError(f"model {name!r} needs --layer NAME: the layer whose channels are ranked and masked "
                            "(see `poschan layers`)")
        module = load_factory(name)
        in_chans, norm = first_conv_channels(module) or 3, None
    else:
        raise UserError(f"unknown segmentation model {name!r}; use a seg-train checkpoint, "
                        f"{', '.join('tv:' + a for a in TV_SEGMENTERS)} or FILE.py:FACTORY")
    if weights is not None:
        load_state(module, {k: v for k, v in read_state_dict(weights).items() if not k.startswith("aux_classifier.")},
                   weights)
    return Segmenter(module, layer, name, num_classes, in_chans, norm, None, str(weights or name))


def load_segmentation_checkpoint(path: str | Path) -> Segmenter:
    """The SegNet of a checkpoint written by `poschan seg-train` (pickled code and other files refused); its
    ``meta`` holds the data settings it was trained on."""
    if not Path(path).is_file():
        raise UserError(f"checkpoint {str(path)!r} not found")
    state = read_tensor_file(path, "checkpoint")
    meta = state.get("meta") if isinstance(state, dict) else None
    if not isinstance(meta, dict) or not {"segmentation", "scenes"} <= set(meta) or not isinstance(state.get("model"),
                                                                                                   dict):
        raise UserError(f"{path} is not a poschan segmentation checkpoint (written by `poschan seg-train`)")
    spec = spec_from_dict(meta["segmentation"], str(path))
    model = build_segmenter(spec)
    load_segmenter_state(model, state["model"], str(path))
    return Segmenter(model, model.feature_layer, spec.model, spec.num_classes, spec.in_chans, seg_input(spec.model)[1],
                     meta, str(path))


def load_segmenter(*, checkpoint: str | Path | None = None, model: str | None = None,
                   weights: str | Path | None = None, num_classes: int | None = None, layer: str | None = None,
                   seed: int = 0) -> Segmenter:
    """THE way a command gets a segmenter (in eval mode, gradients off, on the CPU): from a `seg-train`
    ``checkpoint`` (its own classes and data settings; ``layer`` defaults to its feature layer), or by ``model``
    name with ``num_classes`` and optional ``weights`` (see ``build_segmentation_model``). A model without weights
    is randomly initialised as a function of ``seed``. Two calls with the same arguments give modules with the
    same ``weights_fingerprint``, so a ranking made of one is accepted for the other."""
    if (checkpoint is None) == (model is None):
        raise UserError("give a seg-train checkpoint (--checkpoint) or a segmentation model (--model), not both"
                        if checkpoint is not None else
                        "--checkpoint or --model is required: a seg-train checkpoint (e.g. RUN/seed0/checkpoint.pt), "
                        f"{', '.join('tv:' + a for a in TV_SEGMENTERS)} or FILE.py:FACTORY")
    if checkpoint is not None:
        if weights is not None:
            raise UserError("--weights goes with --model; a seg-train checkpoint holds its own weights")
        seg = load_segmentation_checkpoint(checkpoint)
        if layer:
            seg.layer = layer
    else:
        if num_classes is None:
            raise UserError(f"model {model!r} needs num_classes (the classes of the data)")
        with seeded_torch_rng(seed):
            seg = build_segmentation_model(model, num_classes, weights, layer=layer)
    seg.module.eval().requires_grad_(False)
    return seg
