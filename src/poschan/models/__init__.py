"""Models: any CNN as a PoolNet (backbone -> feature map, head), padding variants, heads, channel permutation."""

from poschan.models.heads import HEADS, ChannelPermute, GapFcHead, GapNetHead, attach_stage_permute, build_head
from poschan.models.padding import PADDING_MODES, NoPadConv2d, PartialConv2d, convert_padding
from poschan.models.poolnet import PoolNet
from poschan.models.registry import PERMUTES, build_model, list_models
from poschan.models.resnet_paper import resnet18_paper
from poschan.models.vgg import vgg_bn
from poschan.models.weights import load_weights

__all__ = [
    "HEADS", "PADDING_MODES", "PERMUTES", "ChannelPermute", "GapFcHead", "GapNetHead", "NoPadConv2d",
    "PartialConv2d", "PoolNet", "attach_stage_permute", "build_head", "build_model", "convert_padding",
    "list_models", "load_weights", "resnet18_paper", "vgg_bn",
]
