"""Post-hoc debiasing: mask a classifier's position channels without retraining, and measure what it buys.

``debias_study`` masks the top-N channels of a ranking of one layer (``taps.mask_channels``: zero, or each channel
replaced by its mean over the images) and, as the control, N random channels (several seeded draws,
``control.ablation.random_channels``), and scores the classifier with and without the mask by Zhang's (2019)
two-crop protocol (``metrics.invariance.invariance_outcomes``): consistency (two random crops of the image's canvas
agree), circular consistency (two random rolls of the centre crop agree) and, on the centre crop, the accuracy
(labels given) or the fidelity to the unmasked model (no labels: the share of images whose predicted class the mask
leaves unchanged). Every crop pair, roll pair and centre crop is the same with and without a mask (one ``seed``), so
every comparison is paired image by image.

``save_debiased`` / ``load_debiased`` keep a debiased model: the state dict as it is plus a JSON sidecar naming the
layer, channels, mode and means; loading gives a ``Debiased`` module that masks on every forward.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from poschan import stats
from poschan.control.ablation import channel_counts, random_channels, ranked_orders
from poschan.data.shift_pairs import ShiftPairTransform
from poschan.data.sources import as_image_set
from poschan.errors import UserError
from poschan.locate.ranking import ChannelRanking
from poschan.metrics.invariance import invariance_outcomes
from poschan.metrics.segmentation import one_model
from poschan.models.weights import load_state, read_state_dict, weights_fingerprint
from poschan.results import atomic_torch_save, atomic_write_text
from poschan.runtime import eval_mode
from poschan.taps import MASK_MODES, check_mask_mode, get_layer, mask_channels, pooled_features, resolve_layers

SIDECAR_SCHEMA = "poschan-debias/1"
SIDECAR_SUFFIX = ".debias.json"  # the sidecar of MODEL.pt is MODEL.pt.debias.json
SETS = {"ranked": "ranking seeds", "random": "random draws"}  # the channel sets and their units
SHIFT_METRICS = ("consistency", "circular_consistency")
DEFAULT_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.25)


# The columns of a DebiasResult's table.
TABLE = ("n", "fraction", "set", "consistency", "circular_consistency", "accuracy", "fidelity", "consistency_gain",
         "circular_consistency_gain", "cost", "consistency_gain_vs_random", "circular_consistency_gain_vs_random",
         "cost_vs_random")


@dataclass
class DebiasResult:
    """``debias_study``'s answer; every number a ``poschan.stats`` statistic.

    ``score``: "accuracy" (labels were given) or "fidelity" (agreement of the centre-crop prediction with the
    unmasked model's). ``unmasked``: consistency, circular consistency and the score without a mask. ``rows``: one per
    (N, channel set), set "ranked" (units: the ranking seeds) or "random" (units: the random draws), holding the
    masked channels, the masked ``consistency`` / ``circular_consistency`` / score, their ``*_gain`` (masked −
    unmasked) and the ``cost`` (unmasked − masked score); a ranked row also holds ``*_vs_random``, its gain or cost
    minus the random control's. ``comparisons``: those ranked − random differences as comparison entries (name,
    question, p-value). ``means``: the fill of mode "mean" (None for "zero")."""

    layer: str
    channels: int
    mode: str
    ranking: str
    key: str
    score: str
    counts: list[int]
    random_draws: int
    protocol: dict
    unmasked: dict
    rows: list[dict]
    comparisons: list[dict]
    means: Tensor | None = field(default=None, compare=False, repr=False)

    def ranked_channels(self, n: int, seed_index: int = 0) -> list[int]:
        """The top-``n`` channels masked for the ``seed_index``-th ranking seed (a ranking without per-seed scores:
        its one order)."""
        row = next((r for r in self.rows if r["set"] == "ranked" and r["n"] == n), None)
        if row is None:
            raise UserError(f"N = {n} was not studied; studied: {', '.join(map(str, self.counts))}")
        return list(row["channels"][seed_index])

    def table(self) -> list[dict]:
        """The rows as table.csv shows them: the scores, gains and costs (the channel lists left out)."""
        return [{k: r[k] for k in TABLE if k in r} for r in self.rows]

    def metrics(self) -> dict:
        """The metrics of the results contract (results.json)."""
        return {"layer": self.layer, "channels": self.channels, "mode": self.mode, "ranking": self.ranking,
                "key": self.key, "score": self.score, "counts": self.counts, "random_draws": self.random_draws,
                "protocol": self.protocol, "unmasked": self.unmasked, "rows": self.rows,
                "comparisons": self.comparisons, "means": None if self.means is None else self.means.tolist()}


def _counts(fractions: Sequence[float | int | str] | float | int | str, channels: int) -> list[int]:
    """Channel counts of ``fractions``: a float is a share of the channels (0.05: 5%), an int a count, a text
    "5%" or "3" as ``channel_counts`` reads it; counts that coincide are one condition."""
    values = [fractions] if isinstance(fractions, (int, float, str)) else list(fractions)
    if not values:
        raise UserError("give at least one fraction or channel count, e.g. 0.05 or 5%")
    as_text = [f"{100 * v:g}%" if isinstance(v, float) else v for v in values]
    return channel_counts(as_text, channels)


def _default_key(ranking: object, key: str | None) -> str:
    if key is not None:
        return key
    if isinstance(ranking, ChannelRanking) and "overall" not in ranking.scores:
        return "position" if "position" in ranking.scores else ranking.keys[0]  # dimest ranks by "position"
    return "overall"


def _centre_crops(images: Tensor, shift: ShiftPairTransform) -> Tensor:
    """(N, C, s, s) centre crops of ``images`` centred on ``shift``'s canvases: what the unmasked reference and the
    mean fill are computed on."""
    return shift.view(shift.place(images), shift.centre(len(images)))


@torch.no_grad()
def _means(model: nn.Module, layer: str, centre: Tensor, batch_size: int, device: torch.device | str) -> Tensor:
    """(C,) mean of ``layer``'s pooled output (``taps.pooled_features``) over the ``centre`` crops."""
    with eval_mode(model):
        pooled = [pooled_features(model, centre[i:i + batch_size].to(device), [layer])[layer].double().cpu()
                  for i in range(0, len(centre), batch_size)]
    return torch.cat(pooled).mean(0).float()


@torch.no_grad()
def _predictions(model: nn.Module, centre: Tensor, batch_size: int, device: torch.device | str) -> Tensor:
    """(N,) the unmasked model's top-1 classes of the ``centre`` crops: the reference of fidelity."""
    with eval_mode(model):
        return torch.cat([model(centre[i:i + batch_size].to(device)).argmax(dim=1).cpu()
                          for i in range(0, len(centre), batch_size)])


def _item(metric: str, passes: int) -> str:
    pairs = f"{passes} shift pair{'s' * (passes > 1)}"
    return f"images (each over its {pairs})" if metric in SHIFT_METRICS else "images (centre crop)"


def view_channels(model: nn.Module, layer: str, images: Tensor, shift: ShiftPairTransform,
                  device: torch.device | str = "cpu") -> int:
    """The channels of ``layer`` on the centre view of ``images`` (as the model takes them); refused with one line
    when the model cannot take views of ``shift``'s crop side."""
    (layer,) = resolve_layers(model, [layer])
    x = shift.view(shift.place(images), shift.centre(len(images))).to(device)
    try:
        with eval_mode(model):
            return pooled_features(model, x, [layer])[layer].shape[1]
    except RuntimeError as err:  # e.g. a crop too small for the network
        raise UserError(f"the model cannot take {shift.crop} px views ({str(err).splitlines()[0]}); use a larger "
                        "crop or image size") from None


def debias_study(model: nn.Module, layer: str, images: Tensor, labels: Tensor | None = None, *,
                 ranking: ChannelRanking | Tensor | Sequence[int],
                 fractions: Sequence[float | int | str] | float | int | str = DEFAULT_FRACTIONS,
                 mode: str = "zero", shift: ShiftPairTransform | None = None, random_draws: int = 5, seed: int = 0,
                 passes: int = 5, max_shift: int | None = None, key: str | None = None, means: Tensor | None = None,
                 batch_size: int = 256, device: torch.device | str = "cpu") -> DebiasResult:
    """What masking a classifier's position channels buys in shift invariance, and what it costs.

    ``model``: a classifier (logits (B, K)) on ``device``; ``layer``: a dotted layer name (or a PoolNet's stage
    name / a name inside its backbone) whose (B, C, H, W) output is masked. ``images``: (N, C, h, w) as the model
    takes them; each is centred on the zero canvas of ``shift`` (default: crops of the image side s from canvases of
    round(s·256/224)). ``labels``: (N,) classes, scored as accuracy; None: fidelity to the unmasked model's
    centre-crop predictions. ``ranking``: a ChannelRanking of this layer (score ``key``: default "overall", for
    dimest "position"; one top-N set per ranking seed when it keeps per-seed scores) or a channel order, best first.
    ``fractions``: shares of the channels (floats), counts (ints) or texts "5%"; shares that give the same N are
    one condition. ``mode``: "zero", or "mean" (the masked channels take ``means``, default their mean pooled
    output over the centre crops of ``images``). ``random_draws`` sets of N random channels per N (keyed by
    ``seed`` and N); ``passes`` crop pairs and roll pairs per image (rolls up to ``max_shift``, default S − s),
    drawn from ``seed``: the same for every mask.

    Statistics (``poschan.stats``, per-image outcomes as the items): the masked scores, each one's gain (masked −
    unmasked consistency, circular consistency) and cost (unmasked − masked accuracy or fidelity) for the ranked
    channels (units: ranking seeds) and for the random ones (units: draws), and ranked − random (the units paired
    by ``stats.paired_units``). One model: the variation between training seeds is not covered (said in each
    ``method``).
    """
    if mode not in MASK_MODES:
        raise UserError(f"unknown mask mode {mode!r}; allowed: {', '.join(MASK_MODES)}")
    if random_draws < 1 or passes < 1 or batch_size < 1:
        raise UserError(f"random_draws, passes and batch_size must be >= 1, got {random_draws}, {passes} and "
                        f"{batch_size}")
    images = as_image_set(images, labels).images
    if not len(images):
        raise UserError("no images given")
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1).cpu()
    shift = shift or ShiftPairTransform(max(images.shape[-2:]))
    (layer,) = resolve_layers(model, [layer])
    centre = _centre_crops(images, shift)
    with eval_mode(model):  # refuses a layer without a (B, C, H, W) output
        channels = pooled_features(model, centre[:1].to(device), [layer])[layer].shape[1]
    if isinstance(ranking, ChannelRanking):
        ranking.check_for(layer, channels, weights=weights_fingerprint(model))
    key = _default_key(ranking, key)
    orders = ranked_orders(ranking, key)
    if any(sorted(o.tolist()) != list(range(channels)) for o in orders.values()):
        raise UserError(f"a channel order must list each of the {channels} channels of layer {layer!r} once")
    counts = _counts(fractions, channels)
    if mode == "mean" and means is None:
        means = _means(model, layer, centre, batch_size, device)
    if means is not None:
        means = torch.as_tensor(means, dtype=torch.float32).reshape(-1).cpu()
        if len(means) != channels:
            raise UserError(f"means must hold one value per channel of layer {layer!r} ({channels}), got {len(means)}")
    score = "accuracy" if labels is not None else "fidelity"
    reference = labels if labels is not None else _predictions(model, centre, batch_size, device)

    cache: dict[tuple[int, ...], dict[str, np.ndarray]] = {}

    def outcomes(chosen: Sequence[int] | None) -> dict[str, np.ndarray]:
        """Per-image outcomes with ``chosen`` channels masked (None: no mask), computed once per channel set."""
        index = () if chosen is None else tuple(sorted(int(c) for c in chosen))
        if index not in cache:
            hook = mask_channels(model, layer, list(index), mode=mode, means=means) if index else nullcontext()
            with hook:
                found = invariance_outcomes(model, images, reference, shift, max_shift=max_shift, passes=passes,
                                            seed=seed, batch_size=batch_size, device=device, latent_layer=layer)
            cache[index] = {"consistency": found["consistency"],
                            "circular_consistency": found["circular_consistency"], score: found["accuracy"]}
        return cache[index]

    clean = outcomes(None)
    unmasked = {m: one_model(stats.proportion([clean[m]], unit="models", item=_item(m, passes)))
                for m in (*SHIFT_METRICS, score)}
    rows, comparisons = [], []
    for n in counts:
        sets = {"ranked": [order[:n].tolist() for order in orders.values()],
                "random": [c.tolist() for c in random_channels(channels, n, random_draws, seed)]}
        masked = {name: [outcomes(s) for s in chosen] for name, chosen in sets.items()}
        by_set = {name: _row(name, n, channels, chosen, masked[name], clean, score, passes)
                  for name, chosen in sets.items()}
        for metric in (*SHIFT_METRICS, score):
            versus = _versus_random(masked, metric, metric == score, n, score, passes, _ranking_name(ranking))
            by_set["ranked"][f"{'cost' if metric == score else metric + '_gain'}_vs_random"] = versus
            comparisons.append(versus)
        rows += by_set.values()
    protocol = {"crop": shift.crop, "canvas": shift.canvas, "max_offset": shift.max_offset,
                "circular_max_shift": shift.largest_roll(max_shift), "passes": passes,
                "images": len(images), "seed": seed,
                "score": ("accuracy of the centre crop" if score == "accuracy" else
                          "fidelity: share of images whose centre-crop class the mask leaves unchanged"),
                "means": "mean pooled output over the centre crops of the images" if mode == "mean" else None}
    return DebiasResult(layer, channels, mode, _ranking_name(ranking), key, score, counts, random_draws, protocol,
                        unmasked, rows, comparisons, means if mode == "mean" else None)


def _ranking_name(ranking: object) -> str:
    """The ranking's method (flip, dimest, ...), or "ranking" for a plain channel order."""
    return ranking.method if isinstance(ranking, ChannelRanking) else "ranking"


def _row(name: str, n: int, channels: int, chosen: list[list[int]], masked: list[dict[str, np.ndarray]],
         clean: dict[str, np.ndarray], score: str, passes: int) -> dict:
    """One (N, channel set) row: the masked scores, the gains and the cost, over the set's units."""
    unit = SETS[name]
    row: dict = {"n": n, "fraction": n / channels, "set": name, "units": unit, "channels": chosen}
    for metric in (*SHIFT_METRICS, score):
        groups = [m[metric] for m in masked]
        row[metric] = one_model(stats.proportion(groups, unit=unit, item=_item(metric, passes)))
    for metric in SHIFT_METRICS:
        gain = stats.paired_difference([m[metric] for m in masked], [clean[metric]] * len(masked),
                                       bounds=(-1.0, 1.0), unit=unit, item=_item(metric, passes))
        gain["method"] += "; masked − unmasked"
        row[f"{metric}_gain"] = one_model(gain)
    cost = stats.paired_difference([clean[score]] * len(masked), [m[score] for m in masked], bounds=(-1.0, 1.0),
                                   unit=unit, item=_item(score, passes))
    cost["method"] += f"; unmasked − masked {score}"
    row["cost"] = one_model(cost)
    return row


def _versus_random(masked: dict[str, list[dict[str, np.ndarray]]], metric: str, is_cost: bool, n: int, score: str,
                   passes: int, ranking: str) -> dict:
    """Ranked − random gain (or cost) of ``metric``: the unmasked score cancels, so it is the ranked-masked minus the
    random-masked score (a cost: the reverse), the units paired by ``stats.paired_units``."""
    ranked, random = ([m[metric] for m in masked[name]] for name in SETS)
    a, b, unit, note = stats.paired_units(ranked, random, SETS["ranked"], SETS["random"])
    what = "cost" if is_cost else "gain"
    if is_cost:
        a, b = b, a
    out = stats.paired_difference(a, b, bounds=(-1.0, 1.0), unit=unit, item=_item(metric, passes))
    out["method"] += note + (f"; ranked cost − random cost = random-masked − ranked-masked {score}" if is_cost else
                             f"; ranked gain − random gain = ranked-masked − random-masked {metric}")
    label = metric.replace("_", " ")
    question = (f"Does masking the top {n} {ranking} channels cost more {label} than masking {n} random channels?"
                if what == "cost" else
                f"Does masking the top {n} {ranking} channels raise the {label} more than masking {n} random "
                "channels?")
    name = f"ranked_vs_random_{'cost' if what == 'cost' else metric + '_gain'}_n{n}"
    return stats.comparison(one_model(out), name, f"top {n} {ranking} channels masked: {label} {what}",
                            f"{n} random channels masked: {label} {what}", question)


# -- a debiased model, saved and loaded ------------------------------------------------------------------------------

class Debiased(nn.Module):
    """``model`` whose ``channels`` of ``layer`` are masked (``mode`` zero or mean, fill ``means``) on every forward.

    The mask is the ``taps.mask_channels`` hook, attached for the duration of each forward and removed after it, so
    ``model`` itself is never changed and outside this wrapper it runs unmasked. Its layers are ``model.<name>``.
    """

    def __init__(self, model: nn.Module, layer: str, channels: Sequence[int], mode: str = "zero",
                 means: Tensor | None = None):
        super().__init__()
        check_mask_mode(mode, means)
        get_layer(model, layer)
        self.model, self.layer, self.mode = model, layer, mode
        self.channels = [int(c) for c in channels]
        self.register_buffer("means", None if means is None else torch.as_tensor(means, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        with mask_channels(self.model, self.layer, self.channels, mode=self.mode, means=self.means):
            return self.model(x)


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar beside a saved debiased state dict: ``PATH.debias.json``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def save_debiased(model: nn.Module, layer: str, channels: Sequence[int] | Tensor, mode: str, means: Tensor | None,
                  path: str | Path) -> Path:
    """Save ``model`` debiased by masking ``channels`` of ``layer`` (``mode`` zero, or mean with ``means``, one per
    channel of the layer) at ``path``; returns ``path``.

    The choice: folding a mask into the following layer's weights is exact only for some architectures (a zeroed
    channel into a linear or convolutional successor; mean-fills then become biases, and a normalisation or a
    branch in between breaks it), so nothing is folded. ``path`` holds the model's unchanged state dict (tensors
    only: ``torch.load(path, weights_only=True)`` and ``model.load_state_dict`` read it as any state dict) and
    ``PATH.debias.json`` (``sidecar_path``) names the layer, channels, mode, means and the weights' fingerprint;
    ``load_debiased`` puts the two together again.
    """
    check_mask_mode(mode, means)
    (layer,) = resolve_layers(model, [layer])
    chosen = [int(c) for c in torch.as_tensor(channels, dtype=torch.long).flatten().tolist()]
    if len(set(chosen)) != len(chosen) or any(c < 0 for c in chosen):
        raise UserError(f"channels must be distinct indices >= 0, got {chosen}")
    channels_known = _layer_channels(model, layer)
    if chosen and channels_known is not None and max(chosen) >= channels_known:
        raise UserError(f"channel {max(chosen)} is out of range for layer {layer!r} with {channels_known} channels")
    if means is not None:
        means = torch.as_tensor(means, dtype=torch.float32).reshape(-1)
        if chosen and max(chosen) >= len(means):
            raise UserError(f"channel {max(chosen)} is out of range for {len(means)} means (one per channel)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    atomic_torch_save(state, path)
    sidecar = {"schema": SIDECAR_SCHEMA, "weights": path.name, "fingerprint": weights_fingerprint(model),
               "layer": layer, "channels": chosen, "mode": mode,
               "means": None if means is None else [float(v) for v in means]}
    atomic_write_text(sidecar_path(path), json.dumps(sidecar, indent=1) + "\n")
    return path


def read_sidecar(path: str | Path) -> dict:
    """The sidecar of the debiased state dict at ``path`` (one-line UserError when it is missing or not one)."""
    where = sidecar_path(path)
    try:
        d = json.loads(where.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read the debias sidecar {str(where)!r} of {str(path)!r}: {err}") from None
    if not isinstance(d, dict) or d.get("schema") != SIDECAR_SCHEMA:
        raise UserError(f"{where} is not a poschan debias sidecar (schema {SIDECAR_SCHEMA!r}); write one with "
                        "save_debiased")
    try:
        means = None if d["means"] is None else torch.tensor([float(v) for v in d["means"]], dtype=torch.float32)
        out = {"layer": str(d["layer"]), "channels": [int(c) for c in d["channels"]], "mode": str(d["mode"]),
               "means": means, "fingerprint": d.get("fingerprint")}
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{where} is not a valid debias sidecar ({type(err).__name__}: {err})") from None
    if out["mode"] not in MASK_MODES:
        raise UserError(f"{where}: unknown mask mode {out['mode']!r}; allowed: {', '.join(MASK_MODES)}")
    return out


def load_debiased(model: nn.Module, path: str | Path) -> Debiased:
    """``model`` with the state dict saved at ``path`` by ``save_debiased`` (read by the one loader,
    ``models.weights.load_state``; files holding pickled objects are refused) and its mask re-attached: a
    ``Debiased`` module that masks on every forward. ``model`` must have the saved model's architecture; a state
    dict whose fingerprint differs from the sidecar's (the weights file replaced) is refused."""
    side = read_sidecar(path)
    state = read_state_dict(path, "debiased weights")
    load_state(model, state, path)
    if side["fingerprint"] is not None and weights_fingerprint(model) != side["fingerprint"]:
        raise UserError(f"{path} holds other weights than its sidecar {sidecar_path(path)} was written for")
    channels = _layer_channels(model, side["layer"])
    if channels is not None:
        if side["channels"] and max(side["channels"]) >= channels:
            raise UserError(f"the sidecar masks channel {max(side['channels'])}; layer {side['layer']!r} has "
                            f"{channels} channels")
        if side["means"] is not None and len(side["means"]) != channels:
            raise UserError(f"the sidecar holds {len(side['means'])} means; layer {side['layer']!r} has {channels} "
                            "channels")
    return Debiased(model, side["layer"], side["channels"], side["mode"], side["means"])


def _layer_channels(model: nn.Module, layer: str) -> int | None:
    """The output channels of ``layer`` where its module states them (a convolution, a norm), else None (the
    mask hook then checks the channels on the first forward)."""
    target = get_layer(model, layer)
    for attr in ("out_channels", "num_features"):
        if isinstance(getattr(target, attr, None), int):
            return getattr(target, attr)
    return None
