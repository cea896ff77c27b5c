"""Tests of the synthetic scene sampler (geometry only, NumPy)."""

import dataclasses

import numpy as np
import pytest

from taskology_tf.data.example import CLASS_NAMES, MOVABLE_CLASSES
from taskology_tf.data.synthetic import scene as scene_lib


def _scene(seed, traffic="normal"):
    return scene_lib.sample_scene(np.random.default_rng(seed), traffic)


def _to_local(boxes, points):
    """World points [P, 3] in the frame of every box -> [N, P, 3]."""
    rel = points[None] - boxes.center[:, None]
    c, s = np.cos(boxes.yaw)[:, None], np.sin(boxes.yaw)[:, None]
    return np.stack([c * rel[..., 0] - s * rel[..., 2], rel[..., 1], s * rel[..., 0] + c * rel[..., 2]], axis=-1)


def test_same_seed_same_scene_and_different_seed_differs():
    a, b, c = _scene(3), _scene(3), _scene(4)
    for field in dataclasses.fields(scene_lib.Boxes):
        np.testing.assert_array_equal(getattr(a.boxes, field.name), getattr(b.boxes, field.name))
    assert a.camera == b.camera and a.road == b.road
    assert a.camera != c.camera
    assert len(a.boxes) != len(c.boxes) or not np.array_equal(a.boxes.center, c.boxes.center)


def test_rotation_and_heading_follow_the_kitti_convention():
    np.testing.assert_allclose(scene_lib.rotation_y(np.pi / 2) @ [1.0, 0, 0], [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(scene_lib.heading_direction(scene_lib.HEADING_FORWARD), [0, 0, 1], atol=1e-12)


def test_corners_of_a_known_box():
    boxes = scene_lib.Boxes(
        center=np.array([[1.0, 2.0, 3.0]]), size=np.array([[4.0, 2.0, 1.0]]), yaw=np.array([-np.pi / 2]),
        velocity=np.zeros((1, 3)), class_id=np.array([6]), material=np.array([scene_lib.CAR_BODY]),
        instance_id=np.array([1]), tint=np.zeros((1, 3)),
    )
    corners = boxes.corners()[0]
    # Length 4 along +z (yaw -pi/2), width 2 along x, height 1 along y.
    np.testing.assert_allclose(corners.min(axis=0), [0.0, 1.5, 1.0], atol=1e-12)
    np.testing.assert_allclose(corners.max(axis=0), [2.0, 2.5, 5.0], atol=1e-12)
    np.testing.assert_allclose(boxes.half_extents()[0], [2.0, 0.5, 1.0])


def test_steering_camera_follows_an_arc_at_constant_speed():
    cam = scene_lib.Camera(height=1.5, x0=1.0, yaw=0.1, speed=10.0, yaw_rate=0.2)
    times = np.linspace(0.0, 2.0, 2001)
    positions = np.stack([cam.pose_at(t)[:3, 3] for t in times])
    steps = np.diff(positions, axis=0)
    np.testing.assert_allclose(np.linalg.norm(steps, axis=1), 10.0 * 1e-3, rtol=1e-5)
    for t, step in zip(times[:-1:200], steps[::200]):  # moving along the optical axis
        np.testing.assert_allclose(step / np.linalg.norm(step), cam.pose_at(t + 5e-4)[:3, 2], atol=1e-6)
    rel = np.linalg.inv(cam.pose_at(0.1)) @ cam.pose_at(0.0)
    np.testing.assert_allclose(np.arctan2(rel[0, 2], rel[0, 0]), -0.02, atol=1e-12)  # turned by yaw_rate * dt
    assert np.all(positions[:, 1] == 0.0)


def test_camera_pose_moves_forward_along_its_heading():
    cam = scene_lib.Camera(height=1.5, x0=1.0, yaw=0.1, speed=10.0)
    p0, p1 = cam.pose_at(0.0), cam.pose_at(0.1)
    np.testing.assert_allclose(p0[:3, :3] @ p0[:3, :3].T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(p0[:3, 3], [1.0, 0.0, 0.0])
    step = p1[:3, 3] - p0[:3, 3]
    np.testing.assert_allclose(np.linalg.norm(step), 1.0)
    np.testing.assert_allclose(step / np.linalg.norm(step), p0[:3, 2])  # along the optical axis
    assert step[1] == 0.0  # the camera keeps its height


@pytest.mark.parametrize("traffic", scene_lib.TRAFFIC)
@pytest.mark.parametrize("seed", range(8))
def test_scene_is_physically_plausible(seed, traffic):
    scene = _scene(seed, traffic)
    boxes, road, cam = scene.boxes, scene.road, scene.camera
    assert 1.4 <= cam.height <= 1.65 and 5.0 <= cam.speed <= 15.0
    assert 0 < cam.x0 < road.half_width and abs(cam.yaw) <= np.deg2rad(4.0)
    assert abs(cam.yaw_rate) <= np.deg2rad(3.0)
    assert np.all(boxes.size > 0)
    # Nothing below the ground; the camera is never inside a box at frames 0 and 1.
    corners = boxes.corners()
    assert np.all(corners[..., 1] <= scene.ground_y + 1e-9)
    for t in (0.0, scene_lib.TIME_STEP):
        local = _to_local(scene.objects_at(t), cam.pose_at(t)[None, :3, 3])[:, 0]
        inside = np.all(np.abs(local) < boxes.half_extents(), axis=1)
        assert not inside.any()
    # Buildings stay behind the sidewalk.
    building = boxes.class_id == CLASS_NAMES.index("building")
    assert np.all(np.abs(corners[building][..., 0]) >= road.half_width + road.sidewalk_width - 1e-9)
    # Class ids are valid; only movable classes carry instance ids, and only they move.
    assert set(np.unique(boxes.class_id)) <= set(range(len(CLASS_NAMES)))
    movable = np.isin(boxes.class_id, [CLASS_NAMES.index(c) for c in MOVABLE_CLASSES])
    np.testing.assert_array_equal(boxes.instance_id > 0, movable)
    assert np.all(boxes.velocity[~movable] == 0)
    assert np.all(boxes.velocity[:, 1] == 0)


def test_scenes_have_moving_cars_and_pedestrians():
    moving_classes = set()
    for seed in range(10):
        boxes = _scene(seed).boxes
        speed = np.linalg.norm(boxes.velocity, axis=1)
        moving_classes |= {CLASS_NAMES[c] for c in boxes.class_id[speed > 0]}
        # Parts of one instance (a car's body and cabin) move together.
        for inst in np.unique(boxes.instance_id[boxes.instance_id > 0]):
            parts = boxes.instance_id == inst
            assert np.ptp(boxes.velocity[parts], axis=0).max() == 0
            assert np.ptp(boxes.yaw[parts]) == 0
    assert moving_classes == {"car", "pedestrian"}


def test_objects_at_moves_only_moving_boxes():
    scene = _scene(1)
    later = scene.objects_at(2.0)
    np.testing.assert_allclose(later.center, scene.boxes.center + 2.0 * scene.boxes.velocity)
    static = np.all(scene.boxes.velocity == 0, axis=1)
    np.testing.assert_array_equal(later.center[static], scene.boxes.center[static])
    np.testing.assert_array_equal(later.yaw, scene.boxes.yaw)


def test_dense_traffic_adds_moving_cars_to_the_same_scene():
    leads = 0
    for seed in range(10):
        normal, dense = _scene(seed), _scene(seed, "dense")
        assert normal.camera == dense.camera and normal.road == dense.road and normal.seed == dense.seed
        n = len(normal.boxes)
        assert len(dense.boxes) > n
        for field in dataclasses.fields(scene_lib.Boxes):  # the normal scene's boxes come first, unchanged
            np.testing.assert_array_equal(getattr(dense.boxes, field.name)[:n], getattr(normal.boxes, field.name))
        added = slice(n, None)
        assert np.all(dense.boxes.class_id[added] == CLASS_NAMES.index("car"))
        assert np.all(np.linalg.norm(dense.boxes.velocity[added], axis=1) > 0)
        # A lead car: in the camera's lane, 6-15 m ahead, at the camera's speed +- 1.5 m/s.
        cam, lane = dense.camera, dense.road.lane_width
        centre = (min(int(cam.x0 // lane), dense.road.lanes_per_direction - 1) + 0.5) * lane
        x, z = dense.boxes.center[added, 0], dense.boxes.center[added, 2]
        speed = np.linalg.norm(dense.boxes.velocity[added], axis=1)
        leads += np.any((np.abs(x - centre) < 0.5) & (z > 5.0) & (z < 16.0) & (np.abs(speed - cam.speed) <= 1.5))
    assert leads >= 8


def test_unknown_traffic_is_rejected():
    with pytest.raises(ValueError, match="traffic"):
        _scene(0, "rush_hour")
