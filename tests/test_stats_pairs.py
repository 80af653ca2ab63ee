"""stats: two edits of the same items side by side (beside, halves_difference_of), units paired cyclically
(paired_units) and comparison entries."""

import numpy as np
import pytest

from poschan import stats


def test_halves_of_rows_side_by_side_score_each_edit():
    a, b = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 0.0], [0.0, 1.0]])
    first = stats.halves_difference_of(lambda means: means[..., 0])
    assert stats.beside(a, b).shape == (2, 4) and first(stats.beside(a, b).mean(0)) == 0.5


def test_units_are_paired_cyclically_and_say_so():
    a, b, unit, note = stats.paired_units([1, 2], [10, 20], "ranking seeds", "random draws")
    assert (a, b, unit, note) == ([1, 2], [10, 20], "(ranking seed, random draw) pairs",
                                  "; ranking seed i paired with random draw i")
    a, b, _, note = stats.paired_units([1], [10, 20, 30], "ranking seeds", "random draws")
    assert (a, b) == ([1, 1, 1], [10, 20, 30]) and "the one ranking seed is in every pair" in note
    a, b, _, note = stats.paired_units([1, 2], [10, 20, 30], "ranking seeds", "random draws")
    assert (a, b) == ([1, 2, 1], [10, 20, 30]) and "each of the 2 ranking seeds is in several pairs" in note


def test_a_comparison_is_the_statistic_with_its_labels():
    entry = stats.comparison({"mean": 0.1, "p_value": 0.5}, "x_vs_y", "x", "y", "Is x above y?")
    assert entry == {"name": "x_vs_y", "a": "x", "b": "y", "question": "Is x above y?", "mean": 0.1, "p_value": 0.5}


def test_a_negated_difference_is_the_difference_taken_the_other_way():
    rng = np.random.default_rng(3)
    a = [rng.random(40) < p for p in (0.6, 0.7, 0.65, 0.8, 0.55)]
    b = [rng.random(40) < p for p in (0.5, 0.6, 0.6, 0.6, 0.5)]
    kw = {"bounds": (-1.0, 1.0), "unit": "seeds", "item": "images"}
    forward, backward = stats.negated(stats.paired_difference(a, b, **kw)), stats.paired_difference(b, a, **kw)
    for key in ("mean", "ci95", "values", "range", "p_value"):
        assert forward[key] == pytest.approx(backward[key]), key
    assert stats.negated(forward) == stats.paired_difference(a, b, **kw)
