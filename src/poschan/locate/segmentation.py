"""Rankings of a segmenter's layer on its own kind of images: flip on scenes (optionally every item in one half) or
on real segmentation images; shift and dimest with single items pasted in the cells of the scene canvas."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from poschan.data.segdata import InputNorm, SegData
from poschan.errors import UserError
from poschan.locate.designs import RankSpec
from poschan.locate.rank import rank_channels
from poschan.locate.ranking import ChannelRanking

SEG_METHODS = ("flip", "shift", "dimest")


def segmenter_ranking(model: nn.Module, layer: str, data: SegData, method: str = "flip", *,
                      region: str | None = None, grid: int = 3, count: int, seeds: Sequence[int] = (0,),
                      batch_size: int = 64, device: torch.device | str = "cpu", in_chans: int | None = None,
                      input_norm: InputNorm | None = None, model_name: str = "") -> ChannelRanking | None:
    """The ChannelRanking of ``layer`` of a segmenter (any ``nn.Module``; ``rank_channels``: one pass per seed,
    scores pooled over the seeds, per-seed scores kept), on rank-split images of ``data`` (never its evaluation
    split); ``in_chans`` / ``input_norm`` re-normalise the images for the model.

    ``flip`` (image input): ``count`` rank images per seed, each seed its own rank scenes; ``region`` None: scenes
    as trained (keys overall, left, right, top, bottom); "left" / "top": every item in that half, so ``left`` /
    ``right`` rank the channels that fire for content on that side (real images are ranked as they are).
    ``shift``: the first ``count`` rank-split items pasted in every cell of a grid×grid layout of the scene
    canvas (black background, as the scenes); ``dimest``: the same items in pairs that share a cell or an item
    (keys position, semantic); None for real data (no items to paste).
    """
    if method not in SEG_METHODS:
        raise UserError(f"unknown segmenter ranking method {method!r}; allowed: {', '.join(SEG_METHODS)}")
    if not seeds:
        raise UserError("seeds must name at least one seed")
    if method == "flip":
        spec = RankSpec("flip", flip_input="image")
        sets = {seed: data.rank_images(count, seed, region if data.synthetic else None) for seed in seeds}
    else:
        if not data.synthetic:
            return None
        spec = RankSpec(method, grid=grid, canvas=data.scenes.side, background="black")
        items = data.rank_items(count)
        sets = dict.fromkeys(seeds, items)
    ranking = rank_channels(model, layer, sets.__getitem__, spec, seeds=seeds, batch_size=batch_size, device=device,
                            in_chans=in_chans, input_norm=input_norm, model_name=model_name)
    ranking.data.update({"eval_split": data.eval_split, "region": region})
    return ranking
