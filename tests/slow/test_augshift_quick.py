"""Quick AugShift (real CLI): the latent loss brings the latents of two shifted views closer than shift
augmentation alone (paired over seeds, test images and shifts)."""

import pytest

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
    metrics = augshift_quick["metrics"]
    aug = metrics["methods"]["augshift"]["latent_distance"]
    shift = metrics["methods"]["shift-aug"]["latent_distance"]
    (cmp,) = [c for c in metrics["comparisons"] if c["name"] == "augshift_vs_shift_aug_latent_distance"]
    assert len(aug["values"]) == len(shift["values"]) == len(augshift_quick["seeds"]) >= 2  # in seed order
    assert cmp["values"] == pytest.approx([a - s for a, s in zip(aug["values"], shift["values"])])
    assert cmp["mean"] == pytest.approx(aug["mean"] - shift["mean"])
    assert "training seeds" in cmp["method"] and "test images" in cmp["method"]
    print(f"latent distance augshift {aug['values']} vs shift-aug {shift['values']}; paired difference "
          f"{cmp['mean']:.4f} [{cmp['ci95'][0]:.4f}, {cmp['ci95'][1]:.4f}], p = {cmp['p_value']:.3g}")
    assert cmp["ci95"][1] < 0 and cmp["p_value"] < 0.05
