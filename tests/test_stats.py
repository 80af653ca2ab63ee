import math

import pytest

from poschan.stats import summarize


def test_known_interval():
    s = summarize([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["n"] == 3 and s["values"] == [1.0, 2.0, 3.0]
    # t(0.975, 2) = 4.302653; sd = 1; half = 4.302653 / sqrt(3)
    half = 4.302652729911275 / math.sqrt(3)
    assert s["ci95"] == pytest.approx([2.0 - half, 2.0 + half])


def test_single_value_and_constant():
    assert summarize([0.5])["ci95"] == [0.5, 0.5]
    assert summarize([0.7, 0.7, 0.7])["ci95"] == pytest.approx([0.7, 0.7])


def test_empty_refused():
    with pytest.raises(ValueError):
        summarize([])
