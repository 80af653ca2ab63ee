"""DeepLabv3-style segmentation networks over a dilated backbone, answering one contract.

``SegNet``: ``features(x)`` -> the backbone's (B, C, h, w) feature map (the layer ``feature_layer``, where
position channels are ranked and masked), ``decode(f, size)`` -> (B, K, H, W) logits, ``forward = decode ∘
features``. Models:

- ``resnet18-paper``: the paper's ResNet-18 (width multiplier) with its last ``dilate_last`` stages dilated
  (output stride 8 with 1) and a DeepLabv3 head: torchvision's ASPP (width ``aspp_channels``, ``atrous_rates``)
  + 3×3 conv-BN-ReLU + 1×1 classifier, as torchvision's DeepLabHead (whose width is fixed at 256).
- ``tv:deeplabv3_resnet50``: torchvision's DeepLabv3-ResNet50 (no auxiliary head, no download); user weights by
  path, with torchvision's key names (``classifier.*`` is read as ``head.*``; ``aux_classifier.*`` ignored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from poschan.errors import UserError
from poschan.models.padding import convert_padding
from poschan.models.resnet_paper import resnet18_paper

SEG_MODELS = ("resnet18-paper", "tv:deeplabv3_resnet50")


@dataclass
class SegSpec:
    """Everything needed to rebuild a segmentation model (saved in its checkpoint)."""

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
        for key in ("num_classes", "in_chans", "width", "aspp_channels"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not self.atrous_rates or min(self.atrous_rates) < 1:
            raise UserError(f"atrous_rates must be positive dilation rates, got {self.atrous_rates}")


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


def build_segmenter(spec: SegSpec) -> SegNet:
    """A freshly initialised SegNet for ``spec`` (seed the global RNG before for reproducible weights)."""
    spec.validate()
    if spec.model == "resnet18-paper":
        backbone = resnet18_paper(spec.in_chans, spec.width, spec.dilate_last)
        channels = spec.width * 8
        model = SegNet(backbone, deeplab_head(channels, spec.num_classes, spec.aspp_channels, spec.atrous_rates),
                       spec)
    else:
        from torchvision.models.segmentation import deeplabv3_resnet50

        net = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=spec.num_classes, aux_loss=False)
        if spec.in_chans != 3:
            raise UserError(f"tv:deeplabv3_resnet50 takes 3 input channels, got in_chans={spec.in_chans}")
        # IntermediateLayerGetter returns a dict; its layer4 is the (B, 2048, h, w) map ranked and masked.
        model = SegNet(net.backbone, net.classifier, spec, feature_layer="backbone.layer4")
    convert_padding(model, spec.padding)
    return model


def load_segmenter_state(model: SegNet, state: dict[str, Tensor], source: str) -> None:
    """Load a state dict of ``model`` (torchvision key names accepted); mismatches are one-line UserErrors."""
    renamed = {("head." + k.removeprefix("classifier.") if k.startswith("classifier.") else k): v
               for k, v in state.items() if not k.startswith("aux_classifier.")}
    try:
        model.load_state_dict(renamed)
    except RuntimeError as err:
        reason = " ".join(str(err).split())[:300]
        raise UserError(f"weights {source!r} do not fit {model.spec.model}: {reason}") from None


def spec_from_dict(d: dict, source: str) -> SegSpec:
    """A SegSpec from a checkpoint's ``spec`` entry; unknown or missing fields are one-line UserErrors."""
    try:
        spec = SegSpec(**d)
    except TypeError as err:
        raise UserError(f"{source}: not a poschan segmentation checkpoint ({err})") from None
    spec.validate()
    return spec
