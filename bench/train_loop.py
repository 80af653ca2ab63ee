"""Training-loop throughput of ``poschan.engine.fit`` vs a pure forward/backward loop on preloaded tensors.

Same model (width-16 paper ResNet-18), same batch (48 Fashion-MNIST 3×3 canvases), same optimizer.
Prints throughput(fit) / throughput(pure); target >= 0.9.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import interleaved
from poschan.data.sources import load_dataset
from poschan.data.stream import CanvasStream
from poschan.engine import fit
from poschan.models.registry import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    data = load_dataset("fashion-mnist", "train", limit=48 * args.batches)
    stream = CanvasStream(data, "location", 3, 48, seed=0)
    model = build_model("resnet18-paper", 9, 1, width=16)
    preloaded = list(stream.epoch(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))

    def pure() -> None:
        model.train()
        for x, y in preloaded:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def full() -> None:
        fit(model, stream, epochs=1, progress=False)

    t_fit, t_pure = interleaved(full, pure, repeats=args.repeats)
    images = 48 * args.batches
    ratio = (images / t_fit) / (images / t_pure)
    print(f"train_loop: fit {images / t_fit:.0f} img/s, pure forward/backward {images / t_pure:.0f} img/s, "
          f"ratio {ratio:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
