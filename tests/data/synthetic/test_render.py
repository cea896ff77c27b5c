"""Tests of the synthetic renderer: analytic cases and consistency of the world (NumPy only)."""

import numpy as np
import pytest

from taskology_tf.data.example import CLASS_NAMES, KEYS
from taskology_tf.data.synthetic import render as render_lib
from taskology_tf.data.synthetic import scene as scene_lib
from taskology_tf.data.synthetic import style as style_lib

ROAD, SIDEWALK, SKY = (CLASS_NAMES.index(c) for c in ("road", "sidewalk", "sky"))


def _boxes(rows):
    """Boxes from (center, size, yaw, velocity, class name, instance) rows."""
    n = len(rows)
    return scene_lib.Boxes(
        center=np.array([r[0] for r in rows], np.float64).reshape(n, 3),
        size=np.array([r[1] for r in rows], np.float64).reshape(n, 3),
        yaw=np.array([r[2] for r in rows], np.float64).reshape(n),
        velocity=np.array([r[3] for r in rows], np.float64).reshape(n, 3),
        class_id=np.array([CLASS_NAMES.index(r[4]) for r in rows], np.int32).reshape(n),
        material=np.full(n, scene_lib.CAR_BODY, np.int32),
        instance_id=np.array([r[5] for r in rows], np.int32).reshape(n),
        tint=np.full((n, 3), 0.3),
    )


def _simple_scene(rows=(), yaw=0.0, x0=0.0, height=1.5):
    road = scene_lib.Road(half_width=100.0, lane_width=3.5, lanes_per_direction=1, parking_width=0.0,
                          sidewalk_width=2.0)
    return scene_lib.Scene(camera=scene_lib.Camera(height=height, x0=x0, yaw=yaw, speed=10.0), road=road,
                           boxes=_boxes(list(rows)))


def _backproject(depth, k):
    h, w = depth.shape[:2]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    z = depth[..., 0].astype(np.float64)
    return np.stack([(u - k[0, 2]) / k[0, 0] * z, (v - k[1, 2]) / k[1, 1] * z, z], axis=-1)


@pytest.fixture(scope="module")
def frames():
    """Three random scenes rendered at frames 0 and 1 (sim, noise-free), with their scenes."""
    out = []
    for seed in (11, 12, 13):
        scene = scene_lib.sample_scene(np.random.default_rng(seed))
        out.append((scene, render_lib.render(scene, 0.0, 64, 128, "sim"),
                    render_lib.render(scene, scene_lib.TIME_STEP, 64, 128, "sim")))
    return out


def test_intrinsics_are_kitti_like_with_centred_principal_point():
    k = render_lib.intrinsics(64, 128)
    np.testing.assert_allclose(k, [[0.58 * 128, 0, 63.5], [0, 0.58 * 128, 31.5], [0, 0, 1]])


@pytest.mark.parametrize("size", [(64, 128), (13, 17), (40, 72)])
def test_shapes_and_dtypes_follow_the_contract(size):
    h, w = size
    out = render_lib.render(scene_lib.sample_scene(np.random.default_rng(0)), 0.0, h, w, "real",
                            rng=np.random.default_rng(1))
    for key in ("image", "depth", "normals", "segmentation", "instance_ids", "intrinsics", "pose"):
        spec = KEYS[key]
        assert out[key].dtype == np.dtype(spec.dtype), key
        want = tuple(h if i == 0 and d is None else w if i == 1 and d is None else d for i, d in enumerate(spec.shape))
        assert out[key].shape == want, key
    objects = out["objects"]
    n = len(objects["track_ids"])
    assert objects["boxes"].shape == (n, 7) and objects["boxes"].dtype == np.float32
    assert objects["velocities"].shape == (n, 3) and objects["track_ids"].dtype == np.int64


def test_render_rejects_bad_sizes_and_styles():
    scene = _simple_scene()
    with pytest.raises(ValueError, match="positive"):
        render_lib.render(scene, 0.0, 0, 16, "sim")
    with pytest.raises(ValueError, match="unknown style"):
        render_lib.render(scene, 0.0, 16, 16, "cartoon")


def test_empty_world_is_ground_below_the_horizon_and_sky_above():
    h, w, cam_h = 33, 65, 1.5
    out = render_lib.render(_simple_scene(height=cam_h), 0.0, h, w, "sim", max_depth=60.0)
    k = render_lib.intrinsics(h, w)
    v = np.arange(h, dtype=np.float64)[:, None].repeat(w, axis=1)
    below = v > k[1, 2]
    expected = np.where(below, cam_h * k[1, 1] / np.maximum(v - k[1, 2], 1e-9), 0.0)
    expected[expected > 60.0] = 0.0
    np.testing.assert_allclose(out["depth"][..., 0], expected, rtol=1e-6)
    seg = out["segmentation"][..., 0]
    assert np.all(seg[~below] == SKY) and np.all(seg[below] == ROAD)
    valid = out["depth"][..., 0] > 0
    np.testing.assert_allclose(out["normals"][valid], np.tile([0.0, -1.0, 0.0], (valid.sum(), 1)), atol=1e-6)
    assert np.all(out["normals"][~valid] == 0)
    assert np.all(out["instance_ids"] == 0) and len(out["objects"]["track_ids"]) == 0


@pytest.mark.parametrize("yaw", [0.0, 0.08])
def test_single_box_depth_normal_ids_and_camera_frame_box(yaw):
    h, w = 33, 65
    # A car-class box 10 m ahead on the optical axis, 3 m tall, its near face 1.5 m in front of its centre.
    center = np.array([10.0 * np.sin(yaw), 0.0, 10.0 * np.cos(yaw)])
    scene = _simple_scene([(center, (2.0, 3.0, 3.0), yaw, (0.0, 0.0, 4.0), "car", 7)], yaw=yaw)
    out = render_lib.render(scene, 0.0, h, w, "sim")
    cy, cx = (h - 1) // 2, (w - 1) // 2
    assert out["depth"][cy, cx, 0] == pytest.approx(8.5, rel=1e-6)  # box aligned with the camera
    np.testing.assert_allclose(out["normals"][cy, cx], [0.0, 0.0, -1.0], atol=1e-6)
    assert out["segmentation"][cy, cx, 0] == CLASS_NAMES.index("car")
    assert out["instance_ids"][cy, cx, 0] == 7
    objects = out["objects"]
    np.testing.assert_array_equal(objects["track_ids"], [7])
    np.testing.assert_allclose(objects["boxes"][0], [0.0, 0.0, 10.0, 2.0, 3.0, 3.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(objects["velocities"][0]), 4.0, rtol=1e-6)
    assert objects["num_pixels"][0] == np.sum(out["instance_ids"] == 7)


def test_instance_box_is_the_union_of_its_parts():
    body = ((0.0, 1.0, 10.0), (4.0, 2.0, 1.0), 0.3, (0, 0, 0), "car", 1)
    cabin_center = (0.0, 0.2, 10.0)  # on top of the body: body spans y in [0.5, 1.5], cabin [-0.1, 0.5]
    cabin = (cabin_center, (2.0, 1.8, 0.6), 0.3, (0, 0, 0), "car", 1)
    ped = ((3.0, 0.7, 12.0), (0.4, 0.5, 1.6), 1.0, (1, 0, 0), "pedestrian", 2)
    inst = render_lib.instance_boxes(_boxes([body, cabin, ped]))
    np.testing.assert_array_equal(inst["instance_id"], [1, 2])
    np.testing.assert_allclose(inst["size"][0], [4.0, 2.0, 1.6], atol=1e-9)
    np.testing.assert_allclose(inst["center"][0], [0.0, 0.7, 10.0], atol=1e-9)
    np.testing.assert_allclose(inst["size"][1], [0.4, 0.5, 1.6], atol=1e-9)
    np.testing.assert_allclose(inst["yaw"], [0.3, 1.0])


def test_ground_points_lie_on_the_ground_plane_and_have_upward_normals(frames):
    for scene, out, _ in frames:
        pose = out["pose"].astype(np.float64)
        points = _backproject(out["depth"], out["intrinsics"].astype(np.float64))
        world = points @ pose[:3, :3].T + pose[:3, 3]
        seg = out["segmentation"][..., 0]
        ground = np.isin(seg, [ROAD, SIDEWALK]) & (out["depth"][..., 0] > 0)
        assert ground.sum() > 500
        np.testing.assert_allclose(world[ground][:, 1], scene.camera.height, atol=1e-3)
        up_in_camera = pose[:3, :3].T @ np.array([0.0, -1.0, 0.0])
        np.testing.assert_allclose(out["normals"][ground], np.tile(up_in_camera, (ground.sum(), 1)), atol=1e-6)


def test_depth_normals_and_sky_are_consistent(frames):
    for _, out, _ in frames:
        depth, normals, seg = out["depth"][..., 0], out["normals"], out["segmentation"][..., 0]
        valid = depth > 0
        assert np.all(depth <= 60.0)
        np.testing.assert_allclose(np.linalg.norm(normals[valid], axis=-1), 1.0, atol=1e-5)
        assert np.all(normals[~valid] == 0)
        assert np.all(depth[seg == SKY] == 0)
        # Visible surfaces face the camera.
        points = _backproject(out["depth"], out["intrinsics"].astype(np.float64))
        assert np.all(np.sum(points[valid] * normals[valid], axis=-1) < 0)


def test_normals_from_depth_agree_on_planar_interior_pixels(frames):
    for _, out, _ in frames:
        depth = out["depth"][..., 0].astype(np.float64)
        points = _backproject(out["depth"], out["intrinsics"].astype(np.float64))
        du = points[1:-1, 2:] - points[1:-1, :-2]
        dv = points[2:, 1:-1] - points[:-2, 1:-1]
        fd = np.cross(dv, du)  # faces the camera (x right, y down, z forward)
        fd /= np.maximum(np.linalg.norm(fd, axis=-1, keepdims=True), 1e-12)
        center = out["normals"][1:-1, 1:-1].astype(np.float64)
        # Planar interior: all 3x3 neighbours valid with the same normal, and inverse depth affine in
        # the pixel coordinates (true on one plane), i.e. zero second differences.
        valid = depth > 0
        inv = np.where(valid, 1.0 / np.maximum(depth, 1e-9), 0.0)
        interior = valid[1:-1, 1:-1].copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                nb = (slice(1 + dy, depth.shape[0] - 1 + dy), slice(1 + dx, depth.shape[1] - 1 + dx))
                interior &= valid[nb] & np.all(np.abs(out["normals"][nb] - out["normals"][1:-1, 1:-1]) < 1e-6, -1)
        mid = inv[1:-1, 1:-1]
        flat_u = np.abs(inv[1:-1, 2:] + inv[1:-1, :-2] - 2 * mid) < 1e-4 * mid
        flat_v = np.abs(inv[2:, 1:-1] + inv[:-2, 1:-1] - 2 * mid) < 1e-4 * mid
        interior &= flat_u & flat_v
        assert interior.sum() > 1000
        cos = np.sum(fd[interior] * center[interior], axis=-1)
        assert np.mean(cos > 0.999) > 0.99, np.mean(cos > 0.999)


def _bilinear(image, u, v):
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    a, b = (u - u0)[:, None], (v - v0)[:, None]
    img = image.astype(np.float64)
    return ((1 - a) * (1 - b) * img[v0, u0] + a * (1 - b) * img[v0, u0 + 1]
            + (1 - a) * b * img[v0 + 1, u0] + a * b * img[v0 + 1, u0 + 1])


def test_warping_static_surfaces_by_depth_and_ego_motion_reproduces_the_next_frame(frames):
    for _, out, nxt in frames:
        h, w = out["depth"].shape[:2]
        k = out["intrinsics"].astype(np.float64)
        objects = out["objects"]
        moving = objects["track_ids"][np.linalg.norm(objects["velocities"], axis=1) > 0]
        static = (out["depth"][..., 0] > 0) & ~np.isin(out["instance_ids"][..., 0], moving)
        ego = np.linalg.inv(nxt["pose"].astype(np.float64)) @ out["pose"].astype(np.float64)
        points = _backproject(out["depth"], k)[static] @ ego[:3, :3].T + ego[:3, 3]
        u = k[0, 0] * points[:, 0] / points[:, 2] + k[0, 2]
        v = k[1, 1] * points[:, 1] / points[:, 2] + k[1, 2]
        inside = (u >= 0) & (u < w - 1) & (v >= 0) & (v < h - 1)
        u, v, z = u[inside], v[inside], points[inside, 2]
        # Not occluded: the next frame's inverse depth, interpolated, matches the warped point.
        inv_next = np.where(nxt["depth"] > 0, 1.0 / np.maximum(nxt["depth"], 1e-9), 0.0)
        visible = np.abs(_bilinear(inv_next, u, v)[:, 0] * z - 1.0) < 0.01
        assert visible.sum() > 1500
        warped = _bilinear(nxt["image"], u[visible], v[visible])
        diff = np.abs(out["image"][static][inside][visible] - warped).max(axis=-1)
        assert np.mean(diff <= 12) > 0.9, np.mean(diff <= 12)
        assert np.median(diff) <= 2


def test_moving_objects_appear_and_move_with_their_velocity(frames):
    found = 0
    for _, out, nxt in frames:
        objects, later = out["objects"], nxt["objects"]
        speed = np.linalg.norm(objects["velocities"], axis=1)
        for tid in objects["track_ids"][speed > 0]:
            assert np.any(out["instance_ids"] == tid)
        ego = np.linalg.inv(nxt["pose"].astype(np.float64)) @ out["pose"].astype(np.float64)
        for i, tid in enumerate(objects["track_ids"]):
            j = np.nonzero(later["track_ids"] == tid)[0]
            if not j.size or speed[i] == 0:
                continue
            found += 1
            # Frame t+1 centre: ego-motion of the displaced centre (velocities are in frame-t camera axes).
            displaced = objects["boxes"][i, :3] + scene_lib.TIME_STEP * objects["velocities"][i]
            np.testing.assert_allclose(later["boxes"][j[0], :3], ego[:3, :3] @ displaced + ego[:3, 3], atol=1e-4)
            np.testing.assert_allclose(later["boxes"][j[0], 3:6], objects["boxes"][i, 3:6], atol=1e-5)
            turn = np.arctan2(ego[0, 2], ego[0, 0])  # ego rotation about y
            np.testing.assert_allclose(np.sin(later["boxes"][j[0], 6] - objects["boxes"][i, 6] - turn), 0, atol=1e-5)
    assert found >= 2


def test_styles_differ_in_colour_for_the_same_geometry(frames):
    scene, sim, _ = frames[0]
    real = render_lib.render(scene, 0.0, 64, 128, "real", rng=np.random.default_rng(0))
    np.testing.assert_array_equal(real["depth"], sim["depth"])
    np.testing.assert_array_equal(real["segmentation"], sim["segmentation"])
    a, b = sim["image"].reshape(-1, 3).astype(np.float64), real["image"].reshape(-1, 3).astype(np.float64)
    assert np.abs(a.mean(0) - b.mean(0)).max() > 5  # colour cast / palette
    saturation = lambda x: np.mean(x.max(1) - x.min(1))  # noqa: E731
    assert saturation(a) > saturation(b) + 5  # sim is more saturated
    # Per-class mean colours differ too (not just a global shift).
    seg = sim["segmentation"].reshape(-1)
    road = seg == ROAD
    assert np.abs(a[road].mean(0) - b[road].mean(0)).max() > 5


def test_sensor_noise_is_seeded_and_only_added_with_an_rng():
    scene = scene_lib.sample_scene(np.random.default_rng(5))
    clean = [render_lib.render(scene, 0.0, 32, 64, "real")["image"] for _ in range(2)]
    np.testing.assert_array_equal(clean[0], clean[1])
    noisy = [render_lib.render(scene, 0.0, 32, 64, "real", rng=np.random.default_rng(s))["image"] for s in (1, 1, 2)]
    np.testing.assert_array_equal(noisy[0], noisy[1])
    assert not np.array_equal(noisy[0], noisy[2]) and not np.array_equal(noisy[0], clean[0])
    sim = [render_lib.render(scene, 0.0, 32, 64, "sim", rng=np.random.default_rng(s))["image"] for s in (1, 2)]
    np.testing.assert_array_equal(sim[0], sim[1])  # sim has no sensor noise


def test_textures_carry_high_frequency_content(frames):
    for _, out, _ in frames:
        gray = out["image"].astype(np.float64).mean(-1)
        surface = out["depth"][..., 0] > 0
        grad = np.abs(np.diff(gray, axis=1))[surface[:, 1:] & surface[:, :-1]]
        assert np.mean(grad > 2) > 0.2  # most surfaces are not flat colour


def test_prefiltered_patterns_fade_to_their_mean():
    x = np.linspace(0, 10, 1001)
    sharp = style_lib.filtered_pulse(x, 1.0, 0.3, np.full_like(x, 1e-3))
    frac = x % 1.0
    away = np.minimum(np.minimum(frac, 1.0 - frac), np.abs(frac - 0.3)) > 0.01  # from the pulse edges
    np.testing.assert_allclose(sharp[away], (frac[away] < 0.3).astype(float), atol=1e-6)
    wide = style_lib.filtered_pulse(x, 1.0, 0.3, np.full_like(x, 10.0))
    np.testing.assert_allclose(wide, 0.3, atol=1e-9)
    checker = style_lib.filtered_checker(x, x, 0.5, np.full_like(x, 20.0), np.full_like(x, 20.0))
    np.testing.assert_allclose(checker, 0.5, atol=1e-9)
    noise = style_lib.fbm(x, x, np.full_like(x, 100.0), np.zeros(x.size, np.uint32), 2.0, 4)
    np.testing.assert_allclose(noise, 0.0)
