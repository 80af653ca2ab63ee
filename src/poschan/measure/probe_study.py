"""``probe_study``: a linear readout of position (or semantics) from the pooled features of a FROZEN model.

At every layer the global-average-pooled features of train canvases fit a linear readout (``measure.readout``:
standardisation + L2 logistic regression) that is scored on test canvases, five ways (READOUTS): ``accuracy``
(plain), ``accuracy_permuted_test`` (the plain readout on test features whose channels are shuffled per sample:
does the readout depend on channel order?), ``accuracy_permuted_train`` (a readout fit and scored on
per-sample-shuffled features), and two order-free readouts, fit and scored on a permutation-invariant code of
the pooled vector (``measure.readout.order_free_code``): ``accuracy_sorted`` (its values sorted) and
``accuracy_moments`` (six moments of its values). An order-free readout above chance means the layer keeps
position (or class) outside its channel order too.

Each seed draws its own images, canvases and permutations (the model is one). Accuracies are estimated from the
0/1 outcome of every test canvas (poschan.stats: intervals over seeds and test canvases); ``comparisons`` holds,
per layer, the plain accuracy minus each other readout's on the same test canvases, and each layer's ``vs_chance``
an exact binomial test of its plain accuracy against chance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from poschan.data.sources import ImageSet
from poschan.data.stream import TEST_SEED_OFFSET, CanvasStream
from poschan.errors import UserError
from poschan.measure.readout import DEFAULT_C, fit_readout, order_free_code, permute_features, readout_outcomes
from poschan.runtime import seeded_generator
from poschan.stats import paired_difference, proportion, versus_chance
from poschan.taps import extract_pooled

READOUTS = {"accuracy": "plain", "accuracy_permuted_test": "permuted at test",
            "accuracy_permuted_train": "permuted at train and test", "accuracy_sorted": "sorted channels (order-free)",
            "accuracy_moments": "channel moments (order-free)"}
PERMUTATION_READOUTS = ("accuracy", "accuracy_permuted_test", "accuracy_permuted_train")
UNIT, ITEM = "seeds (canvases, readout fit, permutations; one backbone)", "test canvases"


@dataclass(frozen=True)
class ProbeCanvases:
    """What the readouts see: images pasted at a random cell of a ``grid``×``grid`` canvas (data.stream), labelled
    by ``task`` (location: the cell; semantic: the class); ``train_size`` / ``test_size`` canvases per seed."""

    task: str = "location"
    grid: int = 3
    canvas: int | None = None
    background: str = "mean"
    train_size: int = 2000
    test_size: int = 1000
    batch_size: int = 200

    def validate(self) -> None:
        """A UserError (one line) for sizes that cannot run (grid, canvas and task: checked by ``stream``)."""
        for key in ("train_size", "test_size", "batch_size"):
            if getattr(self, key) is None or getattr(self, key) < 1:
                raise UserError(f"{key} must be >= 1, got {getattr(self, key)}")

    def stream(self, images: ImageSet, seed: int) -> CanvasStream:
        """The canvases of ``images`` (in order), drawn with ``seed``."""
        return CanvasStream(images, self.task, self.grid, self.batch_size, seed=seed, canvas=self.canvas,
                            background=self.background, shuffle=False)


@dataclass
class ProbeResult:
    """Per layer (``rows``): its channels, the accuracy of each readout of READOUTS (statistics with intervals),
    ``chance`` and ``vs_chance``; ``comparisons``: the paired differences; ``per_seed``: accuracies per seed;
    ``outcomes``: per layer and readout, the 0/1 outcome of every test canvas per seed (for comparisons between
    models probed on the same canvases)."""

    rows: list[dict]
    comparisons: list[dict]
    per_seed: list[dict]
    n_train: int
    n_test: int
    outcomes: dict[str, dict[str, list[np.ndarray]]] = dataclasses.field(default_factory=dict, repr=False)

    def metrics(self) -> dict:
        return {"layers": self.rows, "comparisons": self.comparisons, "n_train": self.n_train, "n_test": self.n_test}


def draw(images: ImageSet, n: int, seed: int) -> ImageSet:
    """``n`` images drawn at random with ``seed``, each image of the set equally often (±1) when n > len."""
    generator = torch.Generator().manual_seed(seed)
    repeats = -(-n // len(images))
    index = torch.cat([torch.randperm(len(images), generator=generator) for _ in range(repeats)])[:n]
    return dataclasses.replace(images, images=images.images[index], labels=images.labels[index])


def check_readouts(readouts: Sequence[str]) -> None:
    """Refuse unknown or repeated readout keys, or a set without the plain readout (the comparisons' baseline)."""
    unknown = [k for k in readouts if k not in READOUTS]
    if unknown or len(set(readouts)) != len(readouts) or "accuracy" not in readouts:
        raise UserError(f"readouts must be distinct keys of {', '.join(READOUTS)} including 'accuracy', "
                        f"got {list(readouts)}")


def probe_layer(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, seed: int, c: float,
                generator: torch.Generator, readouts: Sequence[str] = tuple(READOUTS)) -> dict[str, np.ndarray]:
    """The 0/1 outcomes per test row of each readout of ``readouts`` (keys of READOUTS) of one layer and seed:
    plain; the plain readout on channels permuted per test row; one fit and tested on permuted channels; and the
    order-free ones, fit and tested on a permutation-invariant code of the features (``order_free_code``)."""
    test_perm = permute_features(test_x, generator)  # both permutations drawn whatever is asked: the same draws
    train_perm = permute_features(train_x, generator)
    plain = fit_readout(train_x, train_y, seed=seed, c=c)
    fits = {
        "accuracy": lambda: readout_outcomes(plain, test_x, test_y),
        "accuracy_permuted_test": lambda: readout_outcomes(plain, test_perm, test_y),
        "accuracy_permuted_train": lambda: readout_outcomes(fit_readout(train_perm, train_y, seed=seed, c=c),
                                                            test_perm, test_y),
    }
    for kind in ("sorted", "moments"):
        fits[f"accuracy_{kind}"] = lambda kind=kind: readout_outcomes(
            fit_readout(order_free_code(train_x, kind), train_y, seed=seed, c=c), order_free_code(test_x, kind),
            test_y)
    return {key: fits[key]() for key in readouts}


def _comparisons(outcomes: dict[str, dict[str, list[np.ndarray]]]) -> list[dict]:
    """Per layer: the plain accuracy minus each other readout's, on the same seeds and test canvases."""
    return [{"name": f"{layer}:plain_vs_{key.removeprefix('accuracy_')}", "a": READOUTS["accuracy"],
             "b": READOUTS[key],
             "question": (f"Does the readout at {layer} lose accuracy when the channels are {READOUTS[key]}?"
                          if key in PERMUTATION_READOUTS else
                          f"Does the readout at {layer} lose accuracy when it sees only the {READOUTS[key]}?"),
             **paired_difference(o["accuracy"], o[key], bounds=(-1.0, 1.0), unit=UNIT, item=ITEM)}
            for layer, o in outcomes.items() for key in o if key != "accuracy"]


def probe_study(model: nn.Module, layers: Sequence[str], train_set: ImageSet, test_set: ImageSet,
                canvases: ProbeCanvases = ProbeCanvases(), *, seeds: Sequence[int] = (0,), c: float = DEFAULT_C,
                readouts: Sequence[str] = tuple(READOUTS), device: torch.device | str = "cpu",
                progress: bool = False) -> ProbeResult:
    """Probe the pooled features of ``layers`` (dotted names) of ``model`` (frozen, on ``device``; re-normalised
    for its ``in_chans`` / ``input_norm`` where it has them): per seed, canvases of images drawn from
    ``train_set`` fit the ``readouts`` (keys of READOUTS; see ``probe_layer``; inverse L2 strength ``c``) and
    canvases of ``test_set`` score them."""
    canvases.validate()
    check_readouts(readouts)
    in_chans, input_norm = getattr(model, "in_chans", train_set.channels), getattr(model, "input_norm", None)
    chance = 1 / canvases.stream(train_set, 0).num_classes
    per_seed, channels = [], {}
    outcomes: dict[str, dict[str, list[np.ndarray]]] = {layer: {k: [] for k in readouts} for layer in layers}
    for seed in tqdm(seeds, desc="probe seeds", disable=None if progress else True, leave=False):
        features = []
        for images, n, stream_seed in ((train_set, canvases.train_size, seed),
                                       (test_set, canvases.test_size, seed + TEST_SEED_OFFSET)):
            # re-normalised after drawing: never a model-sized copy of a whole split
            drawn = draw(images, n, stream_seed).for_model(in_chans, input_norm)
            features += extract_pooled(model, canvases.stream(drawn, stream_seed), layers, device=device)
        train_f, train_y, test_f, test_y = features
        for layer in layers:
            channels[layer] = train_f[layer].shape[1]
            scores = probe_layer(train_f[layer], train_y, test_f[layer], test_y, seed=seed, c=c,
                                 generator=seeded_generator(seed, layer), readouts=readouts)
            for key, hits in scores.items():
                outcomes[layer][key].append(hits)
            per_seed.append({"seed": seed, "layer": layer, **{k: float(v.mean()) for k, v in scores.items()}})
    rows = [{"layer": layer, "channels": channels[layer],
             **{key: proportion(outcomes[layer][key], unit=UNIT, item=ITEM) for key in readouts},
             "chance": chance, "vs_chance": versus_chance(outcomes[layer]["accuracy"], chance)}
            for layer in layers]
    return ProbeResult(rows, _comparisons(outcomes), per_seed, canvases.train_size, canvases.test_size, outcomes)
