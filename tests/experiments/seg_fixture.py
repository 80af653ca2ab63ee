"""A small segmenter with known, non-degenerate predictions, and a reference mIoU written apart from the library's.

The segmenter is built in about a second instead of trained: seeded random weights, batch-norm statistics measured
on training scenes, and the final 1×1 classifier fitted to those scenes' pixels (class-balanced logistic
regression on the head's hidden features; bilinear up-sampling is linear, so fitting at full resolution is exact).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poschan.data.scenes import NUM_CLASSES, SceneSpec, fixed_scenes, scene_items
from poschan.models.segmentation import SegNet, SegSpec, build_segmenter

IGNORE = 255  # the target label that is never scored
SPEC = SegSpec(width=4, aspp_channels=8)  # 32 backbone channels at 1/8 of the input side
FIT_SCENES = 16


def calibrated_weights(side: int, seed: int = 0) -> dict[str, Tensor]:
    """The state dict of a ``SPEC`` segmenter fitted to ``FIT_SCENES`` training scenes of ``side`` pixels."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_segmenter(SPEC)
        images, masks = fixed_scenes(scene_items("train", limit=500), SceneSpec(side=side), FIT_SCENES, seed)
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.reset_running_stats()
                bn.momentum = None  # the plain average over the one pass below
        with torch.no_grad():
            model.train()(images)
            model.eval()
            hidden = F.interpolate(model.head[:-1](model.features(images)), size=(side, side), mode="bilinear",
                                   align_corners=False)
        x = hidden.permute(0, 2, 3, 1).reshape(-1, hidden.shape[1])[::8]
        y = masks.reshape(-1)[::8]
        x, y = x[y != IGNORE], y[y != IGNORE]
        counts = torch.bincount(y, minlength=NUM_CLASSES).float()
        weight = (counts.sum() / counts.clamp(min=1)).sqrt()
        classifier = nn.Linear(x.shape[1], NUM_CLASSES)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=0.1)
        for _ in range(100):
            loss = F.cross_entropy(classifier(x), y, weight=weight / weight.mean())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.head[-1].weight.data.copy_(classifier.weight.data.view_as(model.head[-1].weight))
        model.head[-1].bias.data.copy_(classifier.bias.data)
    return model.state_dict()


def segmenter(state: dict[str, Tensor], spec: SegSpec = SPEC) -> SegNet:
    """A ``spec`` segmenter holding ``state``, in eval mode."""
    model = build_segmenter(spec)
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def predict(model: SegNet, feats: Tensor, size: tuple[int, int], zeroed: list[int] | None = None) -> Tensor:
    """Argmax labels of the head on ``feats`` (one batch) with the channels ``zeroed`` set to 0."""
    if zeroed:
        feats = feats.clone()
        feats[:, zeroed] = 0
    return model.decode(feats, size).argmax(1)


def reference_scores(pred: Tensor, target: Tensor, where: Tensor | None = None) -> tuple[float, float]:
    """(mIoU over the classes present in target or prediction, pixel accuracy) of the pixels ``where`` is True
    ((S, S) bool, broadcast over the batch; all when None) whose target is not IGNORE."""
    p, t = pred.numpy(), target.numpy()
    keep = t != IGNORE
    if where is not None:
        keep &= np.broadcast_to(where.numpy(), t.shape)
    p, t = p[keep].astype(np.int64), t[keep].astype(np.int64)
    k = NUM_CLASSES
    conf = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    return float(np.mean(tp[present] / union[present])), float(tp.sum() / conf.sum())
