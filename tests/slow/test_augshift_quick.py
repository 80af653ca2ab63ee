"""Quick AugShift (real CLI): the latent loss brings the latents of two shifted views closer than shift
augmentation alone, seed by seed (paired)."""

import math

import pytest
from scipy import stats

from .conftest import run_poschan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def augshift_quick(slow_out):
    # The quick preset (width 16, 3 epochs × 4000 images, 1000 test images × 2 passes, seeds 0, 1, 2) with only the
    # two methods compared: the other three (baseline, blurpool, augshift+blurpool) are trained independently from
    # their own seeds and do not change these two. These two: 6 runs of 3 epochs, about 20 s an epoch on 2 free
    # cores, i.e. about 7 min with the scoring (32 min measured with the cores shared by four other jobs).
    return run_poschan("augshift", slow_out / "augshift-quick", "--preset", "quick", "--methods", "shift-aug,augshift")


def test_augshift_latent_distance_below_shift_augmentation_paired(augshift_quick):
    methods = augshift_quick["metrics"]["methods"]
    seeds = augshift_quick["seeds"]
    aug = methods["augshift"]["latent_distance"]["values"]
    shift = methods["shift-aug"]["latent_distance"]["values"]
    assert len(aug) == len(shift) == len(seeds) >= 2  # values are in seed order for both methods
    diffs = [a - s for a, s in zip(aug, shift)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    hi = mean + stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)  # upper end of the paired 95% t interval
    print(f"latent distance augshift {aug} vs shift-aug {shift}; paired difference {mean:.4f}, "
          f"95% CI upper end {hi:.4f}")
    assert hi < 0
