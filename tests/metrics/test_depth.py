"""Tests of the depth metrics and their accumulator, on analytic cases."""

import numpy as np
import pytest

from taskology_tf.metrics.accumulate import DepthMetrics
from taskology_tf.metrics.depth import DEPTH_METRICS, depth_errors


def _gt(batch=2, height=4, width=5, seed=0):
    return np.random.default_rng(seed).uniform(1.0, 50.0, size=(batch, height, width, 1)).astype(np.float32)


def test_perfect_prediction():
    gt = _gt()
    errors = depth_errors(gt.copy(), gt)
    assert set(errors) == set(DEPTH_METRICS)
    for key in ("abs_rel", "sq_rel", "rmse", "rmse_log"):
        np.testing.assert_allclose(errors[key], 0.0, atol=1e-12)
    for key in ("a1", "a2", "a3"):
        np.testing.assert_array_equal(errors[key], [1.0, 1.0])


def test_constant_scale_error():
    gt = _gt()
    errors = depth_errors(1.1 * gt.astype(np.float64), gt)
    np.testing.assert_allclose(errors["abs_rel"], 0.1, rtol=1e-6)
    np.testing.assert_allclose(errors["rmse_log"], np.log(1.1), rtol=1e-6)
    g = gt.astype(np.float64).reshape(2, -1)
    np.testing.assert_allclose(errors["sq_rel"], 0.01 * g.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(errors["rmse"], 0.1 * np.sqrt((g**2).mean(axis=1)), rtol=1e-5)
    np.testing.assert_array_equal(errors["a1"], [1.0, 1.0])


def test_deltas_count_pixels_below_thresholds():
    gt = np.ones((1, 1, 4, 1))
    pred = np.array([1.0, 1.3, 1.5, 2.0]).reshape(1, 1, 4, 1)  # ratios 1, 1.3, 1.5, 2.0
    errors = depth_errors(pred, gt)
    assert errors["a1"][0] == pytest.approx(0.25)  # < 1.25
    assert errors["a2"][0] == pytest.approx(0.75)  # < 1.5625
    assert errors["a3"][0] == pytest.approx(0.75)  # < 1.953
    # Under-prediction counts the same as over-prediction (ratio = max(gt/pred, pred/gt)).
    assert depth_errors(1.0 / pred, gt)["a1"][0] == pytest.approx(0.25)


def test_median_scaling_fixes_scale_exactly():
    gt = _gt()
    pred = 0.37 * gt.astype(np.float64)
    assert depth_errors(pred, gt)["abs_rel"][0] == pytest.approx(0.63)
    errors = depth_errors(pred, gt, median_scaling=True)
    np.testing.assert_allclose(errors["abs_rel"], 0.0, atol=1e-12)
    np.testing.assert_array_equal(errors["a1"], [1.0, 1.0])


def test_median_scaling_is_per_image():
    gt = _gt()
    pred = gt.astype(np.float64) * np.array([2.0, 0.5]).reshape(2, 1, 1, 1)
    np.testing.assert_allclose(depth_errors(pred, gt, median_scaling=True)["rmse"], 0.0, atol=1e-9)


def test_invalid_gt_and_mask_are_ignored():
    gt = np.full((1, 2, 2, 1), 10.0)
    pred = np.full((1, 2, 2, 1), 10.0)
    pred[0, 0, 0] = 1000.0  # wrong, but its gt is invalid
    gt[0, 0, 0] = 0.0
    pred[0, 1, 1] = 20.0  # wrong, but masked out
    mask = np.ones((1, 2, 2, 1), bool)
    mask[0, 1, 1] = False
    np.testing.assert_allclose(depth_errors(pred, gt, mask=mask)["abs_rel"], 0.0)
    # Without the mask the 20 vs 10 pixel counts: one of three valid pixels off by 100%.
    np.testing.assert_allclose(depth_errors(pred, gt)["abs_rel"], 1.0 / 3.0)


def test_max_depth_excludes_gt_and_clips_pred():
    gt = np.array([5.0, 8.0, 100.0]).reshape(1, 1, 3, 1)
    pred = np.array([5.0, 200.0, 1.0]).reshape(1, 1, 3, 1)
    errors = depth_errors(pred, gt, max_depth=80.0, min_depth=1.0)
    # gt 100 is invalid; pred 200 is clipped to 80 -> |8 - 80| / 8 = 9 on one of two pixels.
    assert errors["abs_rel"][0] == pytest.approx(4.5)
    # pred below min_depth is clipped up.
    clipped = depth_errors(np.full((1, 1, 1, 1), 1e-9), np.full((1, 1, 1, 1), 2.0), min_depth=0.5)
    assert clipped["abs_rel"][0] == pytest.approx(0.75)


def test_image_without_valid_pixel_is_nan():
    gt = _gt()
    gt[1] = 0.0
    errors = depth_errors(gt.copy(), gt)
    assert errors["abs_rel"][0] == 0.0
    assert all(np.isnan(errors[key][1]) for key in DEPTH_METRICS)


def test_accepts_rank3_and_rejects_mismatch():
    gt = _gt()[..., 0]
    assert depth_errors(gt, gt)["rmse"].shape == (2,)
    with pytest.raises(ValueError, match="same shape"):
        depth_errors(gt[:1], gt)
    with pytest.raises(ValueError, match="pred"):
        depth_errors(np.zeros((2, 3)), np.zeros((2, 3)))


def test_accumulator_means_per_image_values_and_skips_nan():
    metrics = DepthMetrics()
    gt = _gt(batch=1)
    metrics.update(1.1 * gt.astype(np.float64), gt)  # abs_rel 0.1
    metrics.update(np.concatenate([1.3 * gt, gt]), np.concatenate([gt, np.zeros_like(gt)]))  # 0.3 and NaN
    result = metrics.result()
    assert metrics.num_images == 2
    assert result["abs_rel"] == pytest.approx(0.2, rel=1e-5)
    assert result["a1"] == pytest.approx(0.5)
    assert all(isinstance(v, float) for v in result.values())
    metrics.reset()
    assert metrics.num_images == 0
    assert np.isnan(metrics.result()["abs_rel"])


def test_accumulator_options_are_forwarded():
    gt = _gt()
    metrics = DepthMetrics(median_scaling=True, max_depth=80.0)
    metrics.update(3.0 * gt, gt, mask=np.ones_like(gt, bool))
    assert metrics.result()["abs_rel"] == pytest.approx(0.0, abs=1e-6)


def test_region_scores_its_pixels_but_scales_with_the_whole_image():
    gt = np.full((1, 2, 4, 1), 10.0)
    pred = gt.copy()
    pred[0, 0, 0, 0] = 20.0  # one wrong pixel (the median scale stays 1)
    region = np.zeros_like(gt, bool)
    region[0, 0, :2] = True  # the wrong pixel and a right one
    errors = depth_errors(pred, gt, median_scaling=True, region=region)
    assert errors["abs_rel"][0] == pytest.approx(0.5)  # (1.0 + 0.0) / 2
    # Scaled within the region alone, its median (15) would halve the error.
    within = depth_errors(pred, gt, mask=region, median_scaling=True)
    assert within["abs_rel"][0] == pytest.approx(((20 * 10 / 15 - 10) / 10 + (10 - 10 * 10 / 15) / 10) / 2)
    rest = depth_errors(pred, gt, median_scaling=True, region=~region)
    assert rest["abs_rel"][0] == pytest.approx(0.0)
    empty = depth_errors(pred, gt, region=np.zeros_like(region))
    assert np.isnan(empty["abs_rel"][0])
