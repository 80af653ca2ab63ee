"""Do the 95% intervals of poschan.stats cover 95% under poschan's design? Simulated studies of U networks (units)
scored on the same I test items (a crossed design: a network effect, an item effect all networks share, and
per-(network, item) noise), with the truth known, for a proportion, a paired difference and a ratio of item
sums (an IoU-like metric); and the null distribution of the paired difference's p-value."""

import numpy as np
import pytest
from scipy.special import expit

from poschan.stats import estimate, paired_difference, proportion

STUDIES = 1000
ITEMS = 200
UNITS = (3, 5, 10)
MU, NETWORK_SD, ITEM_SD, NOISE_SD = 1.2, 0.3, 1.2, 0.6  # logit scale: accuracies around 0.73, hard and easy items


def _truth_of_mean_accuracy() -> float:
    z = np.random.default_rng(123).normal(0, np.sqrt(NETWORK_SD ** 2 + ITEM_SD ** 2 + NOISE_SD ** 2), 4_000_000)
    return float(expit(MU + z).mean())


TRUTH = _truth_of_mean_accuracy()


def _logits(rng: np.random.Generator, units: int) -> np.ndarray:
    return (MU + rng.normal(0, NETWORK_SD, (units, 1)) + rng.normal(0, ITEM_SD, (1, ITEMS))
            + rng.normal(0, NOISE_SD, (units, ITEMS)))


def _proportion_study(rng: np.random.Generator, units: int) -> tuple[dict, float]:
    return proportion(list(rng.random((units, ITEMS)) < expit(_logits(rng, units)))), TRUTH


def _paired_study(rng: np.random.Generator, units: int) -> tuple[dict, float]:
    """Null: the two sides differ by a network effect and an item effect, each symmetric about 0 (so the expected
    difference of the accuracies is exactly 0)."""
    base = _logits(rng, units)
    shift = rng.normal(0, 0.4, (units, 1)) + rng.normal(0, 0.4, (1, ITEMS))
    a = rng.random((units, ITEMS)) < expit(base + shift / 2)
    b = rng.random((units, ITEMS)) < expit(base - shift / 2)
    return paired_difference(list(a), list(b), bounds=(-1.0, 1.0)), 0.0


def _continuous_paired_study(rng: np.random.Generator, units: int) -> tuple[dict, float]:
    """The continuous crossed design: between-network sd 0.02, shared items sd 0.05, item noise sd 0.05."""
    d = rng.normal(0, 0.02, (units, 1)) + rng.normal(0, 0.05, (1, ITEMS)) + rng.normal(0, 0.05, (units, ITEMS))
    return paired_difference(list(0.5 + d / 2), list(0.5 - d / 2), metric=None, bounds=(-1.0, 1.0)), 0.0


def _ratio_study(rng: np.random.Generator, units: int) -> tuple[dict, float]:
    """An IoU-like metric: the sum of intersections over the sum of unions of each network's items; unions are
    item sizes (shared), the overlap share follows the crossed logit model, so the truth is TRUTH."""
    union = rng.gamma(2.0, 50.0, (1, ITEMS)).repeat(units, axis=0)
    inter = union * expit(_logits(rng, units))
    rows = [np.stack([i, u], axis=1) for i, u in zip(inter, union)]
    return estimate(rows, lambda m: m[..., 0] / m[..., 1], bounds=(0.0, 1.0)), TRUTH


STUDY = {"proportion": _proportion_study, "paired difference (0/1)": _paired_study,
         "paired difference (continuous)": _continuous_paired_study, "ratio of item sums": _ratio_study}


def _simulate(kind: str, units: int) -> tuple[float, np.ndarray]:
    rng = np.random.default_rng(units * 1000 + list(STUDY).index(kind))
    covered, ps = [], []
    for _ in range(STUDIES):
        s, truth = STUDY[kind](rng, units)
        covered.append(s["ci95"][0] <= truth <= s["ci95"][1])
        ps.append(s.get("p_value", np.nan))
    return float(np.mean(covered)), np.asarray(ps)


@pytest.mark.parametrize("units", UNITS)
@pytest.mark.parametrize("kind", list(STUDY))
def test_nominal_95_intervals_cover_the_truth(kind: str, units: int):
    coverage, ps = _simulate(kind, units)
    assert 0.93 <= coverage <= 0.995, f"{kind}, {units} units: coverage {coverage:.3f}"
    if kind.startswith("paired"):
        share = float(np.mean(ps < 0.05))  # the null is true: p is uniform, so about 5% fall below 0.05
        assert 0.03 <= share <= 0.07, f"{kind}, {units} units: {share:.3f} of null p-values below 0.05"
