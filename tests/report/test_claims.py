"""The claims table: each verdict rule on intervals with known answers, and a gap-study run's claims."""

import pytest

from poschan.report.claims import CHANCE_MARGIN, above_chance, at_chance, claims, direction, largely
from poschan.results import Run


def stat(lo: float, hi: float, **extra) -> dict:
    mean = (lo + hi) / 2
    return {"mean": mean, "ci95": [lo, hi], "n": 3, "values": [mean] * 3, **extra}


@pytest.mark.parametrize("lo, hi, sign, verdict", [
    (0.1, 0.3, +1, "reproduced"), (-0.3, -0.1, +1, "not reproduced"), (-0.1, 0.2, +1, "inconclusive"),
    (-0.3, -0.1, -1, "reproduced"), (0.1, 0.3, -1, "not reproduced"), (-0.2, 0.1, -1, "inconclusive"),
    (0.0, 0.2, +1, "inconclusive"), (-0.2, 0.0, +1, "not reproduced"),
])
def test_direction_rule(lo, hi, sign, verdict):
    assert direction(stat(lo, hi), sign) == verdict


def test_chance_rules():
    assert above_chance(stat(0.2, 0.3), 0.1, 0.001) == "reproduced"
    assert above_chance(stat(0.2, 0.3), 0.1, 0.2) == "inconclusive"  # the exact test must agree
    assert above_chance(stat(0.05, 0.1), 0.1, 0.9) == "not reproduced"
    assert above_chance(stat(0.05, 0.2), 0.1, 0.3) == "inconclusive"
    m = CHANCE_MARGIN
    assert at_chance(stat(0.1 - m / 2, 0.1 + m / 2), 0.1) == "reproduced"
    assert at_chance(stat(0.1 + 1.5 * m, 0.4), 0.1) == "not reproduced"
    assert at_chance(stat(0.1, 0.1 + 2 * m), 0.1) == "inconclusive"


def test_largely_rule():
    assert largely(stat(0.6, 0.9)) == "reproduced"
    assert largely(stat(0.1, 0.4)) == "not reproduced"
    assert largely(stat(0.3, 0.7)) == "inconclusive"
    assert largely({"estimable": False, "reason": "denominator"}) == "inconclusive"


def gap_run(location_test_only: dict, per_batch_semantic_share: dict) -> Run:
    def row(task, permute, where, acc, chance):
        return {"task": task, "head": "gap-fc", "permute": permute, "where": where, "padding": "zeros", "grid": 3,
                "accuracy": acc, "chance": chance, "vs_chance": {"p_value": 1e-6}}

    rows = [row("location", "none", "-", stat(0.9, 0.95), 1 / 9), row("location", "test-only", "pooled",
            stat(0.1, 0.12), 1 / 9), row("semantic", "none", "-", stat(0.8, 0.85), 0.1),
            row("semantic", "per-batch", "pooled", stat(0.6, 0.7), 0.1)]
    common = {"head": "gap-fc", "where": "pooled", "padding": "zeros", "grid": 3}
    paired = [{"task": "location", "permute": "test-only", **common, **location_test_only,
               "retained_above_chance": stat(0.0, 0.1)},
              {"task": "semantic", "permute": "per-batch", **common, **stat(-0.2, -0.1, p_value=0.01),
               "retained_above_chance": per_batch_semantic_share}]
    return Run(path=None, experiment="gap-study", config={}, metrics={"rows": rows, "comparisons": paired},
               seeds=[0, 1, 2], env={}, elapsed_s=0.0, command=None, date=None)


def test_gap_study_claims_read_the_right_statistics():
    found = {c.claim.split(":")[0].split(" (")[0]: c for c in claims([gap_run(stat(-0.85, -0.75, p_value=0.001),
                                                                             stat(0.55, 0.8))])}
    survives = found["position survives global pooling"]
    assert survives.verdict == "reproduced" and "0.925 [0.900, 0.950]" in survives.measured
    reads = found["a normally trained net reads position from the channel order"]
    assert reads.verdict == "reproduced" and "-0.800 [-0.850, -0.750]" in reads.measured
    semantic = found["semantic information largely survives a per-batch channel permutation in training and test"]
    assert semantic.verdict == "reproduced" and "0.675 [0.550, 0.800]" in semantic.measured
    flipped = claims([gap_run(stat(0.01, 0.05), stat(0.1, 0.3))])
    assert {c.verdict for c in flipped if "channel order" in c.claim or "largely" in c.claim} == {"not reproduced"}


def test_augshift_claims_use_the_paired_comparisons():
    paired = [{"name": "augshift_vs_baseline_consistency", "b": "baseline", **stat(0.2, 0.3, p_value=0.001)},
              {"name": "augshift_vs_shift_aug_consistency", "b": "shift-aug", **stat(-0.01, 0.03, p_value=0.4)}]
    run = Run(path=None, experiment="augshift", config={}, metrics={"comparisons": paired}, seeds=[0], env={},
              elapsed_s=0.0)
    found = claims([run])
    assert [c.verdict for c in found] == ["reproduced", "inconclusive"]
    assert found[0].source.startswith("paper abstract") and "0.250 [0.200, 0.300]" in found[0].measured


def test_segmentation_claims_put_the_random_control_beside_the_effect():
    ablate = Run(path=None, experiment="ablate", config={}, seeds=[0], env={}, elapsed_s=0.0, metrics={
        "reliance": [{"ranking": name, "n": 6, "fraction": 0.05, "ranked_drop": stat(0.1, 0.2),
                      "random_drop": stat(0.0, 0.02)} for name in ("flip", "shift")],
        "comparisons": [{"name": "flip_vs_random_drop_n6", **stat(0.08, 0.19, p_value=0.001)},
                        {"name": "flip_vs_matched_drop_n6", **stat(-0.02, 0.01, p_value=0.3)},
                        {"name": "shift_vs_random_drop_n6", **stat(-0.3, -0.2, p_value=0.001)}],
        "networks": 3, "closest_to_reference": "shift",
        "rankings": [{"ranking": "shift", "shortfall": stat(0.01, 0.03, p_value=0.01)}]})
    attack = Run(path=None, experiment="attack", config={}, seeds=[0], env={}, elapsed_s=0.0, metrics={"attack": [
        {"region": "left", "n": 32, "method": "flip", "selectivity": stat(-0.05, -0.01, p_value=0.01)},
        {"region": "left", "n": 32, "method": "random", "selectivity": stat(-0.01, 0.01, p_value=0.9)}]})
    reliance, region = claims([ablate, attack])  # the paper's claim is about its flip ranking only
    assert reliance.verdict == "reproduced" and "random drop 0.010 [0.000, 0.020]" in reliance.measured
    assert "flip − magnitude-matched drop -0.005 [-0.020, 0.010]" in reliance.measured
    assert "closest to the knock-out reference: shift" in reliance.measured and "3 network(s)" in reliance.claim
    assert region.verdict == "not reproduced" and "random channels 0.000 [-0.010, 0.010]" in region.measured
