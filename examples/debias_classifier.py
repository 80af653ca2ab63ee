"""Remove a classifier's position channels without retraining: train a small Fashion-MNIST CNN, rank its pooled
channels by the flip score, zero the top N and compare with N random channels: the consistency of its prediction
under shifts of the input (Zhang 2019's two-crop protocol) gained, and the accuracy it costs.

    python examples/debias_classifier.py [--steps 600] [--width 8] [--n 5%,25%]
"""

import argparse

import torch

import poschan
from poschan.tables import format_stat

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=600, help="training steps of 48 images")
parser.add_argument("--width", type=int, default=8, help="width of the paper's ResNet-18 (64 = paper)")
parser.add_argument("--n", default="5%,25%", help="channel counts or shares masked")
parser.add_argument("--test", type=int, default=300, help="test images")
args = parser.parse_args()
torch.manual_seed(0)

train = poschan.load_dataset("fashion-mnist", "train")
test = poschan.load_dataset("fashion-mnist", "test", limit=args.test)
model = poschan.build_model("resnet18-paper", num_classes=10, in_chans=1, width=args.width)
optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
for _ in range(args.steps):
    index = torch.randint(len(train.images), (48,))
    optimiser.zero_grad()
    torch.nn.functional.cross_entropy(model(train.images[index]), train.labels[index]).backward()
    optimiser.step()
model.eval()

ranking = poschan.rank_channels(model, "backbone", train.subset(500), "flip")  # ranked on train images only
result = poschan.debias_study(model, "backbone", test.images, test.labels, ranking=ranking,
                              fractions=args.n.split(","), passes=2)
print(f"unmasked: consistency {format_stat(result.unmasked['consistency'])}, "
      f"accuracy {format_stat(result.unmasked['accuracy'])}")
for row in result.rows:
    print(f"zero {row['n']:>3} {row['set']:<7} channels: consistency gain "
          f"{format_stat(row['consistency_gain'], signed=True)}, accuracy cost {format_stat(row['cost'], signed=True)}")
