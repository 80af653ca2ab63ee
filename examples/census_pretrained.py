"""How much absolute position does a pretrained CNN keep, stage by stage? A census of EfficientNet-Lite0 (ImageNet
weights) beside its random-init twin: scikit-image's photos pasted in a 3×3 grid, a linear location readout from
each stage's pooled features, with the channels permuted at test and from the sorted (order-free) vector.

    python examples/census_pretrained.py [--models efficientnet-lite0,efficientnet-lite2] [--size 64]
"""

import argparse

import poschan
from poschan.measure.census import census_models
from poschan.measure.probe_study import ProbeCanvases
from poschan.tables import format_stat

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--models", default="efficientnet-lite0", help="comma-separated; NAME=WEIGHTS for a state dict")
parser.add_argument("--size", type=int, default=64, help="side of each pasted photo (canvas: 3 × this)")
parser.add_argument("--train", type=int, default=600, help="readout training canvases per seed")
parser.add_argument("--test", type=int, default=300, help="readout test canvases per seed")
parser.add_argument("--seeds", type=int, default=2, help="seeds (canvases, readout fit, permutations)")
args = parser.parse_args()

train, test = (poschan.load_dataset("photos", split, image_size=args.size) for split in ("train", "test"))
models = census_models(args.models.split(","), num_classes=9, in_chans=3)  # each model, then its twin
canvases = ProbeCanvases("location", grid=3, train_size=args.train, test_size=args.test, batch_size=100)
result = poschan.census(models, train, test, canvases, seeds=range(args.seeds))
print(f"location readout accuracy [95% CI], chance {result.rows[0]['chance']:.3f}")
for row in result.rows:
    print(f"{row['model']:<34} {row['stage']:<9} plain {format_stat(row['accuracy'])}  permuted at test "
          f"{format_stat(row['accuracy_permuted_test'])}  sorted {format_stat(row['accuracy_sorted'])}")
