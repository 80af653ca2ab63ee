"""The paper's ResNet-18 variant: 7x7/2 stem without max-pool, BasicBlocks [2,2,2,2], width multiplier."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv1x1, conv3x3

from poschan.errors import UserError

STAGES = {f"stage{i}": f"layer{i}" for i in range(1, 5)}


def _block(inplanes: int, planes: int, stride: int, dilation: int) -> BasicBlock:
    """torchvision's BasicBlock; its convs are rebuilt dilated when dilation > 1 (it refuses dilation itself)."""
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
    block = BasicBlock(inplanes, planes, stride, downsample)
    if dilation > 1:
        block.conv1 = conv3x3(inplanes, planes, stride, dilation=dilation)
        block.conv2 = conv3x3(planes, planes, dilation=dilation)
    return block


class PaperResNet(nn.Module):
    """conv1 (7x7/2, pad 3) + bn1 + relu, no max-pool, layer1..layer4 of 2 BasicBlocks each (w, 2w, 4w, 8w).

    Output: (B, 8w, H/16, W/16) feature map; each of the last ``dilate_last`` stages trades its
    stride 2 for dilation (output stride 8 with 1, as torchvision's replace_stride_with_dilation).
    """

    def __init__(self, in_chans: int, width: int = 64, dilate_last: int = 0):
        super().__init__()
        if width < 1:
            raise UserError(f"width must be a positive integer, got {width}")
        if not 0 <= dilate_last <= 3:
            raise UserError(f"dilate_last must be 0..3 (stages 2-4 have a stride to replace), got {dilate_last}")
        self.conv1 = nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        inplanes, dilation = width, 1
        for i in range(4):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            first_dilation = dilation
            if i >= 4 - dilate_last:
                dilation, stride = dilation * stride, 1
            layer = nn.Sequential(_block(inplanes, planes, stride, first_dilation), _block(planes, planes, 1, dilation))
            setattr(self, f"layer{i + 1}", layer)
            inplanes = planes

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet18_paper(in_chans: int, width: int = 64, dilate_last: int = 0) -> nn.Module:
    """The paper's ResNet-18 backbone (width 64 = paper, 16 = CPU preset); stages: STAGES."""
    return PaperResNet(in_chans, width, dilate_last)
