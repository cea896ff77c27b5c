"""Tests of the multi-frame LiDAR helpers: pose transforms, points in boxes, stack_sequence."""

import numpy as np
import pytest

from taskology_tf.data import lidar_sequence as ls


def _random_pose(rng):
    return ls.yaw_transform(rng.uniform(-np.pi, np.pi), rng.uniform(-50, 50, size=3))


def test_wrap_angle_range_and_values():
    a = np.array([-np.pi, np.pi, 3 * np.pi / 2, -3 * np.pi / 2, 0.1, 7.0])
    w = ls.wrap_angle(a)
    assert np.all((w >= -np.pi) & (w < np.pi))
    np.testing.assert_allclose(np.cos(w), np.cos(a), atol=1e-12)
    np.testing.assert_allclose(w[:4], [-np.pi, -np.pi, -np.pi / 2, np.pi / 2], atol=1e-12)


def test_relative_transform_maps_frames_through_the_world():
    rng = np.random.default_rng(0)
    pose_a, pose_b = _random_pose(rng), _random_pose(rng)
    p_a = rng.normal(size=(5, 3))
    world = ls.transform_points(p_a, pose_a)
    p_b = ls.transform_points(world, ls.invert_transform(pose_b))
    np.testing.assert_allclose(ls.transform_points(p_a, ls.relative_transform(pose_a, pose_b)), p_b, atol=1e-9)
    np.testing.assert_allclose(ls.invert_transform(pose_a) @ pose_a, np.eye(4), atol=1e-12)


def test_transform_points_keeps_extra_columns_and_dtype():
    points = np.array([[1.0, 0.0, 0.0, 0.7]], np.float32)
    out = ls.transform_points(points, ls.yaw_transform(np.pi / 2, (0.0, 0.0, 1.0)))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 1.0, 1.0, 0.7]], atol=1e-6)
    with pytest.raises(ValueError, match="points must have shape"):
        ls.transform_points(np.zeros((3, 2)), np.eye(4))
    with pytest.raises(ValueError, match="4x4"):
        ls.transform_points(points, np.eye(3))


def test_transform_boxes_rotates_heading_and_centre():
    boxes = np.array([[10.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.5]])
    out = ls.transform_boxes(boxes, ls.yaw_transform(np.pi / 2, (1.0, 2.0, 0.0)))
    np.testing.assert_allclose(out[0, :3], [1.0, 12.0, -1.0], atol=1e-9)
    np.testing.assert_allclose(out[0, 3:6], [4.0, 2.0, 1.5])
    np.testing.assert_allclose(out[0, 6], 0.5 + np.pi / 2, atol=1e-9)
    # Corners move like points.
    np.testing.assert_allclose(
        ls.box_corners(out)[0], ls.transform_points(ls.box_corners(boxes)[0], ls.yaw_transform(np.pi / 2, (1, 2, 0))),
        atol=1e-9)
    with pytest.raises(ValueError, match=r"\[N, 7\]"):
        ls.transform_boxes(np.zeros((2, 6)), np.eye(4))


def test_points_in_boxes_analytic_rotated_box():
    box = np.array([[5.0, 5.0, 0.0, 4.0, 2.0, 2.0, np.pi / 4]])  # length axis along (1, 1)/sqrt(2)
    d = np.array([1.0, 1.0]) / np.sqrt(2)
    n = np.array([-1.0, 1.0]) / np.sqrt(2)
    pts = np.array([
        [*(np.array([5, 5]) + 1.9 * d), 0.0],   # inside along the length
        [*(np.array([5, 5]) + 2.1 * d), 0.0],   # just beyond the front face
        [*(np.array([5, 5]) + 0.9 * n), 0.9],   # inside along the width, near the top
        [*(np.array([5, 5]) + 1.1 * n), 0.0],   # beyond the side
        [5.0, 5.0, 1.1],                        # above
        [6.9, 5.0, 0.0],                        # inside an axis-aligned box, not this one
    ])
    np.testing.assert_array_equal(ls.points_in_boxes(pts, box)[:, 0], [True, False, True, False, False, False])
    assert ls.points_in_boxes(pts, box, margin=0.15)[1, 0]
    assert ls.count_points_in_boxes(pts, box, chunk=2).tolist() == [2]
    corners = ls.box_corners(box)[0]
    assert ls.points_in_boxes(corners, box, margin=1e-9).all()
    assert ls.count_points_in_boxes(np.zeros((0, 4)), np.zeros((0, 7))).shape == (0,)


def test_frame_labelled_is_fixed_and_keeps_the_fraction():
    keys = [f"seq/{i}" for i in range(2000)]
    picks = [ls.frame_labelled(k, 0.2, seed=3) for k in keys]
    assert picks == [ls.frame_labelled(k, 0.2, seed=3) for k in keys]
    assert 0.17 < np.mean(picks) < 0.23
    assert picks != [ls.frame_labelled(k, 0.2, seed=4) for k in keys]
    assert all(ls.frame_labelled(k, 1.0) for k in keys[:50]) and not any(ls.frame_labelled(k, 0.0) for k in keys[:50])
    with pytest.raises(ValueError, match="label_fraction"):
        ls.frame_labelled("x", 1.5)


def _world_frames(n_f=3, rng=None):
    """Frames of a static world (one box, a few points) seen from a moving, turning sensor."""
    rng = rng or np.random.default_rng(1)
    world_points = np.concatenate([rng.uniform(-20, 20, size=(50, 3)), rng.uniform(0, 1, size=(50, 1))], axis=1)
    world_box = np.array([[12.0, -3.0, 0.8, 4.5, 1.9, 1.6, 0.3]])
    frames = []
    for k in range(n_f):
        pose = ls.yaw_transform(0.1 * k, (5.0 * k, 0.5 * k, 1.8))
        to_sensor = ls.invert_transform(pose)
        frames.append({
            "points": ls.transform_points(world_points, to_sensor).astype(np.float32),
            "boxes": ls.transform_boxes(world_box, to_sensor).astype(np.float32),
            "track_ids": np.array([7], np.int64),
            "pose": pose,
            "timestamp": 100.0 + 0.5 * k,
            "id": 1000 + k,
        })
    return frames, world_points, world_box


def test_stack_sequence_expresses_every_frame_in_the_latest():
    frames, world_points, world_box = _world_frames()
    out = ls.stack_sequence(frames, 3, max_points=64, max_boxes=4)
    for key, (shape, dtype, _) in ls.SEQUENCE_KEYS.items():
        want = tuple({"n_f": 3, "max_points": 64, "max_boxes": 4}.get(d, d) for d in shape)
        assert out[key].shape == want, key
        assert out[key].dtype == np.dtype(dtype), key
    latest = ls.transform_points(world_points, ls.invert_transform(frames[-1]["pose"]))
    for k in range(3):
        np.testing.assert_allclose(out["points"][k, :50], latest, atol=2e-4)
        np.testing.assert_allclose(out["boxes"][k, 0, :6], ls.transform_boxes(world_box, ls.invert_transform(
            frames[-1]["pose"]))[0, :6], atol=2e-4)
    np.testing.assert_array_equal(out["points_mask"].sum(axis=1), [50, 50, 50])
    np.testing.assert_array_equal(out["points"][:, 50:], 0.0)
    np.testing.assert_array_equal(out["box_mask"][:, :2], [[1, 0]] * 3)
    np.testing.assert_array_equal(out["track_ids"][:, :2], [[7, -1]] * 3)
    np.testing.assert_allclose(out["timestamps"], [-1.0, -0.5, 0.0])
    np.testing.assert_allclose(out["frame_poses"][-1], np.eye(4), atol=1e-6)
    assert out["id"] == 1002 and out["labelled"].tolist() == [1, 1, 1]
    # Boxes without num_points_in_box get them counted (the random points rarely hit the box: compare).
    want = ls.count_points_in_boxes(frames[0]["points"], frames[0]["boxes"])
    assert out["num_points_in_box"][0, 0] == want[0]


def test_stack_sequence_masks_unlabelled_frames_but_keeps_points():
    frames, _, _ = _world_frames()
    frames[1]["labelled"] = 0.0
    out = ls.stack_sequence(frames, 3, max_points=64, max_boxes=4)
    assert out["labelled"].tolist() == [1.0, 0.0, 1.0]
    assert out["box_mask"][1].sum() == 0 and (out["track_ids"][1] == -1).all() and (out["boxes"][1] == 0).all()
    assert out["points_mask"][1].sum() == 50


def test_stack_sequence_subsamples_points_and_keeps_nearest_boxes():
    frame = {
        "points": np.stack([np.arange(10.0), np.zeros(10), np.zeros(10), np.zeros(10)], axis=1),
        "boxes": np.array([[30.0, 0, 0, 4, 2, 1.5, 0], [5.0, 0, 0, 4, 2, 1.5, 0], [-10.0, 0, 0, 4, 2, 1.5, 0]]),
        "track_ids": np.array([1, 2, 3]),
        "num_points_in_box": np.array([4, 5, 6]),
        "pose": np.eye(4),
    }
    out = ls.stack_sequence([frame], 1, max_points=5, max_boxes=2)
    np.testing.assert_array_equal(out["points"][0, :, 0], [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(out["track_ids"][0], [2, 3])
    np.testing.assert_array_equal(out["num_points_in_box"][0], [5, 6])
    rand = ls.stack_sequence([frame], 1, max_points=5, max_boxes=2, rng=np.random.default_rng(0))
    assert len(set(rand["points"][0, :, 0].tolist())) == 5


def test_stack_sequence_errors_name_the_problem():
    frames, _, _ = _world_frames()
    with pytest.raises(ValueError, match="expected n_f=2 frames"):
        ls.stack_sequence(frames, 2, 10, 10)
    with pytest.raises(ValueError, match="max_points must be a positive integer"):
        ls.stack_sequence(frames, 3, 0, 10)
    bad = dict(frames[0])
    del bad["pose"]
    with pytest.raises(ValueError, match=r"frame 0 lacks keys \['pose'\]"):
        ls.stack_sequence([bad], 1, 10, 10)
    bad = dict(frames[0], track_ids=np.array([1, 2]))
    with pytest.raises(ValueError, match="1 boxes but 2 track_ids"):
        ls.stack_sequence([bad], 1, 10, 10)


def test_sequence_windows():
    assert ls.sequence_windows(12, 3, stride=5) == [[0, 5, 10], [1, 6, 11]]
    assert ls.sequence_windows(3, 3) == [[0, 1, 2]]
    assert ls.sequence_windows(2, 3) == []
