"""Quick segmenter (real CLI): better than predicting the majority class of the test masks everywhere."""

import pytest
import torch

from poschan.experiments import seg_train

from .conftest import run_poschan

pytestmark = pytest.mark.slow

IGNORE = 255  # label of unscored pixels (none in the synthetic scenes; left out if present)


@pytest.fixture(scope="module")
def seg_quick(slow_out):
    # The quick preset as is (width 16, ASPP 64, 3 epochs × 8000 scenes, 1000 test scenes): 5 min measured.
    return run_poschan("seg-train", slow_out / "seg-train-quick", "--preset", "quick")


def _majority_scores(masks: torch.Tensor) -> tuple[float, float]:
    """mIoU and pixel accuracy of predicting the most frequent test label everywhere, counted here: its IoU is
    (its pixels) / (all pixels); every other class present in the masks has IoU 0; classes absent from the
    masks (and never predicted) are left out, as in the mIoU the command reports."""
    labels = masks.flatten()
    labels = labels[labels != IGNORE]
    counts = torch.bincount(labels)
    majority_fraction = counts.max().item() / labels.numel()
    present = int((counts > 0).sum())
    return majority_fraction / present, majority_fraction


def test_quick_segmenter_beats_the_majority_class(seg_quick):
    config = seg_train.Config(**seg_quick["config"])
    test = config.seg_data().test_set(config.test_size)  # the fixed test scenes the command scored
    assert len(test.masks) == seg_quick["metrics"]["test_images"]
    miou_major, acc_major = _majority_scores(test.masks)
    miou = seg_quick["metrics"]["miou"]["values"]
    acc = seg_quick["metrics"]["pixel_accuracy"]["values"]
    print(f"mIoU {miou} vs majority {miou_major:.4f}; pixel accuracy {acc} vs majority {acc_major:.4f}")
    assert all(m > miou_major for m in miou)
    assert all(a > acc_major for a in acc)
    for stat in (seg_quick["metrics"]["miou"], seg_quick["metrics"]["pixel_accuracy"]):  # an interval over test images
        lo, hi = stat["ci95"]
        assert 0 <= lo <= stat["mean"] <= hi <= 1 and lo < hi and "test images" in stat["method"]
    assert len(seg_quick["metrics"]["train_loss"]) == len(miou)  # per seed, as plain values
