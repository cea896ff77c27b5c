"""Tests for taskology_tf.metrics.motion against hand-made motions."""

import numpy as np
import pytest

from taskology_tf.metrics.motion import MotionMetrics, camera_displacement, motion_errors


def _motion(yaw_deg, camera_forward_m):
    """Point transform of a camera that turns by yaw about y and moves forward (z) by the given metres."""
    a = np.radians(yaw_deg)
    r = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    t = -r @ np.array([0.0, 0.0, camera_forward_m])
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = r, t
    return m


def test_camera_displacement_of_forward_motion():
    np.testing.assert_allclose(camera_displacement(_motion(0, 1.5)[None]), [[0, 0, 1.5]], atol=1e-12)


def test_errors_of_known_motions():
    gt = np.stack([_motion(0, 1.0), _motion(5, 2.0)])
    pred = np.stack([_motion(3, 1.0), _motion(5, -2.0)])
    e = motion_errors(pred, gt)
    np.testing.assert_allclose(e["rotation_error_deg"], [3.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(e["translation_error_m"], [0.0, 4.0], atol=1e-6)
    np.testing.assert_allclose(e["translation_angle_deg"], [0.0, 180.0], atol=1e-4)
    np.testing.assert_array_equal(e["forward_fraction"], [1.0, 0.0])
    np.testing.assert_allclose(e["translation_error_rel"], [0.0, 2.0], atol=1e-6)  # 4 m off a 2 m move


def test_relative_translation_error_skips_a_standing_camera():
    gt = np.stack([_motion(0, 0.0), _motion(0, 1.0)])
    pred = np.stack([_motion(0, 0.5), _motion(0, 1.1)])
    e = motion_errors(pred, gt)
    assert np.isnan(e["translation_error_rel"][0]) and e["translation_error_rel"][1] == pytest.approx(0.1)
    m = MotionMetrics()
    m.update(pred, gt)
    assert m.result()["translation_error_rel"] == pytest.approx(0.1)


def test_scale_free_direction_error():
    e = motion_errors(_motion(0, 0.1)[None], _motion(0, 1.0)[None])
    assert e["translation_angle_deg"][0] == pytest.approx(0.0, abs=1e-6)
    assert e["translation_error_m"][0] == pytest.approx(0.9)


def test_accumulator_and_shape_errors():
    m = MotionMetrics()
    assert m.result() == {}
    m.update(_motion(0, 1)[None], _motion(0, 1)[None])
    m.update(_motion(2, 1)[None], _motion(0, 1)[None])
    assert m.num_examples == 2
    assert m.result()["rotation_error_deg"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[B, 4, 4\]"):
        motion_errors(np.eye(4), np.eye(4))
