"""Does the flip ranking find position or chirality? Per-channel scores of the three flip pair constructions of
``data.scene_pairs`` and the overlaps of their top lists.

Score of a construction, per channel: mean over scenes of |f(x) − f(partner)|, f the layer's globally
average-pooled output (the paper's flip score is the ``canvas`` construction). A flip top list that shares
its channels with ``position-only`` and not with ``mirror-in-place`` ranks position; the reverse, chirality.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch
from scipy.stats import hypergeom
from torch import Tensor, nn

from poschan import stats
from poschan.data.scene_pairs import ScenePairs
from poschan.data.segdata import InputNorm, SegData
from poschan.data.sources import model_input
from poschan.errors import UserError
from poschan.locate.moments import DiffSums
from poschan.locate.ranking import top_overlap
from poschan.metrics.segmentation import NETWORKS
from poschan.runtime import eval_mode
from poschan.taps import pooled_features


@torch.no_grad()
def pair_scores(model: nn.Module, layer: str, pairs: ScenePairs, *, batch_size: int = 64,
                device: torch.device | str = "cpu", in_chans: int | None = None,
                input_norm: InputNorm | None = None) -> dict[str, Tensor]:
    """Per construction of ``pairs``, the (C,) float64 mean |f(x) − f(partner)| of ``layer``'s pooled features
    (``model`` already on ``device``, run in eval mode), ``batch_size`` scenes (with their partners) per step."""
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    names = list(pairs.partners)
    sums: dict[str, DiffSums] = {}
    with eval_mode(model):
        for start in range(0, len(pairs.images), batch_size):
            part = slice(start, start + batch_size)
            x = torch.cat([pairs.images[part], *(pairs.partners[name][part] for name in names)])
            feats = pooled_features(model, model_input(x, pairs.mean, pairs.std, in_chans, input_norm).to(device), [layer])[layer]
            original, *partners = feats.detach().cpu().double().chunk(1 + len(names))
            for name, partner in zip(names, partners):
                d = DiffSums.of(original - partner)
                sums[name] = sums[name] + d if name in sums else d
    return {name: s.mean_abs for name, s in sums.items()}


def top_overlaps(scores: dict[str, Tensor], n: int) -> list[dict]:
    """For every two constructions (a, b), how many of the top ``n`` channels of a are among the top ``n`` of b:
    ``overlap``, its chance expectation ``chance`` = n²/C and ``p_value`` = P(overlap >= observed) when b's top
    ``n`` were n channels drawn at random (hypergeometric)."""
    sizes = {s.numel() for s in scores.values()}
    if len(sizes) != 1:
        raise UserError(f"scores must all have one value per channel of the same layer, got sizes {sorted(sizes)}")
    channels = sizes.pop()
    if not 1 <= n <= channels:
        raise UserError(f"top n must be in 1..{channels} (the layer's channels), got {n}")
    rows = []
    for a, b in combinations(scores, 2):
        overlap = top_overlap(scores[a], scores[b], n)
        rows.append({"a": a, "b": b, "n": n, "channels": channels, "overlap": overlap, "chance": n * n / channels,
                     "p_value": float(hypergeom.sf(overlap - 1, channels, n, n))})
    return rows


def overlaps_over_networks(overlaps: Sequence[list[dict]]) -> list[dict]:
    """Per pair of constructions and N, the ``top_overlaps`` rows of every network (``overlaps[i]``: network i's)
    summarised: the overlap's mean with a t-interval over the networks cut to [0, N], chance N²/C and each
    network's hypergeometric p-value of an overlap at least as large."""
    groups: dict[tuple, list[dict]] = {}
    for rows in overlaps:
        for row in rows:
            groups.setdefault((row["a"], row["b"], row["n"]), []).append(row)
    return [{"a": a, "b": b, "n": n, "chance": rows[0]["chance"],
             "overlap": stats.summarize([r["overlap"] for r in rows], bounds=(0.0, float(n)), unit=NETWORKS),
             "p_values": [r["p_value"] for r in rows]} for (a, b, n), rows in groups.items()]


def chirality_summary(model: nn.Module, layer: str, data: SegData, *, count: int, ns: Sequence[int], seed: int = 0,
                      region: str | None = None, batch_size: int = 64, device: torch.device | str = "cpu", in_chans: int | None = None,
                      input_norm: InputNorm | None = None) -> dict:
    """``{"scores": pair_scores(...), "overlaps": top_overlaps rows for every n of ns}`` of a segmenter on
    ``count`` rank scenes of ``data`` with every item in ``region`` (None: anywhere): the scenes that
    ``segmenter_ranking``'s flip ranking of seed ``seed`` and ``region`` ranks on, so ``canvas`` is its ``overall``
    score (never the evaluation split)."""
    if not ns:
        raise UserError("ns must name at least one top-list size")
    pairs = data.rank_pairs(count, seed, region)
    scores = pair_scores(model, layer, pairs, batch_size=batch_size, device=device, in_chans=in_chans,
                         input_norm=input_norm)
    return {"scores": scores, "overlaps": [row for n in ns for row in top_overlaps(scores, n)]}
