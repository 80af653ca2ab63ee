"""Where does a classifier read position from? Train a small CNN to tell which cell of a 3×3 canvas holds a
Fashion-MNIST item, then permute its pooled channels at test time (the paper's control): location accuracy
falls to chance when position lives in the channel order.

    python examples/test_time_permutation.py [--steps 300] [--width 8]
"""

import argparse

import torch

import poschan

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=300, help="training steps of 48 canvases")
parser.add_argument("--width", type=int, default=8, help="width of the paper's ResNet-18 (64 = paper)")
parser.add_argument("--test", type=int, default=900, help="test canvases")
args = parser.parse_args()
torch.manual_seed(0)

train = poschan.CanvasStream(poschan.load_dataset("fashion-mnist", "train"), "location", grid=3, batch_size=48, seed=0)
test = poschan.CanvasStream(poschan.load_dataset("fashion-mnist", "test", limit=args.test), "location", grid=3,
                            batch_size=300, seed=1)
model = poschan.build_model("resnet18-paper", num_classes=9, in_chans=1, width=args.width)
optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
batches = (batch for epoch in range(10**6) for batch in train.epoch(epoch))
for _, (x, y) in zip(range(args.steps), batches):
    optimiser.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimiser.step()


@torch.no_grad()
def accuracy() -> float:
    pairs = [(model(x).argmax(1) == y).float() for x, y in test.epoch(0)]
    return float(torch.cat(pairs).mean())


model.eval()
plain = accuracy()
with poschan.permute_channels(model, "head.fc", where="input", generator=torch.Generator().manual_seed(0)):
    permuted = accuracy()
print(f"location accuracy: {plain:.3f} as trained, {permuted:.3f} with the pooled channels permuted "
      f"(chance {1 / 9:.3f})")
