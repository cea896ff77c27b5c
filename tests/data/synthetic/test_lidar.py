"""Tests of the synthetic LiDAR world: ray casting, motion, sweeps, sequences and the tf.data source."""

import time

import gin
import numpy as np
import pytest

from taskology_tf.data import lidar_sequence as ls
from taskology_tf.data.synthetic import lidar

TINY = lidar.TINY


def test_cast_rays_analytic_box_and_ground():
    # Rays along +x (level) and 30 degrees down; a box ahead, the ground 2 m below.
    el = np.array([0.0, -np.pi / 6])
    dirs = np.stack([np.cos(el), np.zeros(2), np.sin(el)], -1)[:, None, :]  # [2 beams, 1 column, 3]
    box = np.array([[10.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    rng_, hit, cos_inc = lidar.cast_rays(dirs, box, ground_z=-2.0)
    np.testing.assert_allclose(rng_[:, 0], [9.0, 4.0], atol=1e-9)  # front face at x = 9; ground at 2 / sin(30)
    assert hit[:, 0].tolist() == [0, -1]
    np.testing.assert_allclose(cos_inc[:, 0], [1.0, 0.5], atol=1e-9)
    # Rotated by 45 degrees the box shows a vertical edge to the level ray: x = 10 - sqrt(2).
    box45 = box.copy()
    box45[0, 6] = np.pi / 4
    rng45, hit45, _ = lidar.cast_rays(dirs[:1], box45, ground_z=None)
    np.testing.assert_allclose(rng45[0, 0], 10 - np.sqrt(2), atol=1e-9)
    # Nothing to hit: range inf, hit -2.
    miss, hit_miss, _ = lidar.cast_rays(-dirs[:1], box, ground_z=None)
    assert np.isinf(miss[0, 0]) and hit_miss[0, 0] == -2
    # The nearer of two boxes wins.
    two = np.concatenate([box, [[5.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]]])
    rng2, hit2, _ = lidar.cast_rays(dirs[:1], two, ground_z=-2.0)
    assert hit2[0, 0] == 1 and rng2[0, 0] == pytest.approx(4.5)


def test_integrate_motion_straight_and_circle():
    xy, h = lidar.integrate_motion([[0.0, 0.0]], [np.pi / 2], [2.0], [0.0], 3.0)
    np.testing.assert_allclose(xy, [[0.0, 6.0]], atol=1e-12)
    period = 8.0
    xy, h = lidar.integrate_motion([[1.0, 2.0]], [0.3], [5.0], [2 * np.pi / period], period)
    np.testing.assert_allclose(xy, [[1.0, 2.0]], atol=1e-9)
    np.testing.assert_allclose(h, [0.3], atol=1e-9)
    # A quarter turn at radius v / w ends v / w ahead and v / w to the left.
    xy, h = lidar.integrate_motion([[0.0, 0.0]], [0.0], [4.0], [0.5], np.pi)
    np.testing.assert_allclose(xy, [[8.0, 8.0]], atol=1e-9)


def _hand_scene(ego_speed=10.0, ego_yaw_rate=0.1):
    """A wall, a parked car and a car driving at 8 m/s beside the ego vehicle."""
    return lidar.LidarScene(
        ego=(0.0, 0.0, 0.0, ego_speed, ego_yaw_rate),
        static_boxes=np.array([[20.0, 12.0, 2.0, 40.0, 0.5, 4.0, 0.0]]),
        static_reflectivity=np.array([0.4]),
        vehicles=np.array([[15.0, -4.0, 0.8, 4.5, 1.9, 1.6, 0.0], [5.0, 4.0, 0.8, 4.4, 1.8, 1.6, 0.05]]),
        vehicle_speed=np.array([0.0, 8.0]),
        vehicle_yaw_rate=np.array([0.0, 0.0]),
        vehicle_reflectivity=np.array([0.5, 0.8]),
        track_ids=np.array([11, 12], np.int64),
        road=(5.0, 3.5, 1, 0.0),
    )


def test_render_sweep_points_lie_on_surfaces():
    scene = _hand_scene()
    config = lidar.LidarConfig(beams=16, azimuths=256, max_range=40.0)
    frame = lidar.render_sweep(scene, 0.5, config, rng=None, min_points=3)
    points = frame["points"]
    assert points.dtype == np.float32 and points.shape[1] == 4
    assert (points[:, 3] >= 0).all() and (points[:, 3] <= 1).all()
    r = np.linalg.norm(points[:, :3], axis=1)
    assert (r >= config.min_range - 1e-4).all() and (r <= config.max_range + 1e-4).all()
    world = ls.transform_points(points[:, :3].astype(np.float64), frame["pose"])
    statics = scene.static_boxes
    vehicles = scene.vehicles_at(0.5)
    inside = ls.points_in_boxes(world, np.concatenate([statics, vehicles]), margin=1e-4).any(axis=1)
    on_ground = np.abs(world[:, 2]) < 1e-4
    assert (inside | on_ground).all()  # no noise: every point is on the ground or on a box
    assert on_ground.sum() > 0.3 * len(points) and inside.sum() > 50
    # Both vehicles are labelled, in the sensor frame, with their hit counts.
    assert sorted(frame["track_ids"].tolist()) == [11, 12]
    want = ls.transform_boxes(vehicles, ls.invert_transform(frame["pose"]))
    order = np.argsort(frame["track_ids"])
    np.testing.assert_allclose(frame["boxes"][order], want, atol=1e-4)
    counted = ls.count_points_in_boxes(points, frame["boxes"], margin=1e-3)
    np.testing.assert_array_equal(counted, frame["num_points_in_box"])
    # Intensity falls with grazing incidence: asphalt far away is darker than asphalt near by.
    lane = (world[:, 1] > 0.5) & (world[:, 1] < 3.0)  # between the painted lines
    ground = points[on_ground & lane]
    near = ground[np.linalg.norm(ground[:, :2], axis=1) < 8]
    far = ground[np.linalg.norm(ground[:, :2], axis=1) > 20]
    assert np.median(near[:, 3]) > np.median(far[:, 3])


def test_sequence_boxes_follow_the_motion():
    scene = _hand_scene()
    frames = [lidar.render_sweep(scene, 0.5 * k, TINY, rng=None) for k in range(3)]
    out = ls.stack_sequence(frames, 3, max_points=TINY.beams * TINY.azimuths, max_boxes=8)
    by_frame = [{int(t): out["boxes"][k, i] for i, t in enumerate(out["track_ids"][k]) if t >= 0} for k in range(3)]
    # The parked car stays put in the latest frame's coordinates; the moving one advances 8 m/s * 0.5 s per frame.
    for k in range(2):
        np.testing.assert_allclose(by_frame[k][11], by_frame[2][11], atol=1e-4)
        step = by_frame[k + 1][12][:2] - by_frame[k][12][:2]
        assert np.linalg.norm(step) == pytest.approx(4.0, abs=1e-4)
    # Points on the wall (static) from every frame line up in the latest frame.
    wall = ls.transform_boxes(scene.static_boxes, ls.invert_transform(frames[-1]["pose"]))
    for k in range(3):
        pts = out["points"][k][out["points_mask"][k] > 0]
        above_ground = pts[:, 2] > -TINY.height + 0.1
        on_wall = ls.points_in_boxes(pts, wall, margin=1e-3)[:, 0] & above_ground
        assert on_wall.sum() > 20
        grown = wall.copy()
        grown[:, 3:5] += 0.6  # 0.3 m around the wall
        near_wall = ls.points_in_boxes(pts, grown)[:, 0] & above_ground
        assert on_wall.sum() == near_wall.sum()


def test_render_lidar_sequence_is_deterministic_and_varied():
    a = lidar.render_lidar_sequence(3, seed=1, n_f=2, config=TINY)
    b = lidar.render_lidar_sequence(3, seed=1, n_f=2, config=TINY)
    c = lidar.render_lidar_sequence(4, seed=1, n_f=2, config=TINY)
    for fa, fb in zip(a, b):
        for key in fa:
            np.testing.assert_array_equal(fa[key], fb[key])
    assert a[0]["points"].shape != c[0]["points"].shape or not np.array_equal(a[0]["points"], c[0]["points"])
    assert a[1]["timestamp"] - a[0]["timestamp"] == pytest.approx(0.5)
    assert a[0]["id"] != a[1]["id"]
    # Noise: ground points spread around z = -height by about range_noise.
    z = np.concatenate([f["points"][:, 2] for f in a])
    assert z.min() > -TINY.height - 0.2


def test_tiny_config_renders_in_milliseconds():
    scene = lidar.sample_lidar_scene(np.random.default_rng(0))
    lidar.render_sweep(scene, 0.0, TINY)
    start = time.perf_counter()
    for k in range(5):
        lidar.render_sweep(scene, 0.1 * k, TINY, rng=np.random.default_rng(k))
    per_frame = (time.perf_counter() - start) / 5
    assert per_frame < 0.25, f"tiny sweep took {per_frame * 1e3:.0f} ms"  # ~10 ms on an idle core


def test_sampled_scenes_have_plausible_vehicles():
    rng = np.random.default_rng(5)
    counts = []
    for _ in range(20):
        scene = lidar.sample_lidar_scene(rng, duration=1.0)
        v = scene.vehicles
        assert ((v[:, 3] > 3.5) & (v[:, 3] < 8) & (v[:, 4] > 1.5) & (v[:, 4] < 2.5)).all()
        np.testing.assert_allclose(v[:, 2], 0.5 * v[:, 5])  # standing on the ground
        assert len(np.unique(scene.track_ids)) == len(v)
        # No two vehicles overlap during the sequence (centres further apart than their half lengths).
        for t in (0.0, 1.0):
            at = scene.vehicles_at(t)
            d = np.hypot(*(at[:, None, :2] - at[None, :, :2]).transpose(2, 0, 1))
            np.fill_diagonal(d, np.inf)
            limit = 0.5 * (at[:, None, 3] + at[None, :, 3]) * 0.9
            same_lane = np.abs(at[:, None, 1] - at[None, :, 1]) < 1.5
            assert not (same_lane & (d < limit)).any()
        counts.append(len(v))
    assert np.mean(counts) > 5


def test_label_fraction_masks_frames():
    kwargs = dict(seed=0, n_f=3, config=TINY, max_boxes=16)
    full = lidar.lidar_example(0, **kwargs)
    none = lidar.lidar_example(0, label_fraction=0.0, **kwargs)
    assert full["labelled"].tolist() == [1.0, 1.0, 1.0] and full["box_mask"].sum() > 0
    assert none["labelled"].sum() == 0 and none["box_mask"].sum() == 0 and (none["track_ids"] == -1).all()
    np.testing.assert_array_equal(none["points"], full["points"])
    picks = np.concatenate([lidar.render_lidar_sequence(i, config=lidar.LidarConfig(beams=2, azimuths=16),
                                                        n_f=3, label_fraction=0.3)
                            for i in range(40)])
    fraction = np.mean([f["labelled"] for f in picks])
    assert 0.15 < fraction < 0.45


def test_synthetic_lidar_dataset_spec_and_gin():
    ds = lidar.synthetic_lidar_dataset(2, n_f=2, beams=8, azimuths=64, max_range=30.0, max_points=300, max_boxes=8)
    spec = ds.element_spec
    sizes = {"n_f": 2, "max_points": 300, "max_boxes": 8}
    assert set(spec) == set(ls.SEQUENCE_KEYS)
    for key, (shape, dtype, _) in ls.SEQUENCE_KEYS.items():
        assert tuple(spec[key].shape) == tuple(sizes.get(d, d) for d in shape), key
        assert spec[key].dtype.name == dtype, key
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 2 and examples[0]["id"] != examples[1]["id"]
    assert examples[0]["points_mask"].sum() > 100
    with gin.unlock_config():
        gin.parse_config("synthetic_lidar.num_examples = 1\nsynthetic_lidar.beams = 4\nsynthetic_lidar.azimuths = 32")
    try:
        fn = gin.get_configurable("synthetic_lidar")
        ds = fn(max_boxes=4)
        assert ds.element_spec["points"].shape == (3, 128, 4)
    finally:
        gin.clear_config()


def test_config_errors():
    with pytest.raises(ValueError, match="beams must be a positive integer"):
        lidar.LidarConfig(beams=0)
    with pytest.raises(ValueError, match="elevation_min < elevation_max"):
        lidar.LidarConfig(elevation_min=0.1, elevation_max=-0.1)
    with pytest.raises(ValueError, match="index must be a non-negative integer"):
        lidar.render_lidar_sequence(-1)
