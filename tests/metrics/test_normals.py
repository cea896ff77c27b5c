"""Tests of the surface-normal metrics and their pooling accumulator, on analytic cases."""

import numpy as np
import pytest

from taskology_tf.metrics.accumulate import NormalsMetrics
from taskology_tf.metrics.normals import NORMALS_METRICS, angular_error_deg, normals_summary


def _unit_normals(batch=2, height=3, width=4, seed=0):
    v = np.random.default_rng(seed).normal(size=(batch, height, width, 3))
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _rotate_about_x(v, degrees):
    a = np.radians(degrees)
    r = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return v @ r.T


def _perpendicular_to_x(batch=2, height=3, width=4, seed=0):
    """Unit normals in the y-z plane, so a rotation about x turns each by exactly the rotation angle."""
    angle = np.random.default_rng(seed).uniform(0, 2 * np.pi, size=(batch, height, width))
    return np.stack([np.zeros_like(angle), np.cos(angle), np.sin(angle)], axis=-1)


def test_identical_is_zero():
    gt = _unit_normals()
    errors = angular_error_deg(gt, gt)
    assert errors.shape == (24,)
    np.testing.assert_allclose(errors, 0.0, atol=1e-3)
    summary = normals_summary(errors)
    assert set(summary) == set(NORMALS_METRICS)
    assert summary["within_11.25"] == summary["within_30"] == 100.0


def test_rotation_by_20_degrees():
    gt = _perpendicular_to_x()
    errors = angular_error_deg(_rotate_about_x(gt, 20.0), gt)
    np.testing.assert_allclose(errors, 20.0, atol=1e-6)
    summary = normals_summary(errors)
    assert summary["mean"] == pytest.approx(20.0)
    assert summary["median"] == pytest.approx(20.0)
    assert summary["rmse"] == pytest.approx(20.0)
    assert summary["within_11.25"] == 0.0
    assert summary["within_22.5"] == 100.0
    assert summary["within_30"] == 100.0


def test_antiparallel_is_180_and_prediction_length_is_ignored():
    gt = _unit_normals()
    np.testing.assert_allclose(angular_error_deg(-gt, gt), 180.0, atol=1e-4)
    np.testing.assert_allclose(angular_error_deg(7.5 * gt, gt), 0.0, atol=1e-3)
    np.testing.assert_allclose(angular_error_deg(np.zeros_like(gt), gt), 90.0)


def test_invalid_gt_and_mask_are_ignored():
    gt = _perpendicular_to_x(batch=1, height=2, width=2)
    pred = _rotate_about_x(gt, 10.0)
    gt[0, 0, 0] = 0.0  # unlabelled
    pred[0, 1, 1] = -gt[0, 1, 1]  # wrong, but masked
    mask = np.ones((1, 2, 2, 1), bool)
    mask[0, 1, 1] = False
    errors = angular_error_deg(pred, gt, mask=mask)
    np.testing.assert_allclose(errors, [10.0, 10.0])
    assert angular_error_deg(pred, gt).shape == (3,)
    with pytest.raises(ValueError, match="shape"):
        angular_error_deg(pred[..., :2], gt[..., :2])


def test_summary_thresholds_and_empty():
    summary = normals_summary(np.array([5.0, 15.0, 25.0, 40.0]))
    assert summary["within_11.25"] == 25.0
    assert summary["within_22.5"] == 50.0
    assert summary["within_30"] == 75.0
    assert summary["median"] == 20.0
    assert summary["rmse"] == pytest.approx(np.sqrt((25 + 225 + 625 + 1600) / 4))
    assert all(np.isnan(v) for v in normals_summary([]).values())


def test_accumulator_pools_pixels():
    gt_a = _perpendicular_to_x(batch=1, height=1, width=3)
    gt_b = _perpendicular_to_x(batch=1, height=1, width=1, seed=1)
    metrics = NormalsMetrics()
    metrics.update(_rotate_about_x(gt_a, 10.0), gt_a)  # three pixels at 10 degrees
    metrics.update(_rotate_about_x(gt_b, 90.0), gt_b)  # one pixel at 90 degrees
    result = metrics.result()
    assert metrics.num_pixels == 4
    # Pooled median of [10, 10, 10, 90] is 10; the mean of per-image medians would be 50.
    assert result["median"] == pytest.approx(10.0, abs=1e-4)
    assert result["mean"] == pytest.approx(30.0, abs=1e-4)
    assert result["within_11.25"] == 75.0
    metrics.reset()
    assert metrics.num_pixels == 0
    assert np.isnan(metrics.result()["median"])
