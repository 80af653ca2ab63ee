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

from poschan.experiments.seg_common import flip_ranking, load_seg_checkpoint, scene_features
from poschan.locate.ranking import ranking_order

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
    loaded = load_seg_checkpoint(str(args.run / "train/seed0/checkpoint.pt"), cpu)
    score = torch.tensor(json.loads((args.run / "ablate/ranking.json").read_text())["keys"]["overall"]["scores"])
    feats = scene_features(loaded.model, loaded.data.test_set(SCENES).images, 50, cpu)
    pooled = feats.mean(dim=(2, 3))
    mean, spread, active = pooled.mean(0), pooled.std(0), (feats > 0).float().mean(dim=(0, 2, 3))
    order = ranking_order(score)
    for name, idx in (("top", order[:TOP]), ("bottom", order[-TOP:])):
        print(f"{name} {TOP}: active {active[idx].mean():.2f} of positions, pooled mean {mean[idx].mean():.2f}, "
              f"sd {spread[idx].mean():.2f}")
    print(f"corr(score, sd) {corr(score, spread):.2f}, corr(score, mean) {corr(score, mean):.2f}")
    signed = flip_ranking(loaded.model, loaded.data, region="left", count=SCENES, seed=0, batch_size=50, device=cpu)
    left_scenes = loaded.data.rank_images(SCENES, seed=5, region="left").images
    f = scene_features(loaded.model, left_scenes, 50, cpu)
    half = f.shape[-1] // 2
    for key in ("left", "right"):
        idx = ranking_order(signed[key])[:TOP]
        share = f[:, idx][..., :half].sum() / f[:, idx].sum()
        print(f"top {TOP} '{key}' channels: {share:.0%} of their activation in the left half, left-content scenes")


if __name__ == "__main__":
    main()
