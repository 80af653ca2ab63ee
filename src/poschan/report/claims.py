"""The paper's claims against our measurements, each decided by a rule stated here, at the scope it was measured.

Every verdict reads only the statistics a run wrote (estimates with 95% intervals and paired comparisons);
nothing is judged by eye. Each claim states its smallest effect of interest (SESOI): "reproduced" needs the
interval to exclude 0 in the claimed direction, "not reproduced" needs it to exclude every effect of at least the
SESOI in that direction (an equivalence-style test), anything else is "inconclusive". Claims are grouped in
families (one per experiment); within each, the p-values of the claims' effect tests are adjusted by
Benjamini-Hochberg (false discovery rate 5%), and a "reproduced" whose adjusted p is not below 0.05 becomes
"inconclusive". Every verdict holds at its run's scope (data, model, width, training samples, units).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as st

from poschan.measure.budget_response import FLAT_PER_DOUBLING, PAPER_SAMPLES
from poschan.report.document import Table, interval, number
from poschan.results import Run
from poschan.stats import METHOD_VERSION, p_text

ABSTRACT = "paper abstract (arXiv 2108.07884)"
BEYOND = "beyond the paper"
FDR = 0.05

# The smallest effects of interest. The two permutation claims are judged on one scale, the share of the
# above-chance accuracy the permutation keeps, so that the location and semantic tasks meet the same standard:
# "at chance" keeps less than AT_CHANCE_SHARE of it, "largely survives" more than LARGELY_SHARE.
PAPER_FRACTION = 0.05  # the paper zeroes 100 of 2048 channels
ACCURACY_SESOI = 0.01  # accuracy (or consistency) difference: one point in a hundred
MIOU_SESOI = 0.01  # mIoU difference (drops, selectivities)
AT_CHANCE_SHARE = 0.1
LARGELY_SHARE = 0.5
ABOVE_CHANCE_SHARE = 0.1  # "position survives pooling": at least a tenth of the possible above-chance accuracy

RULES = {
    "direction": "reproduced: the 95% interval excludes 0 in the claimed direction; not reproduced: it excludes "
                 "every effect of at least the SESOI in that direction; inconclusive: otherwise",
    "above chance": f"reproduced: the accuracy's 95% interval lies above chance (its test, p < 0.05 after the "
                    f"adjustment); not reproduced: its upper end keeps less than {ABOVE_CHANCE_SHARE:g} of the "
                    "possible above-chance accuracy (1 − chance); inconclusive: otherwise",
    "at chance": f"reproduced: the 95% interval of the share of above-chance accuracy the permutation keeps lies "
                 f"below {AT_CHANCE_SHARE:g}; not reproduced: it lies above {AT_CHANCE_SHARE:g}; inconclusive: "
                 "otherwise (or the share cannot be estimated)",
    "trend": "reproduced: the 95% interval of the slope per doubling of the training budget excludes 0 toward the "
             "paper's claim; not reproduced: it excludes every slope of at least the SESOI toward it (flat, or "
             "moving away); inconclusive: otherwise",
    "superseded": "not decided: the run's intervals come from the two-level percentile bootstrap, which under-covers "
                  "with few networks and shared test items; it is decided again when the run is repeated",
    "largely survives": f"reproduced: the 95% interval of the share of above-chance accuracy kept under the "
                        f"permutation lies above {LARGELY_SHARE:g}; not reproduced: it lies below "
                        f"{LARGELY_SHARE:g}; inconclusive: otherwise (or the share cannot be estimated)",
}
SUPERSEDED = "not decided (older intervals)"
VERDICTS = ("reproduced", "not reproduced", "inconclusive", SUPERSEDED)


@dataclass(frozen=True)
class Claim:
    """One row of the claims table. ``p_value`` is the two-sided p of the claim's effect test (None where the
    verdict rests on an interval only); ``verdict`` is after the family's adjustment, ``unadjusted`` before."""

    claim: str
    source: str
    run: str
    scope: str
    measured: str
    sesoi: str
    verdict: str
    rule: str
    family: str
    p_value: float | None = None
    adjusted_p: float | None = None
    unadjusted: str = ""
    question: str = ""  # the claim without its setting (padding, N, region): the findings summary's line
    headline: bool = False  # the setting the summary reads (the main padding and grid, the N nearest the paper's)
    units: int = 0  # networks (or seeds) behind the verdict




def _stat_text(s: dict) -> str:
    if s.get("ci95") is None:
        return f"{number(s['mean'])} (no interval; n = {s['n']})"
    text = interval(s["mean"], *s["ci95"])
    if "p_value" in s:
        text += f", {p_text(s)}"
    return f"{text} (n = {s['n']})"


def direction(s: dict, sign: int, sesoi: float) -> str:
    """Verdict of "the difference ``s`` has sign ``sign``" (+1 or -1), with smallest effect of interest ``sesoi``."""
    lo, hi = (s["ci95"][0], s["ci95"][1]) if sign > 0 else (-s["ci95"][1], -s["ci95"][0])
    if lo > 0:
        return "reproduced"
    if hi < sesoi:
        return "not reproduced"
    return "inconclusive"


def above_chance(accuracy: dict, chance: float) -> str:
    lo, hi = accuracy["ci95"]
    if lo > chance:
        return "reproduced"
    if hi < chance + ABOVE_CHANCE_SHARE * (1 - chance):
        return "not reproduced"
    return "inconclusive"


def at_chance(share: dict) -> str:
    if share.get("estimable") is False:
        return "inconclusive"
    lo, hi = share["ci95"]
    if hi < AT_CHANCE_SHARE:
        return "reproduced"
    if lo > AT_CHANCE_SHARE:
        return "not reproduced"
    return "inconclusive"


def largely(share: dict) -> str:
    if share.get("estimable") is False:
        return "inconclusive"
    lo, hi = share["ci95"]
    if lo > LARGELY_SHARE:
        return "reproduced"
    if hi < LARGELY_SHARE:
        return "not reproduced"
    return "inconclusive"


def _name(run: Run) -> str:
    return run.path.name if run.path else "-"


def _units(n: int) -> str:
    return f"{n} network{'s' if n != 1 else ''}"


def _samples(run: Run, task: str) -> int:
    c = run.config
    if task == "semantic" and c.get("semantic_epochs"):
        return int(c["semantic_epochs"]) * int(c.get("semantic_train_size") or c["train_size"])
    return int(c.get("epochs", 0)) * int(c.get("train_size", 0))


def _training(run: Run, task: str) -> str:
    c = run.config
    samples = _samples(run, task)
    return (f"{c.get('data', '?')}, {c.get('model', '?')} width {c.get('width', '?')}, {samples:,} training "
            f"samples ({samples / PAPER_SAMPLES:.1%} of the paper's {PAPER_SAMPLES:,}), {c.get('schedule', '?')} "
            f"Adam lr {c.get('lr', '?')}")


def gap_scope(run: Run, task: str, n: int) -> str:
    return f"{_training(run, task)}; {_units(n)}"


def _seg_scope(run: Run, trained: Run | None, n: int) -> str:
    if trained is None:
        return f"segmenters of {run.config.get('checkpoint', '?')}; {_units(n)}"
    c = trained.config
    images = int(c.get("epochs", 0)) * int(c.get("train_size", 0))
    return (f"{c.get('data', '?')} {c.get('side', '?')} px, {c.get('layout', '?')} prior {c.get('layout_prior', '?')}, "
            f"{c.get('model', '?')} width {c.get('width', '?')}, {images:,} training images; {_units(n)} "
            "(the paper: DeepLabv3-ResNet-50 on Cityscapes)")


def _gap_claims(run: Run, _runs: dict[str, Run]) -> list[Claim]:
    row_keys = {"task", "head", "permute", "where", "padding", "grid", "accuracy", "chance", "vs_chance"}
    rows = [r for r in run.metrics.get("rows", []) if row_keys <= set(r)]  # runs of older versions: no claims
    paired = [p for p in run.metrics.get("comparisons", []) if {"task", "ci95", "retained_above_chance"} <= set(p)]
    out = []
    main_grid = min((r["grid"] for r in rows), default=None)
    for r in rows:
        if r["task"] == "location" and r["head"] == "gap-fc" and r["permute"] == "none":
            out.append(Claim(f"position survives global pooling (padding: {r['padding']}, {r['grid']}×{r['grid']} "
                             "grid)", ABSTRACT, _name(run), gap_scope(run, "location", r["accuracy"]["n"]),
                             f"location accuracy {_stat_text(r['accuracy'])}; chance {number(r['chance'])}, "
                             f"test of accuracy > chance: {p_text(r['vs_chance'])}",
                             f"share {ABOVE_CHANCE_SHARE:g} of the possible above-chance accuracy",
                             above_chance(r["accuracy"], r["chance"]), "above chance", "gap-study",
                             r["vs_chance"]["p_value"], question="position survives global pooling",
                             headline=r["padding"] == "zeros" and r["grid"] == main_grid, units=r["accuracy"]["n"]))
    by_row = {(r["task"], r["head"], r["permute"], r["where"], r["padding"], r["grid"]): r for r in rows}
    for p in paired:
        if p["where"] != "pooled" or p["head"] != "gap-fc" or p["padding"] != "zeros":
            continue
        row = by_row.get((p["task"], p["head"], p["permute"], p["where"], p["padding"], p["grid"]))
        if row is None:
            continue
        grid = f"{p['grid']}×{p['grid']} grid"
        source = BEYOND + " (per-sample permutation)" if p["permute"] == "per-sample" else ABSTRACT
        scope = gap_scope(run, p["task"], p["n"])
        share = p["retained_above_chance"]
        kept = (f"share of above-chance accuracy kept {_stat_text(share)}" if share.get("estimable", True)
                else f"share not estimable: {share['reason']}")
        setting = {"headline": p["grid"] == main_grid, "units": p["n"]}
        if p["task"] == "location" and p["permute"] == "test-only":
            out.append(Claim(f"a normally trained net reads position from the channel order: permuting its pooled "
                             f"channels at test time lowers location accuracy ({grid})", ABSTRACT, _name(run), scope,
                             f"permuted − unpermuted accuracy {_stat_text(p)}", f"accuracy {ACCURACY_SESOI:g}",
                             direction(p, -1, ACCURACY_SESOI), "direction", "gap-study", p.get("p_value"),
                             question="a normally trained net reads position from its channel order: permuting its "
                                      "pooled channels at test time lowers location accuracy", **setting))
        elif p["task"] == "location":
            out.append(Claim(f"with the channel order unusable ({p['permute']} permutation in training and test), "
                             f"location is at chance ({grid})", source, _name(run), scope,
                             f"{kept}; location accuracy {_stat_text(row['accuracy'])}; chance {number(row['chance'])}",
                             f"share kept {AT_CHANCE_SHARE:g}", at_chance(share), "at chance", "gap-study",
                             question=f"with the channel order unusable ({p['permute']} permutation in training and "
                                      "test), location is at chance", **setting))
        elif p["task"] == "semantic" and p["permute"] != "test-only":
            out.append(Claim(f"semantic information largely survives a {p['permute']} channel permutation in "
                             f"training and test ({grid})", source, _name(run), scope,
                             f"{kept}; permuted − unpermuted accuracy {_stat_text(p)}",
                             f"share kept {LARGELY_SHARE:g}", largely(share), "largely survives", "gap-study",
                             question=f"semantic information largely survives a {p['permute']} channel permutation in "
                                      "training and test", **setting))
    return out


INVARIANCE = {"consistency": "consistency (same class for two shifted crops)",
              "circular_consistency": "circular consistency (same class for two circular shifts)"}


def _augshift_claims(run: Run, _runs: dict[str, Run]) -> list[Claim]:
    """AugShift against plain training (the paper's claim) and against shift augmentation alone (the control
    that separates its latent loss from its shifted views)."""
    paired = {p["name"]: p for p in run.metrics.get("comparisons", []) if "name" in p and "ci95" in p}
    out = []
    for key, what in INVARIANCE.items():
        for other, claim in (("baseline", "AugShift improves the translation invariance of a CNN's output"),
                             ("shift_aug", "AugShift's latent loss improves translation invariance beyond its "
                                           "shifted views (shift augmentation alone)")):
            p = paired.get(f"augshift_vs_{other}_{key}")
            if p is not None:
                c = run.config
                scope = (f"{c.get('data', '?')}, {c.get('model', '?')} width {c.get('width', '?')}, "
                         f"{int(c.get('epochs', 0)) * int(c.get('train_size', 0)):,} training images "
                         f"(the paper's budget is not given), {c.get('schedule', '?')} Adam lr {c.get('lr', '?')}; "
                         f"{_units(p['n'])}")
                out.append(Claim(f"{claim}: {what}", ABSTRACT if other == "baseline" else
                                 BEYOND + " (control: the same shifted views, no latent loss)", _name(run), scope,
                                 f"AugShift − {p['b']} {_stat_text(p)}", f"consistency {ACCURACY_SESOI:g}",
                                 direction(p, +1, ACCURACY_SESOI), "direction", "augshift", p.get("p_value"),
                                 question=f"{claim}: {what}", headline=True, units=p["n"]))
    return out


def _trained(run: Run, runs: dict[str, Run]) -> Run | None:
    """The seg-train run whose networks ``run`` (ablate or attack) measured, if it is among ``runs``."""
    return runs.get("seg-train-" + _name(run).split("-", 1)[-1])


def nearest_paper(rows: Sequence[dict]) -> dict | None:
    """The row whose fraction of channels is nearest the paper's (None without rows)."""
    return min(rows, key=lambda row: abs(row["fraction"] - PAPER_FRACTION)) if rows else None


def paper_row(run: Run) -> dict | None:
    """The reliance row of an `ablate` run's flip ranking whose fraction of channels is nearest the paper's."""
    return nearest_paper([row for row in run.metrics.get("reliance", []) if row.get("ranking", "flip") == "flip"])


def _ablate_claims(run: Run, runs: dict[str, Run]) -> list[Claim]:
    """The paper's flip-ranked channels against uniform random channels at every N (its control), with the
    magnitude-matched control and the ranking closest to the single-channel knock-out reference beside them."""
    paired = {p["name"]: p for p in run.metrics.get("comparisons", []) if "name" in p and "ci95" in p}
    closest = run.metrics.get("closest_to_reference")
    rankings = {v["ranking"]: v for v in run.metrics.get("rankings", [])}
    beside = ""
    if closest in rankings:
        beside = (f"; ranking closest to the knock-out reference: {closest} (shortfall "
                  f"{_stat_text(rankings[closest]['shortfall'])})")
    out = []
    paper = paper_row(run)
    paper_n = paper["n"] if paper else None
    for row in run.metrics.get("reliance", []):
        name = row.get("ranking", "flip")
        p = paired.get(f"{name}_vs_random_drop_n{row.get('n')}")
        if name != "flip" or p is None:
            continue
        matched = paired.get(f"{name}_vs_matched_drop_n{row.get('n')}")
        control = f"; flip − magnitude-matched drop {_stat_text(matched)}" if matched else ""
        out.append(Claim(f"a segmenter relies on its overall-position channels: zeroing the top {row['n']} "
                         f"({row['fraction']:.0%}) flip-ranked channels lowers mIoU more than zeroing as many random "
                         "channels", ABSTRACT, _name(run), _seg_scope(run, _trained(run, runs), p["n"]),
                         f"flip − random drop {_stat_text(p)}; flip drop {_stat_text(row['ranked_drop'])}; "
                         f"random drop {_stat_text(row['random_drop'])}{control}{beside}", f"mIoU {MIOU_SESOI:g}",
                         direction(p, +1, MIOU_SESOI), "direction", "ablate", p.get("p_value"),
                         question="a segmenter relies on its overall-position channels: zeroing the top-N "
                                  "flip-ranked channels lowers mIoU more than zeroing as many random channels",
                         headline=row["n"] == paper_n, units=p["n"]))
        beside = ""  # said once, on the first row
    return out


def _attack_claims(run: Run, runs: dict[str, Run]) -> list[Claim]:
    """Each ranked method's selectivity (drop inside minus drop outside the region) against as many random
    channels, paired by network; the raw selectivity, the random channels' and the opposite region's beside it."""
    paired = {p["name"]: p for p in run.metrics.get("comparisons", []) if "name" in p and "ci95" in p}
    rows = [r for r in run.metrics.get("attack", []) if "selectivity" in r and "ci95" in r["selectivity"]]
    random = {(r["region"], r["n"]): r for r in rows if r["method"] == "random"}
    out = []
    for r in rows:
        if r["method"] not in ("flip", "shift"):
            continue
        versus = paired.get(f"{r['region']}_n{r['n']}_{r['method']}_vs_random_selectivity")
        if versus is None:
            continue
        control = random.get((r["region"], r["n"]))
        opposite = paired.get(f"{r['region']}_n{r['n']}_{r['method']}_vs_opposite_selectivity")
        beside = f"; random channels {_stat_text(control['selectivity'])}" if control else ""
        beside += f"; own − opposite region's channels {_stat_text(opposite)}" if opposite else ""
        out.append(Claim(f"zeroing the {r['method']}-ranked channels of one region degrades that region more than "
                         f"the rest, beyond as many random channels (region {r['region']}, N = {r['n']})", ABSTRACT,
                         _name(run), _seg_scope(run, _trained(run, runs), versus["n"]),
                         f"ranked − random selectivity {_stat_text(versus)}; selectivity (drop inside − drop "
                         f"outside) {_stat_text(r['selectivity'])}{beside}", f"mIoU {MIOU_SESOI:g}",
                         direction(versus, +1, MIOU_SESOI), "direction", "attack", versus.get("p_value"),
                         question=f"zeroing the {r['method']}-ranked channels of one region degrades that region more "
                                  "than the rest, beyond as many random channels",
                         headline=r["region"] == rows[0]["region"], units=versus["n"]))
    return out


def _budget_claims(run: Run, runs: dict[str, Run]) -> list[Claim]:
    """The GAP study's claims at each budget of the budget response (each cell read as a GAP study of its own
    width and samples), then one row per trend: does the metric move toward the paper's claim with more training?"""
    out = []
    for cell in run.metrics.get("cells", []):
        config = {**run.config, "width": cell["width"], "epochs": cell["epochs"], "train_size": cell["train_size"],
                  "semantic_epochs": None, "semantic_train_size": None}
        as_study = replace(run, path=run.path.parent / f"{_name(run)}:{cell['cell']}", config=config,
                           metrics={"rows": cell["rows"], "comparisons": cell["comparisons"]})
        out += [replace(c, family="budget-response") for c in _gap_claims(as_study, runs)]
    for t in run.metrics.get("trends", []):
        slope = t["slope_per_doubling"]
        budgets = "×, ".join(str(b) for b in t["budgets"]) + "×"
        config = {**run.config, "width": t["width"], "epochs": 1, "train_size": max(t["samples"]),
                  "semantic_epochs": None}
        scope = (f"{gap_scope(replace(run, config=config), t['task'], len(t['seeds']))}; the trend over budgets {budgets} "
                 f"({', '.join(f'{n:,}' for n in t['samples'])} samples)")
        out.append(Claim(f"{t['claim']}: with more training, the {t['task']} {t['permute']} {t['metric']} moves "
                         "toward it", ABSTRACT, _name(run), scope,
                         f"slope per doubling of the budget "
                         f"{_stat_text(slope) if 'mean' in slope else 'not estimable: ' + slope['reason']}: "
                         f"{t['verdict']}",
                         f"slope {FLAT_PER_DOUBLING:g} per doubling",
                         direction(slope, t["toward"], FLAT_PER_DOUBLING) if slope.get("ci95") else "inconclusive",
                         "trend", "budget-response", question=f"{t['claim']}: with more training, the {t['task']} "
                         f"{t['permute']} {t['metric']} moves toward it", headline=True, units=len(t["seeds"])))
    return out + _order_free_claims(run)


# What a location readout of the sorted pooled vector above chance means, by how the backbone was trained.
ORDER_FREE_MEANING = {
    "none": "a normally trained net keeps position outside its channel order too",
    "per-batch": "a net trained under per-batch channel permutation keeps position in order-free statistics of its "
                 "pooled vector",
    "per-sample": "a net trained under per-sample channel permutation keeps position in order-free statistics of its "
                  "pooled vector"}


def _order_free_claims(run: Run) -> list[Claim]:
    """The budget response's order-free readouts: location from each frozen backbone's sorted pooled vector (a
    permutation-invariant code) against chance, the ordered readout and the moments beside; the headline at the
    largest budget of the main width, on networks trained for location."""
    rows = [r for r in run.metrics.get("readouts", []) if r.get("target") == "location"]
    by = {(r["cell"], r["trained"], r["permute"], r["readout"]): r for r in rows}
    main = [r["samples"] for r in rows if r["width"] == run.config.get("width")]
    out = []
    for r in (r for r in rows if r["readout"] == "sorted" and r["permute"] in ORDER_FREE_MEANING):
        plain, moments = (by.get((r["cell"], r["trained"], r["permute"], k)) for k in ("plain", "moments"))
        beside = f"; ordered readout {_stat_text(plain['accuracy'])}" if plain else ""
        beside += f"; moments {_stat_text(moments['accuracy'])}" if moments else ""
        meaning = ORDER_FREE_MEANING[r["permute"]]
        out.append(Claim(f"{meaning}: a location readout of the sorted pooled vector is above chance (backbone "
                         f"trained for {r['trained']}, cell {r['cell']})", BEYOND + " (order-free readouts)",
                         f"{_name(run)}:{r['cell']}",
                         f"fashion-mnist, resnet18-paper width {r['width']}, {r['samples']:,} training samples "
                         f"({r['samples'] / PAPER_SAMPLES:.1%} of the paper's {PAPER_SAMPLES:,}); "
                         f"{_units(r['accuracy']['n'])}",
                         f"sorted readout {_stat_text(r['accuracy'])}; chance {number(r['chance'])}{beside}",
                         f"share {ABOVE_CHANCE_SHARE:g} of the possible above-chance accuracy",
                         above_chance(r["accuracy"], r["chance"]), "above chance", "budget-response",
                         question=f"{meaning} (a location readout of its sorted pooled vector is above chance)",
                         headline=r["trained"] == "location" and r["width"] == run.config.get("width")
                         and r["samples"] == max(main, default=None), units=r["accuracy"]["n"]))
    return out


def _census_claims(run: Run, _runs: dict[str, Run]) -> list[Claim]:
    """Each pretrained model's last layer: a location readout of the pooled vector against the same readout with the
    pooled channels permuted at test time; its random-init twin and the order-free (sorted) readout beside it."""
    c, out = run.config, []
    paired = {p["name"]: p for p in run.metrics.get("comparisons", []) if "name" in p and "ci95" in p}
    last = run.metrics.get("last_layer", {})
    models = [m for m in run.metrics.get("models", []) if m in last and not m.endswith("(random init)")]
    for model in models:
        layer = last[model]
        p = paired.get(f"{model}:{layer['layer']}:plain_vs_permuted_test")
        if p is None:
            continue
        twin = last.get(f"{model} (random init)")
        beside = f"; its random-init twin: readout {_stat_text(twin['accuracy'])}" if twin else ""
        out.append(Claim(f"a pretrained network's pooled vector carries position in its channel order: permuting "
                         f"the pooled channels at test time lowers a location readout's accuracy ({model}, "
                         f"{layer['layer']})", BEYOND + " (a census of pretrained CNNs)", _name(run),
                         f"{model} (ImageNet weights), {c.get('data', '?')} {c.get('grid', '?')}×{c.get('grid', '?')} "
                         f"canvases, {c.get('train_size', '?')} readout training canvases; {p['n']} readout seeds",
                         f"plain − permuted accuracy {_stat_text(p)}; plain readout {_stat_text(layer['accuracy'])}, "
                         f"sorted (order-free) {_stat_text(layer['accuracy_sorted'])}, chance "
                         f"{number(layer['chance'])}{beside}", f"accuracy {ACCURACY_SESOI:g}",
                         direction(p, +1, ACCURACY_SESOI), "direction", "census", p.get("p_value"),
                         question="a pretrained network's pooled vector carries position in its channel order "
                                  "(permuting it at test time lowers a location readout)",
                         headline=model == models[0], units=p["n"]))
    return out


def _probe_claims(run: Run, _runs: dict[str, Run]) -> list[Claim]:
    """At each probed layer, the ordered pooled vector against its sorted values (a permutation-invariant code)."""
    c, out = run.config, []
    paired = {p["name"]: p for p in run.metrics.get("comparisons", []) if "name" in p and "ci95" in p}
    weights = "ImageNet weights" if c.get("pretrained") else "random init"
    for layer in run.metrics.get("layers", []):
        p = paired.get(f"{layer['layer']}:plain_vs_sorted")
        if p is None or "accuracy_sorted" not in layer:
            continue
        out.append(Claim(f"position needs the channel order: a location readout of the sorted pooled vector "
                         f"(order-free) reads less than one of the ordered vector ({layer['layer']})",
                         BEYOND + " (order-free readouts)", _name(run),
                         f"{c.get('model', '?')} ({weights}), {c.get('data', '?')} canvases, "
                         f"{run.metrics.get('n_train', '?')} readout training canvases; {p['n']} readout seeds",
                         f"ordered − sorted accuracy {_stat_text(p)}; sorted readout "
                         f"{_stat_text(layer['accuracy_sorted'])}, chance {number(layer['chance'])}",
                         f"accuracy {ACCURACY_SESOI:g}", direction(p, +1, ACCURACY_SESOI), "direction", "probe",
                         p.get("p_value"), question="position needs the channel order: a location readout of the "
                         "sorted (order-free) pooled vector reads less than one of the ordered vector",
                         headline=layer["layer"] == "backbone", units=p["n"]))
    return out


def _debias_claims(run: Run, _runs: dict[str, Run]) -> list[Claim]:
    """Post-hoc debiasing: the flip-ranked channels zeroed against as many random channels, per N, with the
    accuracy cost and (where the run has them) retraining's gains beside."""
    c, m, out = run.config, run.metrics, []
    paired = {p["name"]: p for p in m.get("comparisons", []) if "name" in p and "ci95" in p}
    rows = [r for r in m.get("rows", []) if r.get("set") == "ranked"]
    paper = (nearest_paper(rows) or {}).get("n")
    network = "ImageNet weights" if c.get("pretrained") else "one trained network"
    retrained = {r["method"]: r for r in m.get("retrained", [])}
    for r in rows:
        p = paired.get(f"ranked_vs_random_consistency_gain_n{r['n']}")
        if p is None:
            continue
        cost = paired.get(f"ranked_vs_random_cost_n{r['n']}")
        beside = f"; ranked − random {m.get('score', 'score')} cost {_stat_text(cost)}" if cost else ""
        if "augshift" in retrained and r["n"] == paper:
            beside += f"; retraining with AugShift instead: gain {_stat_text(retrained['augshift']['consistency_gain'])}"
        out.append(Claim(f"zeroing the top {r['n']} ({r['fraction']:.0%}) {m.get('ranking', 'flip')}-ranked channels "
                         "post hoc raises consistency more than zeroing as many random channels", BEYOND +
                         " (debiasing without retraining)", _name(run),
                         f"{c.get('model', '?')} width {c.get('width', '?')} ({network}), {m.get('data', '?')}, "
                         f"{m.get('protocol', {}).get('images', '?')} test images; {p['n']} draws of random channels",
                         f"ranked − random consistency gain {_stat_text(p)}{beside}", f"consistency {ACCURACY_SESOI:g}",
                         direction(p, +1, ACCURACY_SESOI), "direction", "debias", p.get("p_value"),
                         question="zeroing the top-N position-ranked channels post hoc raises consistency more than "
                                  "zeroing as many random channels",
                         headline=r["n"] == paper, units=p["n"]))
    return out


CLAIMS_BY_EXPERIMENT: dict[str, Callable[[Run, dict[str, Run]], list[Claim]]] = {
    "gap-study": _gap_claims, "augshift": _augshift_claims, "ablate": _ablate_claims, "attack": _attack_claims,
    "budget-response": _budget_claims, "census": _census_claims, "probe": _probe_claims, "debias": _debias_claims}


def adjusted(found: Sequence[Claim]) -> list[Claim]:
    """``found`` with Benjamini-Hochberg adjusted p-values within each family; a "reproduced" whose adjusted p is
    not below ``FDR`` becomes "inconclusive"."""
    out = [replace(c, unadjusted=c.verdict) for c in found]
    for family in dict.fromkeys(c.family for c in out):
        tested = [i for i, c in enumerate(out) if c.family == family and c.p_value is not None]
        if not tested:
            continue
        qs = st.false_discovery_control(np.array([out[i].p_value for i in tested]), method="bh")
        for i, q in zip(tested, qs):
            verdict = "inconclusive" if out[i].verdict == "reproduced" and q >= FDR else out[i].verdict
            out[i] = replace(out[i], adjusted_p=float(q), verdict=verdict)
    return out


def _superseded(run: Run) -> bool:
    """Whether ``run``'s statistics predate the crossed design's intervals (the two-level bootstrap under-covers)."""
    return int(run.env.get("stats", 1)) < METHOD_VERSION


def claims(runs: Sequence[Run]) -> list[Claim]:
    """The claims table over ``runs``, in the order of the runs, adjusted within each family (``adjusted``).
    Claims of runs with superseded statistics are listed as not decided, outside the adjustment."""
    by_name = {_name(r): r for r in runs}
    found = []
    for run in runs:
        rows = CLAIMS_BY_EXPERIMENT.get(run.experiment, lambda _r, _n: [])(run, by_name)
        found += [replace(c, verdict=SUPERSEDED, rule="superseded", p_value=None) if _superseded(run) else c
                  for c in rows]
    return adjusted(found)


def _adjusted_text(c: Claim) -> str:
    return "" if c.adjusted_p is None else "; BH-adjusted " + p_text({"p_value": c.adjusted_p})


def claims_table(found: Sequence[Claim]) -> Table:
    return Table("claims", ["claim", "source", "run", "scope", "our measurement (mean [95% CI])", "SESOI",
                            "verdict at this scope", "rule"],
                 [[c.claim, c.source, c.run, c.scope, c.measured + _adjusted_text(c), c.sesoi, c.verdict, c.rule]
                  for c in found])


def counts(found: Sequence[Claim]) -> dict[str, int]:
    """How many claims got each verdict after the adjustment."""
    return {v: sum(c.verdict == v for c in found) for v in VERDICTS}


def rules_text(found: Sequence[Claim]) -> list[str]:
    """The rules the verdicts of ``found`` used, one sentence each, then the adjustment and its counts."""
    n = counts(found)
    moved = sum(c.unadjusted != c.verdict for c in found)
    families = ", ".join(dict.fromkeys(c.family for c in found))
    return [f"{name}: {RULES[name]}" for name in dict.fromkeys(c.rule for c in found)] + [
        f"multiple testing: the claims form one family per experiment ({families}); within each, the p-values of "
        f"the effect tests are adjusted by Benjamini-Hochberg (false discovery rate {FDR:g}), and a reproduced claim "
        f"whose adjusted p is not below {FDR:g} is inconclusive ({moved} moved); the not-reproduced verdicts are "
        "interval bounds against the SESOI, not adjusted",
        f"after the adjustment: {n['reproduced']} reproduced, {n['not reproduced']} not reproduced, "
        f"{n['inconclusive']} inconclusive" + (f", {n[SUPERSEDED]} {SUPERSEDED}" if n[SUPERSEDED] else "")
        + f", of {len(found)} claims, each at the scope of its run"]
