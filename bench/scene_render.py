"""Scene rendering vs the training step it feeds: time to render one batch of fresh segmentation scenes
(``poschan.data.scenes.render_scenes``, what SceneStream does per batch) over the time of one training step of the
quick-preset segmenter (width-16 dilated paper ResNet-18 + ASPP-64, 96-px scenes, Adam, pixel cross-entropy) on
that same batch. The data must not be the bottleneck of `poschan seg-train`: prints the ratio (target <= 0.1).

(Moved here from tests/data/test_scenes.py, which asserted an absolute wall-clock bound: 256 scenes in < 0.1 s.)
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import interleaved
from poschan.data.scenes import SceneSpec, render_scenes, scene_items
from poschan.models.segmentation import SegSpec, build_segmenter
from poschan.runtime import seeded_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=32, help="scenes per batch (the quick preset's 32)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    items = scene_items("train", limit=5000)
    spec = SceneSpec(layout_prior=0.9)
    model = build_segmenter(SegSpec(width=16, aspp_channels=64)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = render_scenes(items, spec, args.batch_size, seeded_generator(0))
    batch = [0]

    def render() -> None:
        batch[0] += 1
        render_scenes(items, spec, args.batch_size, seeded_generator(0, 0, batch[0]))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_render, t_step = interleaved(render, step, repeats=args.repeats)
    print(f"scene_render: render {1000 * t_render:.1f} ms per batch of {args.batch_size} scenes, training step "
          f"{1000 * t_step:.0f} ms, ratio {t_render / t_step:.3f} (target <= 0.1)")


if __name__ == "__main__":
    main()
