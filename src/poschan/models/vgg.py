"""VGG-11/16 with batch norm (torchvision's make_layers/cfgs) as a feature-map backbone, width-scaled."""

from __future__ import annotations

from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from poschan.errors import UserError
from poschan.models.poolnet import set_in_chans

_CFG = {11: "A", 16: "D"}


def vgg_bn(depth: int, in_chans: int, width: int = 64) -> nn.Sequential:
    """VGG-``depth`` BN feature extractor (torchvision's ``features``, ending with its 5th max-pool).

    Channel counts are scaled by width/64 (64 = standard VGG). Output: (B, 8w, H/32, W/32).
    """
    if depth not in _CFG:
        raise UserError(f"VGG depth must be one of {sorted(_CFG)}, got {depth}")
    if width < 1:
        raise UserError(f"width must be a positive integer, got {width}")
    cfg = [v if v == "M" else max(1, v * width // 64) for v in cfgs[_CFG[depth]]]
    features = make_layers(cfg, batch_norm=True)
    set_in_chans(features, in_chans)  # make_layers assumes 3 input channels
    return features


def vgg_stages(features: nn.Sequential) -> dict[str, str]:
    """stage1..stage4 -> the first four max-pools: a stage's input is block k's output (permuting it
    equals permuting after block k), its output is block k's feature map, downsampled."""
    pools = [name for name, m in features.named_children() if isinstance(m, nn.MaxPool2d)]
    return {f"stage{i}": name for i, name in enumerate(pools[:4], start=1)}
