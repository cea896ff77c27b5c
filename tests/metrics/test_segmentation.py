"""Tests of the segmentation metrics on hand-computed cases."""

import math

import numpy as np
import pytest

from taskology_tf.data.example import CLASS_NAMES, IGNORE_LABEL
from taskology_tf.metrics.segmentation import (
    SegmentationMetrics,
    confusion_matrix,
    iou_per_class,
    labels_from_predictions,
    mean_iou,
    pixel_accuracy,
)

# One 2x3 image, 3 classes, one ignored pixel.
GT = np.array([[[0, 0, 1], [1, 2, IGNORE_LABEL]]], np.int32)
PRED = np.array([[[0, 1, 1], [1, 1, 0]]], np.int32)
# Counted pixels (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,1).
CM = np.array([[1, 1, 0], [0, 2, 0], [0, 1, 0]])


def test_confusion_matrix_by_hand():
    np.testing.assert_array_equal(confusion_matrix(PRED, GT, 3), CM)
    # [B, H, W, 1] inputs give the same.
    np.testing.assert_array_equal(confusion_matrix(PRED[..., None], GT[..., None], 3), CM)


def test_iou_miou_and_accuracy_by_hand():
    # class 0: TP 1, FN 1, FP 0 -> 1/2; class 1: TP 2, FP 2 -> 2/4; class 2: TP 0, FN 1 -> 0.
    np.testing.assert_allclose(iou_per_class(CM), [0.5, 0.5, 0.0])
    assert mean_iou(CM) == pytest.approx(1.0 / 3.0)
    assert mean_iou(CM, [0, 1]) == pytest.approx(0.5)
    assert pixel_accuracy(CM) == pytest.approx(3.0 / 5.0)


def test_absent_classes_are_excluded_from_the_mean():
    # 4 classes; class 3 occurs in neither gt nor prediction -> NaN, not counted.
    cm = np.zeros((4, 4), np.int64)
    cm[:3, :3] = CM
    iou = iou_per_class(cm)
    assert math.isnan(iou[3])
    assert mean_iou(cm) == pytest.approx(1.0 / 3.0)
    assert math.isnan(mean_iou(cm, [3]))
    # A class predicted but never in gt has IoU 0 and does count.
    cm[0, 3] += 1
    assert iou_per_class(cm)[3] == 0.0
    assert mean_iou(cm) == pytest.approx((1 / 3 + 0.5 + 0.0 + 0.0) / 4)


def test_empty_matrix_is_nan():
    cm = np.zeros((3, 3), np.int64)
    assert math.isnan(pixel_accuracy(cm)) and math.isnan(mean_iou(cm))


def test_out_of_range_labels_are_errors():
    with pytest.raises(ValueError, match="`gt` has class ids \\[7\\] outside \\[0, 3\\)"):
        confusion_matrix(PRED, np.where(GT == 2, 7, GT), 3)
    with pytest.raises(ValueError, match="`pred` has class ids"):
        confusion_matrix(PRED + 5, GT, 3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(PRED[:, :1], GT, 3)
    with pytest.raises(ValueError, match="integer class ids"):
        confusion_matrix(PRED.astype(np.float32), GT, 3)


def test_logits_are_argmaxed():
    logits = np.eye(3, dtype=np.float32)[PRED] * 5.0  # [1, 2, 3, 3]
    np.testing.assert_array_equal(labels_from_predictions(logits, 3), PRED)
    with pytest.raises(ValueError, match="logits \\[B, H, W, 4\\]"):
        labels_from_predictions(logits, 4)


def test_accumulator_over_batches_with_names_and_movable_classes():
    metrics = SegmentationMetrics(3, class_names=("road", "car", "pedestrian"))
    assert metrics.movable_classes == ("car", "pedestrian") and metrics.movable_ids == (1, 2)
    logits = np.eye(3, dtype=np.float32)[PRED]
    metrics.update(logits[:, :1], GT[:, :1])  # first row: (0,0) (0,1) (1,1)
    metrics.update(PRED[:, 1:], GT[:, 1:, :, None])  # second row: (1,1) (2,1), ignored pixel
    np.testing.assert_array_equal(metrics.confusion, CM)
    assert metrics.num_pixels == 5
    result = metrics.result()
    assert result["miou"] == pytest.approx(1 / 3)
    assert result["miou_movable"] == pytest.approx(0.25)  # (0.5 + 0) / 2
    assert result["pixel_accuracy"] == pytest.approx(0.6)
    assert result["iou_road"] == pytest.approx(0.5) and result["iou_pedestrian"] == 0.0
    metrics.reset()
    assert metrics.num_pixels == 0 and math.isnan(metrics.result()["miou"])


def test_defaults_follow_the_example_contract():
    metrics = SegmentationMetrics()
    assert metrics.class_names == CLASS_NAMES
    assert [CLASS_NAMES[i] for i in metrics.movable_ids] == ["car", "pedestrian"]
    assert set(metrics.result()) == {"miou", "miou_movable", "pixel_accuracy"} | {f"iou_{c}" for c in CLASS_NAMES}
    generic = SegmentationMetrics(3)
    assert generic.class_names == ("class_0", "class_1", "class_2") and generic.movable_ids == ()
    assert math.isnan(generic.result()["miou_movable"])
    with pytest.raises(ValueError, match="not among class_names"):
        SegmentationMetrics(2, ("a", "b"), movable_classes=("car",))
    with pytest.raises(ValueError, match="num_classes=3 and 2 class_names"):
        SegmentationMetrics(3, ("a", "b"))
