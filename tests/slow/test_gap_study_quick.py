"""Quick GAP study (real CLI): location from pooled features is far above chance, and a test-time permutation of
the pooled channels of that same network leaves it at chance."""

import math

import pytest

from .conftest import row_of, run_poschan

pytestmark = pytest.mark.slow

CHANCE_3X3 = 1 / 9  # a uniform guess among the 9 cells of the 3×3 grid

# The quick preset's network and schedule (width 8, 2 epochs × 1200 items), restricted to the one trained variant both
# tests read: location task, GAP→FC head, zero padding, 3×3 grid, no trained permutation (its test-only@pooled row is
# the same network tested with permuted pooled channels). Every variant is trained from its own seed, so this variant
# trains exactly as in the full quick design. Two changes decide the chance-level question with enough power: five
# seeds (the interval is a Student-t over seeds, each with its own network, test items and permutations; with three
# its width rests on two degrees of freedom) and the paper's nine test passes (4,500 scored items per seed: the
# binomial SE of a chance-level accuracy falls from 0.014 to 0.0047).
REDUCED = """\
tasks: [location]
heads: [gap-fc]
paddings: [zeros]
grids: [3]
permutes: []
stage: null
stage_permutes: []
seeds: [0, 1, 2, 3, 4]
test_passes: 9
"""


@pytest.fixture(scope="module")
def gap_quick(slow_out):
    config = slow_out / "gap-study-reduced.yaml"
    config.write_text(REDUCED)
    return run_poschan("gap-study", slow_out / "gap-study-quick", "--preset", "quick", "--config", str(config))


def _location_row(results: dict, permute: str, where: str) -> dict:
    return row_of(results["metrics"]["rows"], task="location", head="gap-fc", padding="zeros", grid=3,
                   permute=permute, where=where)


def test_quick_location_accuracy_is_far_above_chance(gap_quick):
    row = _location_row(gap_quick, "none", "-")
    assert row["chance"] == pytest.approx(CHANCE_3X3)
    n_test = gap_quick["metrics"]["n_test"] * gap_quick["config"]["test_passes"]  # test items scored per seed
    se_chance = math.sqrt(CHANCE_3X3 * (1 - CHANCE_3X3) / n_test)  # SE of a chance-level classifier's accuracy
    threshold = CHANCE_3X3 + 3 * se_chance
    lo = row["accuracy"]["ci95"][0]
    print(f"location accuracy {row['accuracy']['mean']:.4f}, CI low {lo:.4f} vs chance + 3 SE {threshold:.4f} "
          f"(n_test {n_test})")
    assert lo > threshold


def test_test_only_permutation_at_pooled_is_at_chance(gap_quick):
    row = _location_row(gap_quick, "test-only", "pooled")
    lo, hi = row["accuracy"]["ci95"]
    print(f"test-only@pooled {row['accuracy']['mean']:.4f} [{lo:.4f}, {hi:.4f}] values {row['accuracy']['values']} "
          f"vs chance {CHANCE_3X3:.4f}")
    assert lo <= CHANCE_3X3 <= hi
