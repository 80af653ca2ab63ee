"""The claims table: each verdict rule on intervals with known answers, the family-wise adjustment recomputed by
hand, and the claims of gap-study, AugShift and segmentation runs (their statistics, controls and scope)."""

from dataclasses import replace
from pathlib import Path

import pytest

from poschan.report.claims import (
    ABOVE_CHANCE_SHARE,
    AT_CHANCE_SHARE,
    LARGELY_SHARE,
    SUPERSEDED,
    Claim,
    above_chance,
    adjusted,
    at_chance,
    claims,
    counts,
    direction,
    largely,
    rules_text,
)
from poschan.results import Run
from poschan.stats import METHOD_VERSION

ENV = {"stats": METHOD_VERSION}


def stat(lo: float, hi: float, **extra) -> dict:
    mean = (lo + hi) / 2
    return {"mean": mean, "ci95": [lo, hi], "n": 3, "values": [mean] * 3, **extra}


@pytest.mark.parametrize("lo, hi, sign, verdict", [
    (0.1, 0.3, +1, "reproduced"), (-0.3, -0.1, +1, "not reproduced"), (-0.1, 0.2, +1, "inconclusive"),
    (-0.3, -0.1, -1, "reproduced"), (0.1, 0.3, -1, "not reproduced"), (-0.2, 0.1, -1, "inconclusive"),
    (0.0, 0.2, +1, "inconclusive"), (-0.2, 0.0, +1, "not reproduced"),
    (-0.05, 0.005, +1, "not reproduced"),  # every effect of at least the SESOI (0.01) excluded
    (-0.05, 0.02, +1, "inconclusive"),  # a -0.015 mean is no evidence against a 0.01 effect: the interval holds 0.02
])
def test_direction_rule_with_a_smallest_effect_of_interest(lo, hi, sign, verdict):
    assert direction(stat(lo, hi), sign, 0.01) == verdict


def test_chance_rules_on_the_share_of_above_chance_accuracy():
    assert above_chance(stat(0.2, 0.3), 0.1) == "reproduced"
    edge = 0.1 + ABOVE_CHANCE_SHARE * 0.9
    assert above_chance(stat(0.05, edge - 0.001), 0.1) == "not reproduced"
    assert above_chance(stat(0.05, edge + 0.001), 0.1) == "inconclusive"
    assert at_chance(stat(0.0, AT_CHANCE_SHARE - 0.01)) == "reproduced"
    assert at_chance(stat(AT_CHANCE_SHARE + 0.01, 0.4)) == "not reproduced"
    assert at_chance(stat(0.05, 0.2)) == "inconclusive"
    assert at_chance({"estimable": False, "reason": "denominator"}) == "inconclusive"


def test_largely_rule():
    assert largely(stat(LARGELY_SHARE + 0.1, 0.9)) == "reproduced"
    assert largely(stat(0.1, LARGELY_SHARE - 0.1)) == "not reproduced"
    assert largely(stat(0.3, 0.7)) == "inconclusive"
    assert largely({"estimable": False, "reason": "denominator"}) == "inconclusive"


def claim(p: float | None, verdict: str = "reproduced", family: str = "f") -> Claim:
    return Claim("c", "s", "run", "scope", "m", "sesoi", verdict, "direction", family, p)


def test_benjamini_hochberg_within_each_family():
    # family f: p = 0.01, 0.04, 0.03, 0.5 -> sorted 0.01, 0.03, 0.04, 0.5; BH: min over k >= i of p_(k) * 4 / k
    found = adjusted([claim(0.01), claim(0.04), claim(0.03), claim(0.5, "inconclusive"), claim(0.04, family="g"),
                      claim(None, "not reproduced")])
    assert [c.adjusted_p for c in found[:4]] == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    assert [c.verdict for c in found[:4]] == ["reproduced", "inconclusive", "inconclusive", "inconclusive"]
    assert found[4].adjusted_p == pytest.approx(0.04) and found[4].verdict == "reproduced"  # a family of its own
    assert found[5].adjusted_p is None and found[5].verdict == "not reproduced"  # an interval-only verdict
    assert counts(found) == {"reproduced": 2, "not reproduced": 1, "inconclusive": 3, SUPERSEDED: 0}
    text = " ".join(rules_text(found))
    assert "Benjamini-Hochberg" in text and "2 moved" in text and "2 reproduced, 1 not reproduced" in text


GAP_CONFIG = {"data": "fashion-mnist", "model": "resnet18-paper", "width": 8, "epochs": 2, "train_size": 1200,
              "semantic_epochs": 4, "semantic_train_size": 8000, "schedule": "one-cycle", "lr": 0.005}


def gap_run(location_test_only: dict, location_share: dict, semantic_share: dict) -> Run:
    def row(task, permute, where, acc, chance):
        return {"task": task, "head": "gap-fc", "permute": permute, "where": where, "padding": "zeros", "grid": 3,
                "accuracy": acc, "chance": chance, "vs_chance": {"p_value": 1e-6}}

    rows = [row("location", "none", "-", stat(0.9, 0.95), 1 / 9),
            row("location", "test-only", "pooled", stat(0.1, 0.12), 1 / 9),
            row("location", "per-batch", "pooled", stat(0.1, 0.2), 1 / 9),
            row("semantic", "none", "-", stat(0.8, 0.85), 0.1),
            row("semantic", "per-sample", "pooled", stat(0.6, 0.7), 0.1)]
    common = {"head": "gap-fc", "where": "pooled", "padding": "zeros", "grid": 3}
    paired = [{"task": "location", "permute": "test-only", **common, **location_test_only,
               "retained_above_chance": stat(0.0, 0.1)},
              {"task": "location", "permute": "per-batch", **common, **stat(-0.8, -0.7, p_value=1e-5),
               "retained_above_chance": location_share},
              {"task": "semantic", "permute": "per-sample", **common, **stat(-0.2, -0.1, p_value=0.01),
               "retained_above_chance": semantic_share}]
    return Run(path=Path("gap-study"), experiment="gap-study", config=GAP_CONFIG,
               metrics={"rows": rows, "comparisons": paired}, seeds=[0, 1, 2], env=ENV, elapsed_s=0.0, command=None,
               date=None)


def by_claim(found: list[Claim]) -> dict[str, Claim]:
    return {c.claim.split(":")[0].split(" (")[0]: c for c in found}


def test_gap_study_claims_read_the_right_statistics_and_state_their_scope():
    found = by_claim(claims([gap_run(stat(-0.85, -0.75, p_value=0.001), stat(0.01, 0.05), stat(0.55, 0.8))]))
    survives = found["position survives global pooling"]
    assert survives.verdict == "reproduced" and "0.925 [0.900, 0.950]" in survives.measured
    reads = found["a normally trained net reads position from the channel order"]
    assert reads.verdict == "reproduced" and "-0.800 [-0.850, -0.750]" in reads.measured
    assert reads.run == "gap-study" and "2,400 training samples (0.2% of the paper's 1,000,000)" in reads.scope
    assert "width 8" in reads.scope and "3 networks" in reads.scope
    chance = found["with the channel order unusable"]
    assert chance.verdict == "reproduced" and "share of above-chance accuracy kept 0.0300 [" in chance.measured
    semantic = found["semantic information largely survives a per-sample channel permutation in training and test"]
    assert semantic.verdict == "reproduced" and "0.675 [0.550, 0.800]" in semantic.measured
    assert semantic.source.startswith("beyond the paper") and "32,000 training samples (3.2%" in semantic.scope
    flipped = by_claim(claims([gap_run(stat(0.01, 0.05), stat(0.2, 0.4), stat(0.1, 0.3))]))
    assert {flipped[k].verdict for k in ("a normally trained net reads position from the channel order",
                                         "with the channel order unusable")} == {"not reproduced"}


def test_augshift_claims_use_the_paired_comparisons():
    paired = [{"name": "augshift_vs_baseline_consistency", "b": "baseline", **stat(0.2, 0.3, p_value=0.001)},
              {"name": "augshift_vs_shift_aug_consistency", "b": "shift-aug", **stat(-0.01, 0.03, p_value=0.4)}]
    run = Run(path=None, experiment="augshift", config={"epochs": 3, "train_size": 4000}, seeds=[0], env=ENV,
              metrics={"comparisons": paired}, elapsed_s=0.0)
    found = claims([run])
    assert [c.verdict for c in found] == ["reproduced", "inconclusive"]
    assert found[0].source.startswith("paper abstract") and "0.250 [0.200, 0.300]" in found[0].measured
    assert found[1].source.startswith("beyond the paper") and "12,000 training images" in found[1].scope


def test_segmentation_claims_decide_on_ranked_minus_random():
    seg = Run(path=Path("seg-train-lr-p1"), experiment="seg-train", seeds=[0], env=ENV, elapsed_s=0.0, metrics={},
              config={"data": "scenes", "side": 96, "layout": "left-right", "layout_prior": 1.0, "model": "m",
                      "width": 16, "epochs": 3, "train_size": 8000})
    ablate = Run(path=Path("ablate-lr-p1"), experiment="ablate", config={}, seeds=[0], env=ENV, elapsed_s=0.0, metrics={
        "reliance": [{"ranking": name, "n": 6, "fraction": 0.05, "ranked_drop": stat(0.1, 0.2),
                      "random_drop": stat(0.0, 0.02)} for name in ("flip", "shift")],
        "comparisons": [{"name": "flip_vs_random_drop_n6", **stat(0.08, 0.19, p_value=0.001)},
                        {"name": "flip_vs_matched_drop_n6", **stat(-0.02, 0.01, p_value=0.3)},
                        {"name": "shift_vs_random_drop_n6", **stat(-0.3, -0.2, p_value=0.001)}],
        "networks": 3, "closest_to_reference": "shift",
        "rankings": [{"ranking": "shift", "shortfall": stat(0.01, 0.03, p_value=0.01)}]})
    attack = Run(path=Path("attack-lr-p1"), experiment="attack", config={}, seeds=[0], env=ENV, elapsed_s=0.0,
                 metrics={"attack": [
                     {"region": "left", "n": 32, "method": "shift", "selectivity": stat(0.004, 0.021, p_value=0.01)},
                     {"region": "left", "n": 32, "method": "random", "selectivity": stat(0.008, 0.02, p_value=0.01)}],
                     "comparisons": [{"name": "left_n32_shift_vs_random_selectivity", **stat(-0.01, 0.005, p_value=0.6)},
                                     {"name": "left_n32_shift_vs_opposite_selectivity", **stat(0.0, 0.02, p_value=0.1)}]})
    reliance, region = claims([seg, ablate, attack])  # the paper's claim is about its flip ranking only
    assert reliance.verdict == "reproduced" and "random drop 0.0100 [0.00, 0.0200]" in reliance.measured
    assert "flip − magnitude-matched drop -0.00500 [-0.0200, 0.0100]" in reliance.measured
    assert "closest to the knock-out reference: shift" in reliance.measured and "3 networks" in reliance.scope
    assert "left-right prior 1.0" in reliance.scope and "24,000 training images" in reliance.scope
    # the raw selectivity excludes 0, but random channels are as selective: ranked − random decides
    assert region.verdict == "not reproduced" and "random channels 0.0140 [0.00800, 0.0200]" in region.measured
    assert "own − opposite region's channels 0.0100 [0.00, 0.0200]" in region.measured and region.family == "attack"


def test_runs_with_the_superseded_bootstrap_are_not_decided():
    old = replace(gap_run(stat(-0.85, -0.75, p_value=0.001), stat(0.01, 0.05), stat(0.55, 0.8)), env={})
    found = claims([old])
    assert found and {c.verdict for c in found} == {SUPERSEDED} and all(c.adjusted_p is None for c in found)
    assert f"{len(found)} {SUPERSEDED}" in rules_text(found)[-1]


def budget_run(slopes: list[tuple[dict, int]]) -> Run:
    """A budget response with one cell (the GAP study's run above at width 8, 512,000 samples) and a trend per
    (slope, sign toward the paper's claim)."""
    cell = gap_run(stat(-0.85, -0.75, p_value=0.001), stat(0.01, 0.05), stat(0.55, 0.8)).metrics
    trends = [{"metric": "accuracy under permutation", "task": "location", "permute": "per-batch", "width": 8,
               "budgets": [1, 4, 16], "samples": [32000, 128000, 512000], "seeds": [0, 1, 2],
               "claim": f"claim {i}", "toward": toward, "slope_per_doubling": slope, "verdict": "v"}
              for i, (slope, toward) in enumerate(slopes)]
    cells = [{"cell": "w8-x16", "width": 8, "multiple": 16, "epochs": 16, "train_size": 32000, "samples": 512000,
              **cell}]
    return Run(path=Path("budget-response"), experiment="budget-response", config=GAP_CONFIG,
               metrics={"cells": cells, "trends": trends}, seeds=[0, 1, 2], env=ENV, elapsed_s=0.0)


def test_budget_response_claims_per_budget_and_per_trend():
    found = claims([budget_run([(stat(-0.05, -0.02), -1), (stat(-0.05, -0.02), +1), (stat(-0.004, 0.006), -1),
                                ({"estimable": False, "reason": "r"}, +1)])])
    per_budget = [c for c in found if c.run == "budget-response:w8-x16"]
    assert len(per_budget) == 4 and all("512,000 training samples" in c.scope for c in per_budget)
    assert all(c.family == "budget-response" for c in found)
    trend = [c for c in found if c.rule == "trend"]
    assert [c.verdict for c in trend] == ["reproduced", "not reproduced", "not reproduced", "inconclusive"]
    assert "budgets 1×, 4×, 16×" in trend[0].scope and "not estimable: r" in trend[3].measured
