"""``rank_channels``: rank the channels of any model's named layer by the position they encode, over seeds;
``ranking_controls``: what its controls say (the shuffled-pair null, the agreement between ranking seeds)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from poschan.data.fingerprint import image_fingerprint
from poschan.data.sources import ImageSet, as_image_set
from poschan.errors import UserError
from poschan.locate.designs import RankSpec, Tally, accumulate
from poschan.locate.moments import dimension_counts
from poschan.locate.ranking import ChannelRanking, ranking_order, top_overlap, top_shared
from poschan.models.weights import weights_fingerprint
from poschan.runtime import eval_mode, model_device
from poschan.stats import proportion, summarize
from poschan.taps import resolve_layers

InputNorm = tuple[tuple[float, ...], tuple[float, ...]]


def _ranked_images(sets: Sequence[ImageSet]) -> ImageSet:
    """One ImageSet of the distinct image sets of the seeds (most often one set, ranked by every seed)."""
    distinct: list[ImageSet] = []
    for s in sets:
        if not any(s is d or (s.images.shape == d.images.shape and torch.equal(s.images, d.images))
                   for d in distinct):
            distinct.append(s)
    if len(distinct) == 1:
        return distinct[0]
    return dataclasses.replace(distinct[0], images=torch.cat([d.images for d in distinct]),
                               labels=torch.cat([d.labels for d in distinct]))


def _ranking(model: nn.Module, layer: str, images: ImageSet, spec: RankSpec, seeds: Sequence[int],
             tallies: Sequence[Tally], model_name: str) -> ChannelRanking:
    """The ChannelRanking of one pass per seed (``tallies[i]`` of ``seeds[i]``): scores and null pooled over the
    seeds (the statistics merge exactly), per-seed scores kept."""
    pooled = sum(tallies[1:], start=tallies[0])
    return ChannelRanking(
        layer=layer, method=spec.method, scores=pooled.real.scores(), null=pooled.null.scores(),
        per_seed={seed: t.real.scores() for seed, t in zip(seeds, tallies)}, n_images=len(images),
        model=model_name or type(model).__name__, weights=weights_fingerprint(model),
        data={"source": images.name, "split": images.split, "images": image_fingerprint(images.images)},
        design=dataclasses.asdict(spec))


def rank_channels(model: nn.Module, layer: str, images: object, method: str | RankSpec = "flip", *,
                  canvas: bool = False, grid: int = 3, canvas_side: int | None = None, background: str = "mean",
                  semantic_pairs: str = "item", labels: torch.Tensor | None = None, seeds: Sequence[int] = (0,),
                  batch_size: int = 64, device: torch.device | str | None = None, in_chans: int | None = None,
                  input_norm: InputNorm | None = None, model_name: str = "",
                  progress: bool = False) -> ChannelRanking:
    """Rank the channels of ``layer`` of ``model`` (any ``nn.Module``; a dotted name from ``named_modules``, or
    for a model of ``build_model`` a stage name or a name inside its backbone) by the position their globally
    pooled outputs encode.

    ``images``: a (N, C, H, W) tensor as the model takes it, a dataset of images or (image, label) pairs, a
    DataLoader, or an ImageSet (``load_images``, ``load_dataset``: re-normalised batch by batch for a model with
    ``in_chans``/``input_norm``, e.g. one of ``build_model``; ``in_chans``/``input_norm`` given: as they say);
    or a function of the ranking seed returning such images (each seed ranks its own). ``method``: ``flip``
    (the paper's: |f(x) − f(hflip x)|, plus signed left/right/top/bottom keys),
    ``shift`` (each image pasted in every cell of a ``grid``×``grid`` canvas; per-cell and per-region effect
    sizes) or ``dimest`` (Esser et al.'s factor dimensionality), or a whole ``RankSpec`` (then the canvas
    arguments are unused). Plain images are flipped as they are; with ``canvas=True`` flip pastes each image into
    a cell of a grid canvas first (shift and dimest always do).
    Each seed is one pass in its own random order with its own null pairs (the shuffled-pair control); the
    result pools them and keeps the per-seed scores. The model is used in eval mode and left as it was.
    """
    if not seeds:
        raise UserError("seeds must name at least one seed")
    given = [images(seed) for seed in seeds] if callable(images) else [images]
    sets = [as_image_set(x, labels) for x in given]
    if in_chans is None and input_norm is None and isinstance(given[0], ImageSet):
        # images with their own statistics: fed as the model expects them
        in_chans, input_norm = getattr(model, "in_chans", None), getattr(model, "input_norm", None)
    if isinstance(method, RankSpec):
        spec = method
    else:
        canvas = canvas or method != "flip"  # shift and dimest are defined on canvases
        spec = RankSpec(method, grid=grid, canvas=canvas_side, background=background,
                        flip_input="canvas" if canvas else "image", semantic_pairs=semantic_pairs)
    per_seed = sets if callable(images) else sets * len(seeds)
    device = device if device is not None else model_device(model)
    (layer,) = resolve_layers(model, [layer])
    with eval_mode(model):
        tallies = [accumulate(model, layer, data, spec, seed=s, batch_size=batch_size, device=device,
                              in_chans=in_chans, input_norm=input_norm, progress=progress)
                   for s, data in zip(seeds, per_seed)]
    return _ranking(model, layer, _ranked_images(per_seed), spec, list(seeds), tallies, model_name)


def _dims(scores: dict[str, Tensor]) -> dict:
    """Esser et al.'s dimension counts of a dimest ranking's position / semantic scores."""
    return dimension_counts(float(scores["position"].sum()), float(scores["semantic"].sum()),
                            scores["position"].numel())


@dataclass
class RankingControls:
    """A ranking beside its controls. Per key: the ``top`` channels; ``null``: the mean |score| of the real and
    of the shuffled pairs and how many of the real top channels the null's top list shares (``chance_overlap``
    = n²/C for unrelated lists: a real top list that the null shares merely picks channels of large spread).
    dimest: ``dims`` / ``dims_null`` (position, semantic and residual dimensions of the real and null pairs) and
    ``position_percent``, the per-seed share of position dimensions in [0, 100] (a t interval over the seeds).
    With several seeds, ``seed_overlap``: per key, the share of one seed's top-n channels that another seed's
    top-n also holds (units: the pairs of seeds, which share seeds; items: the n channels), beside
    ``seed_overlap_chance`` = n / C, its expectation for unrelated rankings."""

    top: dict[str, list[int]]
    null: dict[str, dict]
    dims: dict | None = None
    dims_null: dict | None = None
    position_percent: dict | None = None
    seed_overlap: dict[str, dict] | None = None
    seed_overlap_chance: float | None = None

    def metrics(self) -> dict:
        """The controls as results.json metrics (the entries that apply)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def ranking_controls(ranking: ChannelRanking, n: int = 10) -> RankingControls:
    """The controls of ``ranking`` (see RankingControls) for top lists of ``n`` channels (at most all)."""
    n = min(n, ranking.channels)
    real, null = ranking.scores, ranking.null
    out = RankingControls(
        top={key: ranking_order(s)[:n].tolist() for key, s in real.items()},
        null={key: {"mean_abs_score": float(real[key].abs().mean()),
                    "null_mean_abs_score": float(null[key].abs().mean()),
                    "top_overlap": top_overlap(real[key], null[key], n),
                    "chance_overlap": n * n / ranking.channels} for key in real})
    if ranking.method == "dimest":
        out.dims, out.dims_null = _dims(real), _dims(null)
        # floor(softmax share x C) / C of the position factor: in [0, 100) whatever the factor scores
        out.position_percent = summarize([_dims(s)["percent"]["position"] for s in ranking.per_seed.values()],
                                         bounds=(0.0, 100.0), unit="ranking seeds")
    if len(ranking.per_seed) > 1:
        per_seed = list(ranking.per_seed.values())
        pairs = list(itertools.combinations(range(len(per_seed)), 2))
        out.seed_overlap = {
            key: proportion([top_shared(per_seed[i][key], per_seed[j][key], n).numpy() for i, j in pairs],
                            unit="pairs of ranking seeds (sharing seeds)", item=f"top-{n} channels")
            for key in real if not key.startswith("cell:")}
        out.seed_overlap_chance = n / ranking.channels
    return out

