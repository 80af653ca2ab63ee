import math

import numpy as np
import pytest
from scipy import stats

from poschan.stats import estimate, paired_difference, proportion, ratio, summarize, versus_chance


def outcomes(rate: float, n: int, seed: int) -> np.ndarray:
    """Exactly round(rate * n) successes among n items, in a seeded order."""
    k = round(rate * n)
    return np.random.default_rng(seed).permutation(np.r_[np.ones(k), np.zeros(n - k)])


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's score interval written out (independent of scipy)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def check_contract(s: dict, lo: float, hi: float) -> None:
    assert s["mean"] == pytest.approx(np.mean(s["values"])) and s["n"] == len(s["values"])
    a, b = s["ci95"]
    assert lo <= a <= s["mean"] <= b <= hi and b > a
    assert s["method"]


def test_one_seed_proportion_is_wilson():
    s = proportion([outcomes(0.7, 200, 0)])
    assert s["ci95"] == pytest.approx(wilson(140, 200))
    assert "Wilson" in s["method"] and "not covered" in s["method"]
    check_contract(s, 0, 1)


def test_all_correct_is_never_zero_width():
    s = proportion([np.ones(50), np.ones(50), np.ones(50)])
    assert s["mean"] == 1.0 and s["ci95"] == pytest.approx(wilson(150, 150))
    check_contract(s, 0, 1)


def test_two_level_interval_covers_the_spread_between_seeds():
    spread = proportion([outcomes(r, 1000, i) for i, r in enumerate((0.2, 0.5, 0.8))])
    check_contract(spread, 0, 1)
    assert spread["ci95"][0] < 0.35 and spread["ci95"][1] > 0.65  # seed resampling dominates
    same = proportion([outcomes(0.5, 1000, i) for i in range(3)])
    half = 1.96 * math.sqrt(0.25 / 3000)  # no seed variation: items of all seeds together
    assert (same["ci95"][1] - same["ci95"][0]) / 2 == pytest.approx(half, rel=0.15)
    assert "seeds" in same["method"] and "test items" in same["method"]


def test_generic_metric_one_unit_bca_inside_bounds():
    rows = np.random.default_rng(1).uniform(0, 1, size=(300, 2))
    s = estimate([rows], lambda m: m[..., 0] * m[..., 1], bounds=(0, 1), item="images")
    check_contract(s, 0, 1)
    assert "BCa" in s["method"] and "300 images" in s["method"]
    assert s["mean"] == pytest.approx(rows[:, 0].mean() * rows[:, 1].mean())


def test_no_variation_in_a_continuous_metric_gives_its_range():
    s = estimate([np.full(10, 0.3), np.full(10, 0.3)], bounds=(0, 1))
    assert s["ci95"] == [0, 1] and "whole range" in s["method"]


def test_paired_difference_detects_a_real_difference():
    a = [outcomes(0.9, 500, i) for i in range(3)]
    b = [outcomes(0.6, 500, 10 + i) for i in range(3)]
    d = paired_difference(a, b, bounds=(-1, 1))
    check_contract(d, -1, 1)
    assert d["mean"] == pytest.approx(0.3) and d["ci95"][0] > 0.2 and d["p_value"] < 0.01
    same = paired_difference(a, [x.copy() for x in a], bounds=(-1, 1))
    assert same["mean"] == 0 and same["p_value"] == 1.0 and same["ci95"][0] < 0 < same["ci95"][1]
    assert "McNemar" in same["test"]


def test_paired_difference_is_paired():
    """b equals a except for 10 items per seed: a paired interval is narrow, far narrower than two
    independent intervals would be."""
    a = [outcomes(0.5, 1000, i) for i in range(3)]
    b = [x.copy() for x in a]
    for x in b:
        x[np.flatnonzero(x == 1)[:10]] = 0
    d = paired_difference(a, b, bounds=(-1, 1))
    assert d["mean"] == pytest.approx(0.01)
    assert d["ci95"][1] - d["ci95"][0] < 0.02 and d["p_value"] < 0.01


def test_mcnemar_when_every_pair_disagrees_the_same_way():
    d = paired_difference([np.ones(8)], [np.zeros(8)], bounds=(-1, 1))
    assert d["mean"] == 1.0 and d["p_value"] == pytest.approx(2 * 0.5 ** 8)
    check_contract(d, -1, 1)


def test_versus_chance_exact_and_combined():
    groups = [outcomes(r, 100, i) for i, r in enumerate((0.15, 0.12, 0.2))]
    ps = [stats.binomtest(k, 100, 0.1, alternative="greater").pvalue for k in (15, 12, 20)]
    z = sum(stats.norm.isf(p) for p in ps) / math.sqrt(3)
    v = versus_chance(groups, 0.1)
    assert v["p_values"] == pytest.approx(ps) and v["p_value"] == pytest.approx(stats.norm.sf(z))
    assert versus_chance(groups[:1], 0.1)["p_value"] == pytest.approx(ps[0])


def test_ratio_known_and_refused_near_zero():
    rng = np.random.default_rng(0)
    b = [rng.uniform(0.1, 0.3, 200) for _ in range(3)]
    r = ratio([2 * x + rng.normal(0, 0.01, 200) for x in b], b)
    assert r["mean"] == pytest.approx(2.0, abs=0.01) and 1.9 < r["ci95"][0] <= r["mean"] <= r["ci95"][1] < 2.1
    centred = [rng.normal(0, 1, 200) for _ in range(3)]
    refused = ratio(b, centred)
    assert refused["estimable"] is False and "includes 0" in refused["reason"]


def test_summarize_cut_to_bounds_and_no_zero_width():
    s = summarize([0.98, 0.99, 1.0], bounds=(0, 1))
    half = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert s["ci95"] == pytest.approx([0.99 - half, 1.0])
    assert summarize([0.5], bounds=(0, 1))["ci95"] == [0, 1]
    with pytest.raises(ValueError):
        summarize([], bounds=(0, 1))
