"""AugShift training step vs a plain step on the same batch.

Same model (width-16 paper ResNet-18), same 48 Fashion-MNIST items on 37 px canvases, same optimizer. Plain: one
centre view of the B = 48 images, cross-entropy. AugShift: two shifted views (2B = 96 images) in ONE forward and
backward, CE on both + lambda * latent MSE. Prints time(AugShift step) / time(plain step); the physical bound is
2.0 (twice the images), target <= 2.1.
"""

from __future__ import annotations

import argparse

import torch

from common import interleaved
from poschan.control.augshift import AugShiftLoss
from poschan.data.shift_pairs import ShiftPairStream, ShiftPairTransform
from poschan.data.sources import load_dataset
from poschan.engine import cross_entropy_loss
from poschan.models.registry import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=4, help="steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    data = load_dataset("fashion-mnist", "train", limit=48)
    shift = ShiftPairTransform(crop=32)
    pairs, y = next(iter(ShiftPairStream(data, shift, 48, seed=0).epoch(0)))
    centre, _ = next(iter(ShiftPairStream(data, shift, 48, seed=0, pairs=False).epoch(0)))
    model = build_model("resnet18-paper", 10, 1, width=16).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    augshift = AugShiftLoss(lam=1.0).training_loss

    def steps(loss_fn, x) -> None:
        for _ in range(args.steps):
            loss = loss_fn(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    t_aug, t_plain = interleaved(lambda: steps(augshift, pairs), lambda: steps(cross_entropy_loss, centre),
                                 repeats=args.repeats)
    print(f"augshift_step: AugShift {1000 * t_aug / args.steps:.0f} ms/step (2x48 views, one pass), plain "
          f"{1000 * t_plain / args.steps:.0f} ms/step (48 views), ratio {t_aug / t_plain:.3f} "
          f"(bound 2.0, target <= 2.1)")


if __name__ == "__main__":
    main()
