"""benchmarks/object_motion_diagnostics.py: the pixel regions and the median-scaled depth ratio."""

import numpy as np

from taskology_tf.testing import load_script

diag = load_script("benchmarks/object_motion_diagnostics.py")

B, H, W = 2, 6, 8


def _scene():
    depth = np.full((B, H, W), 10.0)
    depth[:, 0, :] = 0.0  # no true depth (sky)
    k = np.array([[8.0, 0, W / 2], [0, 8.0, H / 2], [0, 0, 1]])
    ego = np.tile(np.eye(4), (B, 1, 1))
    ego[:, 2, 3] = -1.0  # the camera drives 1 m forward: points come 1 m closer
    field = np.zeros((B, H, W, 3))
    field[:, 2:4, 2:4, 2] = 1.0  # a lead car driving with the camera
    field[:, 4:6, 5:7, 2] = -0.5  # an oncoming car
    return depth, np.broadcast_to(k, (B, 3, 3)), ego, field


def test_relative_motion_is_zero_for_a_car_that_moves_with_the_camera():
    depth, k, ego, field = _scene()
    rel = diag.relative_motion(depth, k, ego, field)
    np.testing.assert_allclose(rel[:, 2:4, 2:4], 0.0, atol=1e-9)
    np.testing.assert_allclose(rel[:, 1, 0], 1.0, atol=1e-9)  # static scenery: the camera's 1 m
    np.testing.assert_allclose(rel[:, 4:6, 5:7], 1.5, atol=1e-9)


def test_regions_split_the_pixels_with_a_true_depth():
    masks = diag.regions(*_scene())
    assert masks["co-moving"].sum() == B * 4 and masks["other moving"].sum() == B * 4
    assert masks["static"].sum() == B * (H - 1) * W - B * 8  # row 0 has no depth
    together = masks["co-moving"].astype(int) + masks["other moving"] + masks["static"]
    assert together.max() == 1


def test_median_scaled_ratio_ignores_the_overall_scale_and_shows_the_far_car():
    depth, k, ego, field = _scene()
    pred = 3.0 * depth
    pred[:, 2:4, 2:4] *= 5.0  # the lead car predicted five times too far
    ratio = diag.median_scaled_ratio(pred, depth)
    rows = {r["region"]: r for r in diag.region_report(ratio, diag.regions(depth, k, ego, field), pred[..., None] * 0,
                                                        field)}
    np.testing.assert_allclose(rows["static"]["median_ratio"], 1.0)
    np.testing.assert_allclose(rows["co-moving"]["median_ratio"], 5.0)
    np.testing.assert_allclose(rows["co-moving"]["abs_rel"], 4.0)
    np.testing.assert_allclose(rows["other moving"]["true_field"], 0.5)
    assert "field" not in rows["static"]


def test_mask_report_counts_precision_and_recall_against_both_truths():
    movable = np.zeros((1, 4, 4), bool)
    movable[0, :2, :2] = True  # 4 pixels of cars, 2 of them moving
    moving = np.zeros_like(movable)
    moving[0, 0, :2] = True
    mask = np.zeros_like(movable)
    mask[0, 0, :4] = True  # marks 4 pixels: 2 cars (both moving) and 2 road pixels
    r = diag.mask_report(mask, movable, moving)
    assert r["marked"] == 0.25
    assert r["precision_movable"] == 0.5 and r["recall_movable"] == 0.5
    assert r["precision_moving"] == 0.5 and r["recall_moving"] == 1.0
    assert np.isnan(diag.mask_report(mask & False, movable, moving)["precision_moving"])
