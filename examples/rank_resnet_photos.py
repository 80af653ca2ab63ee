"""Rank the layer4 channels of a torchvision ResNet-18 (a standard state-dict file, head included) on a folder of
photos, and save the ranking for `poschan ablate --ranking` or a later session.

    python examples/rank_resnet_photos.py resnet18.pth my_photos/ ranking.json [--size 224]
"""

import argparse

import poschan

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("weights", help="torch.save(torchvision.models.resnet18(...).state_dict(), PATH)")
parser.add_argument("photos", help="a folder of images (any depth)")
parser.add_argument("out", nargs="?", default="ranking.json")
parser.add_argument("--size", type=int, default=224, help="image side fed to the network")
args = parser.parse_args()

model = poschan.build_model("tv:resnet18", num_classes=1000, in_chans=3, weights=args.weights)
ranking = poschan.rank_channels(model, "layer4", poschan.load_images(args.photos, size=args.size))
ranking.save(args.out)
print("top 10 position channels of layer4:", ranking.top("overall", 10).tolist())
print("their mean |flip difference| vs the shuffled-pair null:",
      f"{ranking.scores['overall'][ranking.top('overall', 10)].mean():.4g}",
      f"vs {ranking.null['overall'][ranking.top('overall', 10)].mean():.4g}")
