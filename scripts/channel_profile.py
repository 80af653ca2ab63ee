"""What the flip-ranked channels of a segmenter look like: activity, spread and where they fire.

Usage: python scripts/channel_profile.py RUN (a prior-sweep directory with train/ and ablate/), e.g.
runs/seg/p0.9-left-right. Prints, for the top and bottom 32 `overall` channels of RUN/ablate/ranking.json, the
fraction of map positions where they are active (> 0), their pooled mean and standard deviation on test scenes,
the correlation of the score with both; and, from a fresh flip ranking on left-half scenes (seed 0), the share
of the "left" / "right" channels' activation that lies in the left half of the map on left-content scenes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from poschan.control.ablation import SegEval
from poschan.data.segdata import SegData
from poschan.locate.ranking import ranking_order
from poschan.locate.segmentation import segmenter_ranking
from poschan.models.segmentation import load_segmenter

TOP = 32
SCENES = 300


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    checkpoint = str(args.run / "train/seed0/checkpoint.pt")
    seg = load_segmenter(checkpoint=checkpoint)
    data = SegData.from_meta(seg.meta, None, checkpoint)
    score = torch.tensor(json.loads((args.run / "ablate/ranking.json").read_text())["keys"]["overall"]["scores"])
    test = data.test_set(SCENES)
    feats = SegEval(seg.module, seg.layer, test, batch_size=50, device=cpu).features
    pooled = feats.mean(dim=(2, 3))
    mean, spread, active = pooled.mean(0), pooled.std(0), (feats > 0).float().mean(dim=(0, 2, 3))
    order = ranking_order(score)
    for name, idx in (("top", order[:TOP]), ("bottom", order[-TOP:])):
        print(f"{name} {TOP}: active {active[idx].mean():.2f} of positions, pooled mean {mean[idx].mean():.2f}, "
              f"sd {spread[idx].mean():.2f}")
    print(f"corr(score, sd) {corr(score, spread):.2f}, corr(score, mean) {corr(score, mean):.2f}")
    signed = segmenter_ranking(seg.module, seg.layer, data, "flip", region="left", count=SCENES, seeds=[0],
                               batch_size=50, device=cpu).scores
    left_scenes = data.rank_images(SCENES, seed=5, region="left").images
    f = seg.module.features(left_scenes)
    half = f.shape[-1] // 2
    for key in ("left", "right"):
        idx = ranking_order(signed[key])[:TOP]
        share = f[:, idx][..., :half].sum() / f[:, idx].sum()
        print(f"top {TOP} '{key}' channels: {share:.0%} of their activation in the left half, left-content scenes")


if __name__ == "__main__":
    main()
