"""Ablation sweep: K channel masks evaluated on the backbone output computed once (``SegEval``'s fast path, what
`poschan ablate` and ``ablation_curve`` do for a seg-train segmenter) vs re-running the whole network K times with
the masking hook (``SegEval(fast=False)``, the path of any other segmenter), on the same test scenes,
quick-preset segmenter (width-16 dilated ResNet-18 + ASPP-64, 96-px scenes), one torch thread.

Ideal speed-up = K·(t_backbone + t_head) / (t_backbone + K·t_head), from the two parts timed separately.
Prints the measured speed-up, the ideal one and their ratio (target >= 0.8 of ideal). Both paths give the same
predictions (checked).
"""

from __future__ import annotations

import argparse

import torch

from common import interleaved, timed
from poschan.control.ablation import SegEval
from poschan.data.scenes import SceneSpec, fixed_scenes, scene_items
from poschan.metrics.segmentation import labels_of
from poschan.models.segmentation import SegSpec, build_segmenter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, default=128)
    parser.add_argument("--k", type=int, default=8, help="masks in the sweep")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_segmenter(SegSpec(width=16, aspp_channels=64)).eval().requires_grad_(False)
    images, targets = fixed_scenes(scene_items("test", limit=2000), SceneSpec(layout_prior=0.9), args.scenes, 0)
    channels = model.spec.width * 8
    generator = torch.Generator().manual_seed(0)
    masks = [torch.randperm(channels, generator=generator)[:channels // 4] for _ in range(args.k)]
    batches = images.split(args.batch_size)

    def sweep(fast: bool) -> list[torch.Tensor]:
        ev = SegEval(model, model.feature_layer, (images, targets), batch_size=args.batch_size, fast=fast)
        return [ev.predict(m) for m in masks]

    def reused() -> list[torch.Tensor]:
        return sweep(fast=True)

    def naive() -> list[torch.Tensor]:
        return sweep(fast=False)

    assert all(torch.equal(a, b) for a, b in zip(reused(), naive())), "reused and naive predictions differ"

    @torch.no_grad()
    def backbone_only() -> None:
        for x in batches:
            model.features(x)

    feats = [model.features(x) for x in batches]

    @torch.no_grad()
    def head_only() -> None:
        for f, x in zip(feats, batches):
            labels_of(model.decode(f, x.shape[-2:]))

    t_reused, t_naive = interleaved(reused, naive, repeats=args.repeats)
    t_backbone = min(timed(backbone_only) for _ in range(args.repeats))
    t_head = min(timed(head_only) for _ in range(args.repeats))
    ideal = args.k * (t_backbone + t_head) / (t_backbone + args.k * t_head)
    speedup = t_naive / t_reused
    print(f"ablation sweep, K={args.k} masks, {args.scenes} scenes: backbone {t_backbone:.3f}s, head {t_head:.3f}s "
          f"per pass")
    print(f"reused backbone vs re-running the network: speed-up {speedup:.2f}x, ideal {ideal:.2f}x, "
          f"ratio {speedup / ideal:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
