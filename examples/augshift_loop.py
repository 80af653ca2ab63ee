"""AugShift in your own training loop, with any model: two shifted views per image, cross-entropy on both and
the MSE between their pooled latents (here a torchvision ResNet-18's ``avgpool`` output), then the
consistency of its predictions under shifts.

    python examples/augshift_loop.py [--steps 200] [--images 2000]
"""

import argparse

import torch
import torchvision

import poschan

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--images", type=int, default=2000, help="training images of Fashion-MNIST")
parser.add_argument("--lam", type=float, default=1.0, help="weight of the latent loss")
parser.add_argument("--test", type=int, default=500, help="test images")
args = parser.parse_args()
torch.manual_seed(0)

data = poschan.load_dataset("fashion-mnist", "train", limit=args.images)
images, labels = data.images.expand(-1, 3, -1, -1), data.labels  # grey to RGB for the torchvision model
model = torchvision.models.resnet18(num_classes=10)
views = poschan.ShiftPairTransform(canvas=32, crop=28)  # each view a 28-px crop of the image centred on 32 px
loss_fn = poschan.AugShiftLoss(lam=args.lam)
optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
generator = torch.Generator().manual_seed(0)
for _ in range(args.steps):
    index = torch.randint(len(images), (32,), generator=generator)
    v1, v2, _, _ = views(images[index], generator)
    with poschan.capture(model, ["avgpool"]) as store:
        logits = model(torch.cat([v1, v2]))
    loss = loss_fn(logits, store["avgpool"].flatten(1), labels[index])
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()

test = poschan.load_dataset("fashion-mnist", "test", limit=args.test)
scores = poschan.invariance_metrics(model, test.images.expand(-1, 3, -1, -1), test.labels, views, passes=2,
                                   latent_layer="avgpool")
print(f"after {args.steps} steps (last loss {loss.item():.3f}): centre-crop accuracy {scores['accuracy']:.3f}, "
      f"consistency under shifts {scores['consistency']:.3f}")
