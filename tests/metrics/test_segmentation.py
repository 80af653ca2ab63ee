"""poschan.segmetrics on hand-computed confusions, masks that partition the pixels, and the segmentation figures."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from poschan.data.regions import region_mask
from poschan.data.segsets import IGNORE_INDEX
from poschan.errors import UserError
from poschan.metrics.segmentation import (
    ConfusionMeter,
    confusion,
    fw_iou_of,
    image_confusions,
    iou_counts,
    iou_per_class,
    miou,
    miou_of,
    miou_present_of,
    pixel_accuracy,
    pixel_accuracy_of,
    predict,
)

SCORES = (miou_of, miou_present_of, fw_iou_of, pixel_accuracy_of)
from poschan.report.segmentation_figures import overlays, region_heatmap, reliance_curve


def random_labels(shape: tuple[int, ...], k: int, seed: int) -> torch.Tensor:
    return torch.randint(0, k, shape, generator=torch.Generator().manual_seed(seed))


def test_perfect_prediction_scores_one():
    target = random_labels((3, 8, 8), 4, 0)
    conf = confusion(target, target, 4)
    assert miou(conf) == 1.0 and pixel_accuracy(conf) == 1.0
    assert torch.equal(conf, torch.diag(torch.bincount(target.flatten(), minlength=4)))


def test_hand_computed_two_classes():
    target = torch.tensor([[0, 0], [1, 1]])
    pred = torch.tensor([[0, 1], [1, 1]])
    conf = confusion(pred, target, 2)
    assert torch.equal(conf, torch.tensor([[1, 1], [0, 2]]))  # rows = target, columns = prediction
    assert torch.allclose(iou_per_class(conf), torch.tensor([1 / 2, 2 / 3], dtype=torch.float64))
    assert miou(conf) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert pixel_accuracy(conf) == 3 / 4


def test_absent_classes_left_out_and_false_positive_class_counts_zero():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 3])  # class 2 nowhere; class 3 predicted but absent from the target
    ious = iou_per_class(confusion(pred, target, 4))
    assert ious[:2].tolist() == [1.0, 0.5] and math.isnan(ious[2]) and ious[3] == 0.0
    assert miou(confusion(pred, target, 4)) == pytest.approx((1 + 0.5 + 0) / 3)


def test_empty_confusion_is_nan():
    target = random_labels((2, 4, 4), 3, 1)
    conf = confusion(target, target, 3, torch.zeros(4, 4, dtype=torch.bool))
    assert conf.sum() == 0 and math.isnan(miou(conf)) and math.isnan(pixel_accuracy(conf))


@pytest.mark.parametrize("per_image", [False, True])
def test_mask_and_complement_partition_the_pixels(per_image):
    target, pred = random_labels((5, 8, 8), 3, 2), random_labels((5, 8, 8), 3, 3)
    mask = (torch.rand(5, 8, 8, generator=torch.Generator().manual_seed(4)) < 0.3 if per_image
            else region_mask("q2", 8))
    inside, outside, total = (confusion(pred, target, 3, m) for m in (mask, ~mask, None))
    assert torch.equal(inside + outside, total)
    assert int(inside.sum()) == int(torch.broadcast_to(mask, target.shape).sum())
    flat = torch.broadcast_to(mask, target.shape)
    assert torch.equal(inside, confusion(pred[flat], target[flat], 3))


def test_full_mask_equals_whole_image():
    target, pred = random_labels((2, 6, 6), 4, 5), random_labels((2, 6, 6), 4, 6)
    full = torch.ones(6, 6, dtype=torch.bool)
    assert miou(confusion(pred, target, 4, full)) == miou(confusion(pred, target, 4))


def test_bad_input():
    target = random_labels((2, 4, 4), 3, 7)
    with pytest.raises(UserError):
        confusion(target[0], target, 3)
    with pytest.raises(UserError):
        confusion(target, target, 3, torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(UserError):
        confusion(target + 1, target, 3)  # a prediction of class 3 with K = 3
    with pytest.raises(UserError):
        ConfusionMeter(3, {"all": torch.ones(4, 4, dtype=torch.bool)})


def test_meter_accumulates_batches_per_mask():
    target, pred = random_labels((6, 8, 8), 3, 8), random_labels((6, 8, 8), 3, 9)
    left = region_mask("left", 8)
    meter = ConfusionMeter(3, {"left": left, "right": ~left})
    meter.update(pred[:4], target[:4])
    meter.update(pred[4:], target[4:])
    assert torch.equal(meter.confusions["all"], confusion(pred, target, 3))
    assert meter.miou("left") == miou(confusion(pred, target, 3, left))
    assert meter.pixel_accuracy("right") == pixel_accuracy(confusion(pred, target, 3, ~left))
    assert meter.miou() == miou(confusion(pred, target, 3))
    with pytest.raises(UserError):
        meter.miou("top")


@pytest.mark.parametrize("masked", [False, True])
def test_image_confusions_are_each_images_own(masked):
    target, pred = random_labels((4, 6, 6), 3, 15), random_labels((4, 6, 6), 3, 16)
    target[1, 0] = IGNORE_INDEX
    mask = region_mask("q1", 6) if masked else None
    per_image = image_confusions(pred, target, 3, mask)
    assert per_image.shape == (4, 3, 3)
    for i in range(4):
        assert torch.equal(per_image[i], confusion(pred[i], target[i], 3, mask))
    assert torch.equal(per_image.sum(0), confusion(pred, target, 3, mask))


def test_iou_counts_score_like_the_summed_confusion_vectorised():
    target, pred = random_labels((5, 8, 8), 4, 17), random_labels((5, 8, 8), 4, 18)
    pred[pred == 3] = 2  # class 3 never predicted: its IoU 0 where it is in the target
    target[0] = 0  # an image with one class only
    per_image = image_confusions(pred, target, 4)
    counts = iou_counts(per_image)
    conf = per_image[0].double().numpy()
    assert counts[0].tolist() == [*np.diag(conf), *conf.sum(1), *conf.sum(0)]  # tp; target; predicted pixels
    whole = confusion(pred, target, 4)
    assert miou_of(counts.mean(0)) == pytest.approx(miou(whole), abs=1e-12)
    assert pixel_accuracy_of(counts.mean(0)) == pytest.approx(pixel_accuracy(whole), abs=1e-12)
    stacked = np.stack([counts, counts[::-1]])  # (2, 5, 3K): leading axes kept
    assert miou_of(stacked).shape == (2, 5)
    assert miou_of(stacked)[1].tolist() == [miou(c) for c in per_image.flip(0)]
    assert pixel_accuracy_of(stacked)[0].tolist() == [pixel_accuracy(c) for c in per_image]
    for score in SCORES:
        assert score(stacked)[1].tolist() == [score(c) for c in counts[::-1]]
        assert score(counts.mean(0)) == pytest.approx(score(iou_counts(whole)), abs=1e-12)
        assert math.isnan(score(np.zeros(12))) and np.isnan(score(np.zeros((2, 3, 12)))).all()


# A region whose target holds classes 1 (8 pixels) and 2 (4 pixels) of K = 4, every pixel right but one pixel of
# class 1 predicted 3, a class absent from the target (rows = target, columns = prediction):
STRAY = np.array([[0, 0, 0, 0], [0, 7, 0, 1], [0, 0, 4, 0], [0, 0, 0, 0]])


def test_a_stray_pixel_of_a_class_absent_from_the_target_counts_in_miou_of_only():
    counts = iou_counts(STRAY)
    assert counts.tolist() == [0, 7, 4, 0, 0, 8, 4, 0, 0, 7, 4, 1]  # tp; target; predicted pixels
    # IoU: class 1 7 / 8, class 2 4 / 4, class 3 0 / 1 (only predicted), class 0 nowhere
    assert miou_of(counts) == pytest.approx((7 / 8 + 1 + 0) / 3)  # 0.625: the absent class 3 enters with IoU 0
    assert miou_present_of(counts) == pytest.approx((7 / 8 + 1) / 2)  # 0.9375: the classes of the target only
    assert fw_iou_of(counts) == pytest.approx((8 * 7 / 8 + 4 * 1) / 12)
    assert pixel_accuracy_of(counts) == pytest.approx(11 / 12)
    right = iou_counts(np.diag([0, 8, 4, 0]))  # the stray pixel predicted right: every score 1
    assert [float(score(right)) for score in SCORES] == [1.0] * 4
    assert miou_of(right) - miou_of(counts) > 0.3 > 0.1 > miou_present_of(right) - miou_present_of(counts)


def test_frequency_weighted_iou_weights_the_target_classes_by_their_pixels():
    # target: class 1 4 pixels (2 right, 1 predicted 2, 1 predicted 3), class 2 2 pixels (both right)
    a = np.array([[0, 0, 0, 0], [0, 2, 1, 1], [0, 0, 2, 0], [0, 0, 0, 0]])
    ious = (2 / 4, 2 / 3, 0.0)  # IoU of class 1: 2 / (4 + 2 - 2); class 2: 2 / (2 + 3 - 2); class 3: 0 / 1
    assert miou_of(iou_counts(a)) == pytest.approx(sum(ious) / 3)
    assert miou_present_of(iou_counts(a)) == pytest.approx((ious[0] + ious[1]) / 2)
    assert fw_iou_of(iou_counts(a)) == pytest.approx((4 * ious[0] + 2 * ious[1]) / 6)
    assert pixel_accuracy_of(iou_counts(a)) == pytest.approx(4 / 6)
    # a second image (target: class 0 4 pixels, one predicted 1; class 1 2 pixels): the mean of the two images'
    # counts scores as their summed confusion [[3, 1, 0, 0], [0, 4, 1, 1], [0, 0, 2, 0], [0, 0, 0, 0]]
    b = np.array([[3, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    means = iou_counts(np.stack([a, b])).mean(0)
    summed = (3 / 4, 4 / 7, 2 / 3)  # IoU of classes 0, 1, 2 (class 3: 0 / 1); target pixels 4, 6, 2
    assert miou_of(means) == pytest.approx(sum(summed) / 4)
    assert miou_present_of(means) == pytest.approx(sum(summed) / 3)
    assert fw_iou_of(means) == pytest.approx((4 * summed[0] + 6 * summed[1] + 2 * summed[2]) / 12)
    assert pixel_accuracy_of(means) == pytest.approx(9 / 12)
    assert fw_iou_of(means) != pytest.approx((fw_iou_of(iou_counts(a)) + fw_iou_of(iou_counts(b))) / 2)


def test_meter_keeps_per_image_counts_in_order():
    target, pred = random_labels((5, 6, 6), 3, 19), random_labels((5, 6, 6), 3, 20)
    left = region_mask("left", 6)
    meter = ConfusionMeter(3, {"left": left})
    for batch in (slice(0, 2), slice(2, 3), slice(3, 4)):
        meter.update(pred[batch], target[batch])
    assert meter.images().shape == (4, 3, 3)
    assert np.array_equal(meter.counts("left"), iou_counts(image_confusions(pred[:4], target[:4], 3, left)))
    assert ConfusionMeter(3).counts().shape == (0, 9)


def test_predict_is_batched_argmax():
    model = nn.Conv2d(1, 3, 3, padding=1)
    with torch.no_grad():
        g = torch.Generator().manual_seed(14)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    images = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(10))
    out = predict(model, images, batch_size=3, device="cpu")
    assert out.dtype == torch.int64 and out.shape == (7, 8, 8)
    assert torch.equal(out, model(images).argmax(1))


# Figure smoke tests.

def test_reliance_curve(tmp_path):
    def stat(m):
        return {"mean": m, "ci95": [m - 0.02, m + 0.02], "n": 3}

    rows = [{"n": n, "fraction": n / 64, "ranked": stat(0.8 - n / 100), "random": stat(0.8 - n / 400)}
            for n in (1, 4, 16, 32)]
    path = tmp_path / "curve.png"
    reliance_curve(rows, path, title="reliance", clean=0.82)
    assert path.stat().st_size > 0


def test_region_heatmap(tmp_path):
    rows = [{"region": r, "n": 8, "method": m, "miou_in": {"mean": 0.2 + 0.1 * i, "ci95": [0.1, 0.5]},
             "miou_out": 0.9 - 0.05 * i, "selectivity": 0.15 * i}
            for i, (r, m) in enumerate((r, m) for r in ("left", "q1") for m in ("ranked", "random", "pgd"))]
    path = tmp_path / "heat.png"
    region_heatmap(rows, path, title="regions")
    assert path.stat().st_size > 0


def test_overlays(tmp_path):
    images = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(11))
    masks = random_labels((3, 8, 8), 4, 12)
    path = tmp_path / "overlays.png"
    overlays(images, masks, {"clean": masks, "pgd": random_labels((3, 8, 8), 4, 13)}, path,
             class_names=["background", "a", "b", "c"], region=region_mask("center", 8), max_rows=2)
    assert path.stat().st_size > 0


def test_ignored_target_pixels_are_not_counted():
    target = torch.tensor([[0, 1], [IGNORE_INDEX, 1]])
    pred = torch.tensor([[0, 1], [1, 0]])
    conf = confusion(pred, target, 2)
    assert conf.sum() == 3 and conf.tolist() == [[1, 0], [1, 1]]
