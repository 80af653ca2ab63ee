"""The paper's claims (from its abstract) against our measurements, each decided by a rule stated here.

Every verdict reads only the statistics a run wrote (estimates with 95% intervals and paired comparisons);
nothing is judged by eye. A claim whose measurement is missing from the runs given is "not measured".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from poschan.report.document import Table
from poschan.results import Run

ABSTRACT = "paper abstract (arXiv 2108.07884)"
CHANCE_MARGIN = 0.05  # "at chance": accuracy within ±0.05 of chance
LARGELY = 0.5  # "largely survives": keeps at least half of its accuracy above chance

RULES = {
    "direction": "reproduced: the effect is in the claimed direction and its 95% interval excludes 0; "
                 "not reproduced: the interval excludes every effect in the claimed direction; "
                 "inconclusive: otherwise",
    "above chance": "reproduced: the accuracy's 95% interval lies above chance and the exact binomial test "
                    "(combined over seeds) gives p < 0.05; not reproduced: the interval's upper bound is at or "
                    "below chance; inconclusive: otherwise",
    "at chance": f"reproduced: the accuracy's 95% interval lies within chance ± {CHANCE_MARGIN}; not "
                 f"reproduced: its lower bound exceeds chance + {CHANCE_MARGIN}; inconclusive: otherwise",
    "largely survives": f"reproduced: the 95% interval of the share of above-chance accuracy kept under the "
                        f"permutation lies at or above {LARGELY}; not reproduced: it lies below {LARGELY}; "
                        "inconclusive: otherwise (or the share cannot be estimated)",
}


@dataclass(frozen=True)
class Claim:
    """One row of the claims table."""

    claim: str
    source: str
    measured: str
    verdict: str
    rule: str


def _fmt(x: float) -> str:
    return f"{x:.3f}" if x == 0 or abs(x) >= 1e-3 else f"{x:.2g}"


def _p(p: float) -> str:
    return "p < 1e-16" if p < 1e-16 else f"p = {p:.2g}"


def _stat_text(s: dict) -> str:
    text = f"{_fmt(s['mean'])} [{_fmt(s['ci95'][0])}, {_fmt(s['ci95'][1])}]"
    if "p_value" in s:
        text += f", {_p(s['p_value'])}"
    return f"{text} (n = {s['n']})"


def direction(s: dict, sign: int) -> str:
    """Verdict of "the difference ``s`` has sign ``sign``" (+1 or -1) by the "direction" rule."""
    lo, hi = (s["ci95"][0], s["ci95"][1]) if sign > 0 else (-s["ci95"][1], -s["ci95"][0])
    if lo > 0:
        return "reproduced"
    if hi <= 0:
        return "not reproduced"
    return "inconclusive"


def above_chance(accuracy: dict, chance: float, p_value: float) -> str:
    lo, hi = accuracy["ci95"]
    if lo > chance and p_value < 0.05:
        return "reproduced"
    if hi <= chance:
        return "not reproduced"
    return "inconclusive"


def at_chance(accuracy: dict, chance: float) -> str:
    lo, hi = accuracy["ci95"]
    if chance - CHANCE_MARGIN <= lo and hi <= chance + CHANCE_MARGIN:
        return "reproduced"
    if lo > chance + CHANCE_MARGIN:
        return "not reproduced"
    return "inconclusive"


def largely(share: dict) -> str:
    if share.get("estimable") is False:
        return "inconclusive"
    lo, hi = share["ci95"]
    if lo >= LARGELY:
        return "reproduced"
    if hi < LARGELY:
        return "not reproduced"
    return "inconclusive"


def _gap_claims(run: Run) -> list[Claim]:
    row_keys = {"task", "head", "permute", "where", "padding", "grid", "accuracy", "chance", "vs_chance"}
    rows = [r for r in run.metrics.get("rows", []) if row_keys <= set(r)]  # runs of older versions: no claims
    paired = [p for p in run.metrics.get("comparisons", []) if {"task", "ci95", "retained_above_chance"} <= set(p)]
    out = []
    for r in rows:
        if r["task"] == "location" and r["head"] == "gap-fc" and r["permute"] == "none":
            out.append(Claim(f"position survives global pooling (padding: {r['padding']}, {r['grid']}×{r['grid']} "
                             "grid)", ABSTRACT,
                             f"location accuracy {_stat_text(r['accuracy'])}; chance {_fmt(r['chance'])}, "
                             f"exact binomial {_p(r['vs_chance']['p_value'])}",
                             above_chance(r["accuracy"], r["chance"], r["vs_chance"]["p_value"]), "above chance"))
    by_row = {(r["task"], r["head"], r["permute"], r["where"], r["padding"], r["grid"]): r for r in rows}
    for p in paired:
        if p["where"] != "pooled" or p["head"] != "gap-fc" or p["padding"] != "zeros":
            continue
        row = by_row.get((p["task"], p["head"], p["permute"], p["where"], p["padding"], p["grid"]))
        if row is None:
            continue
        grid = f"{p['grid']}×{p['grid']} grid"
        if p["task"] == "location" and p["permute"] == "test-only":
            out.append(Claim(f"a normally trained net reads position from the channel order: permuting its pooled "
                             f"channels at test time lowers location accuracy ({grid})", ABSTRACT,
                             f"permuted − unpermuted accuracy {_stat_text(p)}", direction(p, -1), "direction"))
        elif p["task"] == "location":
            out.append(Claim(f"with the channel order unusable ({p['permute']} permutation in training and test), "
                             f"location is at chance ({grid})", ABSTRACT,
                             f"location accuracy {_stat_text(row['accuracy'])}; chance {_fmt(row['chance'])}",
                             at_chance(row["accuracy"], row["chance"]), "at chance"))
        elif p["task"] == "semantic" and p["permute"] != "test-only":
            share = p["retained_above_chance"]
            kept = (f"share of above-chance accuracy kept {_stat_text(share)}" if share.get("estimable", True)
                    else f"share not estimable: {share['reason']}")
            out.append(Claim(f"semantic information largely survives a {p['permute']} channel permutation in "
                             f"training and test ({grid})", ABSTRACT,
                             f"{kept}; permuted − unpermuted accuracy {_stat_text(p)}", largely(share),
                             "largely survives"))
    return out


INVARIANCE = {"consistency": "consistency (same class for two shifted crops)",
              "circular_consistency": "circular consistency (same class for two circular shifts)"}


def _augshift_claims(run: Run) -> list[Claim]:
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
                out.append(Claim(f"{claim}: {what}", ABSTRACT if other == "baseline" else
                                 "control beyond the paper (same shifted views, no latent loss)",
                                 f"AugShift − {p['b']} {_stat_text(p)}", direction(p, +1), "direction"))
    return out


def _ablate_claims(run: Run) -> list[Claim]:
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
    for row in run.metrics.get("reliance", []):
        name = row.get("ranking", "flip")
        p = paired.get(f"{name}_vs_random_drop_n{row.get('n')}")
        if name != "flip" or p is None:
            continue
        matched = paired.get(f"{name}_vs_matched_drop_n{row.get('n')}")
        control = f"; flip − magnitude-matched drop {_stat_text(matched)}" if matched else ""
        out.append(Claim(f"a segmenter relies on its overall-position channels: zeroing the top {row['n']} "
                         f"({row['fraction']:.0%}) flip-ranked channels lowers mIoU more than zeroing as many random "
                         f"channels (run {run.path.name if run.path else '-'}, {run.metrics.get('networks', 1)} "
                         "network(s))", ABSTRACT,
                         f"flip − random drop {_stat_text(p)}; flip drop {_stat_text(row['ranked_drop'])}; "
                         f"random drop {_stat_text(row['random_drop'])}{control}{beside}", direction(p, +1),
                         "direction"))
        beside = ""  # said once, on the first row
    return out


def _attack_claims(run: Run) -> list[Claim]:
    """Selectivity (drop inside minus drop outside the region) of each ranked method, random channels beside it."""
    rows = [r for r in run.metrics.get("attack", []) if "selectivity" in r and "ci95" in r["selectivity"]]
    random = {(r["region"], r["n"]): r for r in rows if r["method"] == "random"}
    out = []
    for r in rows:
        if r["method"] not in ("flip", "shift"):
            continue
        control = random.get((r["region"], r["n"]))
        beside = f"; random channels {_stat_text(control['selectivity'])}" if control else ""
        out.append(Claim(f"zeroing the {r['method']}-ranked channels of one region degrades that region more than "
                         f"the rest (region {r['region']}, N = {r['n']}, run {run.path.name if run.path else '-'})",
                         ABSTRACT, f"drop inside − drop outside {_stat_text(r['selectivity'])}{beside}",
                         direction(r["selectivity"], +1), "direction"))
    return out


CLAIMS_BY_EXPERIMENT: dict[str, Callable[[Run], list[Claim]]] = {
    "gap-study": _gap_claims, "augshift": _augshift_claims, "ablate": _ablate_claims, "attack": _attack_claims}


def claims(runs: Sequence[Run]) -> list[Claim]:
    """The claims table over ``runs``, in the order of the runs."""
    return [c for run in runs for c in CLAIMS_BY_EXPERIMENT.get(run.experiment, lambda _r: [])(run)]


def claims_table(found: Sequence[Claim]) -> Table:
    return Table("claims", ["claim of the paper", "source", "our measurement (mean [95% CI])", "verdict", "rule"],
                 [[c.claim, c.source, c.measured, c.verdict, c.rule] for c in found])


def rules_text(found: Sequence[Claim]) -> list[str]:
    """The rules the verdicts of ``found`` used, one sentence each."""
    return [f"{name}: {RULES[name]}" for name in dict.fromkeys(c.rule for c in found)]
