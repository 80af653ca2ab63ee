"""``rank_channels``: rank the channels of any model's named layer by the position they encode, over seeds."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from poschan.data.fingerprint import image_fingerprint
from poschan.data.sources import ImageSet, as_image_set
from poschan.errors import UserError
from poschan.locate.designs import RankSpec, Tally, accumulate
from poschan.locate.ranking import ChannelRanking
from poschan.models.weights import weights_fingerprint
from poschan.runtime import eval_mode, model_device
from poschan.taps import resolve_layers


def ranking_from_tallies(model: nn.Module, layer: str, images: ImageSet, spec: RankSpec, seeds: Sequence[int],
                         tallies: Sequence[Tally], model_name: str = "") -> ChannelRanking:
    """The ChannelRanking of one pass per seed (``tallies[i]`` of ``seeds[i]``): scores and null pooled over the
    seeds (the statistics merge exactly), per-seed scores kept."""
    pooled = sum(tallies[1:], start=tallies[0])
    return ChannelRanking(
        layer=layer, method=spec.method, scores=pooled.real.scores(), null=pooled.null.scores(),
        per_seed={seed: t.real.scores() for seed, t in zip(seeds, tallies)}, n_images=len(images),
        model=model_name or type(model).__name__, weights=weights_fingerprint(model),
        data={"source": images.name, "split": images.split, "images": image_fingerprint(images.images)},
        design=dataclasses.asdict(spec))


def rank_channels(model: nn.Module, layer: str, images: object, method: str = "flip", *, canvas: bool = False,
                  grid: int = 3, canvas_side: int | None = None, background: str = "mean",
                  semantic_pairs: str = "item", labels: torch.Tensor | None = None, seeds: Sequence[int] = (0,),
                  batch_size: int = 64, device: torch.device | str | None = None,
                  progress: bool = False) -> ChannelRanking:
    """Rank the channels of ``layer`` of ``model`` (any ``nn.Module``; a dotted name from ``named_modules``, or
    for a model of ``build_model`` a stage name or a name inside its backbone) by the position their globally
    pooled outputs encode.

    ``images``: a (N, C, H, W) tensor as the model takes it, a dataset of images or (image, label) pairs, a
    DataLoader, or an ImageSet (``load_images``, ``load_dataset``: re-normalised batch by batch for a model with
    ``in_chans``/``input_norm``, e.g. one of ``build_model``). ``method``: ``flip`` (the paper's: |f(x) − f(hflip x)|, plus signed left/right/top/bottom keys),
    ``shift`` (each image pasted in every cell of a ``grid``×``grid`` canvas; per-cell and per-region effect
    sizes) or ``dimest`` (Esser et al.'s factor dimensionality). Plain images are flipped as they are; with
    ``canvas=True`` flip pastes each image into a cell of a grid canvas first (shift and dimest always do).
    Each seed is one pass in its own random order with its own null pairs; the result pools them and keeps the
    per-seed scores. The model is used in eval mode and left as it was.
    """
    data = as_image_set(images, labels)
    in_chans, input_norm = None, None
    if isinstance(images, ImageSet):  # images with their own statistics: fed as the model expects them
        in_chans, input_norm = getattr(model, "in_chans", None), getattr(model, "input_norm", None)
    if canvas is False and method != "flip":
        canvas = True  # shift and dimest are defined on canvases
    spec = RankSpec(method, grid=grid, canvas=canvas_side, background=background,
                    flip_input="canvas" if canvas else "image", semantic_pairs=semantic_pairs)
    if not seeds:
        raise UserError("seeds must name at least one seed")
    device = device if device is not None else model_device(model)
    (layer,) = resolve_layers(model, [layer])
    with eval_mode(model):
        tallies = [accumulate(model, layer, data, spec, seed=s, batch_size=batch_size, device=device,
                              in_chans=in_chans, input_norm=input_norm, progress=progress) for s in seeds]
    return ranking_from_tallies(model, layer, data, spec, list(seeds), tallies)
