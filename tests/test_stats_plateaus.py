"""Learning-curve plateaus (poschan.stats.plateaus, trend): a least-squares slope per seed over the curve's last
third, an interval over the seeds, and the trend it supports."""

import numpy as np
import pytest

from poschan.stats import FLAT_SLOPE, plateaus, trend


def test_plateaus_fit_a_slope_over_the_last_third_per_seed_then_over_seeds():
    def curve(variant, seed, values):
        return [{"variant": variant, "eval": "accuracy", "seed": seed, "epoch": e + 1, "accuracy": a}
                for e, a in enumerate(values)]

    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # +0.1 per epoch in every seed
    flat = [0.1, 0.5, 0.6, 0.7, 0.7, 0.7]
    noisy = [0.1, 0.5, 0.6, 0.6, 0.8, 0.6]
    curves = [*curve("up", 0, rising), *curve("up", 1, [a + 0.01 for a in rising]),
              *curve("up", 2, [a + 0.03 for a in rising[:4]] + [0.64, 0.66]),
              *curve("flat", 0, flat), *curve("flat", 1, flat[:4] + [0.701, 0.702]), *curve("flat", 2, flat),
              *curve("noisy", 0, noisy), *curve("noisy", 1, noisy[:3] + [0.8, 0.6, 0.62]),
              *curve("noisy", 2, noisy[:3] + [0.62, 0.6, 0.8]), *curve("short", 0, [0.1, 0.2])]
    ends = {e["variant"]: e for e in plateaus(curves)}
    assert set(ends) == {"up", "flat", "noisy"}  # two epochs: no last third to fit
    up = ends["up"]
    assert (up["epochs"], up["since_epoch"]) == (6, 4)  # epochs 4, 5, 6
    third_seed = np.polyfit([4, 5, 6], [0.43, 0.64, 0.66], 1)[0]
    assert up["slope"]["values"] == pytest.approx([0.1, 0.1, third_seed])
    assert up["final"]["values"] == pytest.approx([0.6, 0.61, 0.66])
    assert up["trend"] == "rising"
    assert ends["flat"]["trend"] == f"flat within ±{FLAT_SLOPE} per epoch"
    assert ends["noisy"]["trend"] == "undetermined"  # slopes of both signs: neither rising nor shown flat
    assert trend({"ci95": None}) == "undetermined" and trend({"ci95": [-0.02, -0.01]}) == "falling"
