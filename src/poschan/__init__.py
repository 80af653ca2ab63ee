"""poschan: measure, locate and control the absolute position CNNs keep in the order of their channels.

The notebook way, one import and one or two calls per capability, on any ``nn.Module`` addressed by layer name::

    import poschan
    ranking = poschan.rank_channels(model, "layer4", images, method="flip")   # which channels carry position
    ranking.top("overall", 10); ranking.save("ranking.json")
    poschan.ranking_controls(ranking).null["overall"]                        # against the shuffled-pair null
    with poschan.permute_channels(model, "avgpool"):                           # the paper's test-time control
        logits = model(images)
    curve = poschan.ablation_curve(segmenter, "backbone.layer4", ranking, (images, masks), n=[5, 10])
    nets = poschan.load_segmenters(checkpoint="runs/seg")                     # `poschan ablate`, the notebook way
    found = poschan.compare_rankings(nets, [poschan.segmenter_rankings(net, count=500) for net in nets])

Names are imported on first use, so ``import poschan`` (and the command line) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_WHERE = {
    # locate: which channels carry position
    "rank_channels": "poschan.locate.rank",
    "ranking_controls": "poschan.locate.rank",
    "ChannelRanking": "poschan.locate.ranking",
    # taps: any nn.Module, by layer name
    "pooled_features": "poschan.taps",
    "capture": "poschan.taps",
    "permute_channels": "poschan.taps",
    "mask_channels": "poschan.taps",
    "layer_names": "poschan.taps",
    # control: what changing them does
    "AugShiftLoss": "poschan.control.augshift",
    "ShiftPairTransform": "poschan.data.shift_pairs",
    "ablation_curve": "poschan.control.ablation",
    "region_attack": "poschan.control.attack",
    "debias_study": "poschan.control.debias",
    # metrics
    "invariance_metrics": "poschan.metrics.invariance",
    # studies: one call each, typed results with intervals
    "train_classifier": "poschan.training",
    "gap_study": "poschan.measure.gap_study",
    "budget_response": "poschan.measure.budget_response",
    "augshift_comparison": "poschan.control.augshift_study",
    "probe_study": "poschan.measure.probe_study",
    "census": "poschan.measure.census",
    "position_map_study": "poschan.measure.position_map_study",
    "segmenter_rankings": "poschan.locate.segmenter_rankings",
    "compare_rankings": "poschan.control.ranking_comparison",
    "region_rankings": "poschan.locate.segmenter_rankings",
    "compare_regions": "poschan.control.attack",
    "channel_maps": "poschan.locate.channel_maps",
    # models, data, results
    "build_model": "poschan.models.registry",
    "list_models": "poschan.models.registry",
    "load_dataset": "poschan.data.sources",
    "load_images": "poschan.data.sources",
    "load_scenes": "poschan.data.scenes",
    "load_segmenters": "poschan.models.segmenters",
    "CanvasStream": "poschan.data.stream",
    "load_run": "poschan.results",
    "UserError": "poschan.errors",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'poschan' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
