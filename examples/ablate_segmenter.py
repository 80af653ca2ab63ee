"""Does a segmentation network rely on its position channels? Rank the channels of a torchvision DeepLabv3's
``backbone.layer4`` on scenes, zero its top-N position channels against N random ones (``ablation_curve``), and
zero the channels of the left half (``region_attack``): mIoU inside vs outside the region.

    python examples/ablate_segmenter.py [--weights deeplab.pt] [--test 100] [--side 96]

Without --weights the network has random weights (the numbers then only show the pipeline): train one on the
scenes with `poschan seg-train --model tv:deeplabv3_resnet50`, or pass your own state dict (11 classes).
"""

import argparse

import torch
from torchvision.models.segmentation import deeplabv3_resnet50

import poschan

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--weights", help="state dict of deeplabv3_resnet50(num_classes=11)")
parser.add_argument("--test", type=int, default=100, help="test scenes")
parser.add_argument("--rank", type=int, default=100, help="scenes to rank the channels on (disjoint items)")
parser.add_argument("--side", type=int, default=96, help="scene side in pixels")
args = parser.parse_args()
torch.manual_seed(0)

model = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=11, aux_loss=False).eval()
if args.weights:
    missing, unexpected = model.load_state_dict(torch.load(args.weights, weights_only=True), strict=False)
    if missing or any(not k.startswith("aux_classifier.") for k in unexpected):  # only the auxiliary head may differ
        raise SystemExit(f"{args.weights} does not fit deeplabv3_resnet50(num_classes=11): {missing[:3]} missing, "
                         f"{unexpected[:3]} unexpected")


def rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1)  # grey scenes as the 3-channel input the network takes


test_images, test_masks = poschan.load_scenes("test", args.test, side=args.side)
rank_images, _ = poschan.load_scenes("rank", args.rank, side=args.side, seed=1)
ranking = poschan.rank_channels(model, "backbone.layer4", rgb(rank_images), method="flip")

curve = poschan.ablation_curve(model, "backbone.layer4", ranking, (rgb(test_images), test_masks), n=["5%", "25%"])
print(f"clean mIoU {curve.miou_clean:.3f}")
for point in curve.points:
    ranked, random = point.ranked_drop[0], sum(point.random_drop) / len(point.random_drop)
    print(f"zero {point.n:>4} channels: mIoU drop {ranked:+.3f} (top position channels) vs {random:+.3f} (random)")

attack = poschan.region_attack(model, "backbone.layer4", ranking, (rgb(test_images), test_masks), region="left",
                               n="25%", methods=["flip", "flip-opposite", "random"])
for arm in attack.arms:
    inside, outside = sum(arm.drop_in) / len(arm.drop_in), sum(arm.drop_out) / len(arm.drop_out)
    print(f"left region, {arm.method:<14} channels: mIoU drop inside {inside:+.3f}, outside {outside:+.3f}")
