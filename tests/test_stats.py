import math

import numpy as np
import pytest
from scipy import stats

from poschan.stats import RESAMPLES, estimate, p_text, paired_difference, proportion, ratio, summarize, versus_chance


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
    """Three networks right on every one of the same 50 items: the networks may be alike, so the bound is
    Wilson's over one network's 50 items, not over 150."""
    s = proportion([np.ones(50), np.ones(50), np.ones(50)])
    assert s["mean"] == 1.0 and s["ci95"] == pytest.approx(wilson(50, 50))
    assert "agree" in s["method"]
    check_contract(s, 0, 1)


def crossed_half_width(values: np.ndarray) -> float:
    """The crossed design's half-width written out for 0/1 outcomes (units × shared items): the units' variance
    s²/U with t(U-1), the shared items' method-of-moments variance with t(I-1), on the logit scale."""
    u, i = values.shape
    unit_means, item_means, grand = values.mean(1), values.mean(0), values.mean()
    v_units = unit_means.var(ddof=1) / u
    ms_items = u * ((item_means - grand) ** 2).sum() / (i - 1)
    ms_res = ((values - unit_means[:, None] - item_means[None, :] + grand) ** 2).sum() / ((u - 1) * (i - 1))
    v_items = max(0.0, ms_items - ms_res) / (u * i)
    half = math.sqrt(stats.t.ppf(0.975, u - 1) ** 2 * v_units + stats.t.ppf(0.975, i - 1) ** 2 * v_items)
    return half / (grand * (1 - grand))  # on the logit scale: the delta method's slope 1 / (p (1 - p))


def test_crossed_interval_covers_units_and_shared_items():
    rng = np.random.default_rng(3)
    item_ease = rng.normal(0, 1.5, 400)
    values = np.stack([rng.random(400) < 1 / (1 + np.exp(-(0.8 + shift + item_ease))) for shift in (-0.4, 0, 0.4)])
    s = proportion(list(values.astype(float)))
    check_contract(s, 0, 1)
    logit = math.log(values.mean() / (1 - values.mean()))
    half = crossed_half_width(values.astype(float))
    expected = [1 / (1 + math.exp(-(logit - half))), 1 / (1 + math.exp(-(logit + half)))]
    assert s["ci95"] == pytest.approx(expected, rel=1e-6)
    assert "crossed" in s["method"] and "covers training seeds and test items" in s["method"]
    spread = proportion([outcomes(r, 1000, i) for i, r in enumerate((0.2, 0.5, 0.8))])
    assert spread["ci95"][0] < 0.2 and spread["ci95"][1] > 0.8  # t with 2 df over three far-apart networks


def test_items_not_shared_fall_back_to_t_over_units():
    groups = [outcomes(r, n, i) for i, (r, n) in enumerate(((0.6, 300), (0.7, 400), (0.65, 500)))]
    s = proportion(groups)
    means = np.array([g.mean() for g in groups])
    logit, slope = math.log(means.mean() / (1 - means.mean())), 1 / (means.mean() * (1 - means.mean()))
    half = stats.t.ppf(0.975, 2) * means.std(ddof=1) / math.sqrt(3) * slope
    assert s["ci95"] == pytest.approx([1 / (1 + math.exp(-(logit - half))), 1 / (1 + math.exp(-(logit + half)))])
    assert "not shared" in s["method"]


def test_generic_metric_one_unit_bca_inside_bounds():
    rows = np.random.default_rng(1).uniform(0, 1, size=(300, 2))
    s = estimate([rows], lambda m: m[..., 0] * m[..., 1], bounds=(0, 1), item="images")
    check_contract(s, 0, 1)
    assert "BCa" in s["method"] and "300 images" in s["method"]
    assert s["mean"] == pytest.approx(rows[:, 0].mean() * rows[:, 1].mean())


def test_no_variation_in_a_continuous_metric_gives_the_rule_of_three():
    s = estimate([np.full(50, 0.3), np.full(50, 0.3)], bounds=(0, 1))
    assert s["ci95"] == pytest.approx([0.3 - 3 / 50, 0.3 + 3 / 50]) and "rule of three" in s["method"]
    d = paired_difference([np.full(100, 0.4)] * 3, [np.full(100, 0.4)] * 3, metric=None, bounds=(-1, 1))
    assert d["ci95"] == pytest.approx([-6 / 100, 6 / 100]) and d["p_value"] == 1.0


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


def test_versus_chance_exact_for_one_unit_and_crossed_t_for_several():
    groups = [outcomes(r, 100, i) for i, r in enumerate((0.15, 0.12, 0.2))]
    one = versus_chance(groups[:1], 0.1)
    assert one["p_value"] == pytest.approx(stats.binomtest(15, 100, 0.1, alternative="greater").pvalue)
    several = versus_chance(groups, 0.1)
    s = proportion(groups)
    # one-sided at 0.025 exactly when the two-sided 95% interval's lower end is above chance
    assert (several["p_value"] < 0.025) == (s["ci95"][0] > 0.1) and "Student-t" in several["test"]
    far = versus_chance([outcomes(0.9, 300, i) for i in range(3)], 0.1)
    assert far["p_value"] < 1e-4
    near = versus_chance([outcomes(r, 300, i) for i, r in enumerate((0.08, 0.1, 0.12))], 0.1)
    assert near["p_value"] > 0.2


def test_ratio_known_and_refused_near_zero():
    rng = np.random.default_rng(0)
    b = [rng.uniform(0.1, 0.3, 200) for _ in range(3)]
    r = ratio([2 * x + rng.normal(0, 0.01, 200) for x in b], b)
    assert r["mean"] == pytest.approx(2.0, abs=0.01) and 1.9 < r["ci95"][0] <= r["mean"] <= r["ci95"][1] < 2.1
    centred = [rng.normal(0, 1, 200) for _ in range(3)]
    refused = ratio(b, centred)
    assert refused["estimable"] is False and "includes 0" in refused["reason"]


def test_ratio_over_an_exactly_known_denominator():
    """Every unit right on every item: the denominator (accuracy above chance, 0.9) is exact, so the share of it a
    permuted net keeps is estimable, its interval that of the numerator divided by 0.9."""
    kept = [outcomes(r, 500, i) for i, r in enumerate((0.2, 0.25, 0.3))]
    share = ratio(kept, [np.ones(500)] * 3, lambda m: m[..., 0] - 0.1)
    numerator = estimate(kept, lambda m: m[..., 0] - 0.1, bounds=(-np.inf, np.inf))
    assert share["mean"] == pytest.approx(numerator["mean"] / 0.9)
    assert share["ci95"] == pytest.approx([x / 0.9 for x in numerator["ci95"]])
    assert ratio(kept, [np.full(500, 0.1)] * 3, lambda m: m[..., 0] - 0.1)["estimable"] is False


def test_summarize_cut_to_bounds_and_no_zero_width():
    s = summarize([0.98, 0.99, 1.0], bounds=(0, 1))
    half = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    logit_half = half / (0.99 * 0.01)  # the delta method on the logit scale: the interval ends inside (0, 1)
    expected = [1 / (1 + math.exp(-(math.log(99) - logit_half))), 1 / (1 + math.exp(-(math.log(99) + logit_half)))]
    assert s["ci95"] == pytest.approx(expected) and s["ci95"][1] < 1
    one = summarize([0.5], bounds=(0, 1))
    assert one["ci95"] is None and "no interval" in one["method"]
    assert summarize([0.2, 0.2], bounds=(0, 1))["ci95"] is None
    with pytest.raises(ValueError):
        summarize([], bounds=(0, 1))


def test_a_paired_difference_pairs_each_item_with_itself():
    # items differ a lot from each other, a exceeds b by 0.1 on every one: only a paired interval is this narrow
    rng = np.random.default_rng(0)
    items = [rng.normal(0, 1, 200) for _ in range(3)]
    d = paired_difference([x + 0.1 + rng.normal(0, 0.01, 200) for x in items], items, bounds=(-10.0, 10.0))
    assert d["mean"] == pytest.approx(0.1, abs=0.005) and d["ci95"][1] - d["ci95"][0] < 0.05


@pytest.mark.parametrize("s, text, cell", [
    ({"p_value": 0.0}, "p < 1e-16", "< 1e-16"), ({"p_value": 1e-17}, "p < 1e-16", "< 1e-16"),
    ({"p_value": 0.01234}, "p = 0.012", "0.012"), ({"p_value": 3.14e-5}, "p = 3.1e-05", "3.1e-05"),
    ({"p_value": 0.5}, "p = 0.50", "0.50"), ({"p_value": 1.0}, "p = 1.0", "1.0"),
    ({"p_value": 2 / 4001, "p_bound": True}, "p ≤ 0.0005 (floor)", "≤ 0.0005 (floor)"),
    ({"p_value": 2 / (RESAMPLES + 1), "test": "two-sided bootstrap test"}, "p ≤ 0.0005 (floor)", "≤ 0.0005 (floor)"),
    ({"p_value": 2 / (RESAMPLES + 1), "test": "Student-t"}, "p = 0.00050", "0.00050"),
])
def test_p_values_print_to_two_significant_figures_zero_as_below_1e16_and_bounds_as_floors(s, text, cell):
    assert p_text(s) == text and p_text(s, cell=True) == cell
