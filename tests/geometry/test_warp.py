"""Tests for taskology_tf.geometry.warp: reprojection and inverse warping against analytic motions."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from taskology_tf.geometry import compose, inverse_warp, reproject, rotation_matrix


def _intrinsics(batch, height, width, f=20.0):
    k = np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]], np.float32)
    return np.broadcast_to(k, (batch, 3, 3)).copy()


def _translation(batch, t):
    return ops.convert_to_numpy(compose(np.broadcast_to(np.eye(3, dtype=np.float32), (batch, 3, 3)),
                                        np.broadcast_to(np.asarray(t, np.float32), (batch, 3))))


@pytest.mark.parametrize("batch,height,width,channels", [(1, 6, 8, 3), (2, 9, 7, 1)])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_identity_transform_returns_the_image(batch, height, width, channels, padding):
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(batch, height, width, channels)).astype(np.float32)
    depth = rng.uniform(1.0, 20.0, (batch, height, width, 1)).astype(np.float32)
    eye = np.broadcast_to(np.eye(4, dtype=np.float32), (batch, 4, 4))
    warped, valid = inverse_warp(image, depth, _intrinsics(batch, height, width), eye, padding=padding)
    warped, valid = ops.convert_to_numpy(warped), ops.convert_to_numpy(valid)
    assert warped.shape == image.shape and valid.shape == (batch, height, width, 1)
    np.testing.assert_allclose(warped, image, atol=1e-4)
    # Border pixels sit exactly on the image edge, where rounding may push them out by ~1e-6.
    np.testing.assert_array_equal(valid[:, 1:-1, 1:-1], 1.0)


@pytest.mark.parametrize("batch,height,width", [(1, 4, 5), (3, 6, 7)])
def test_reproject_matches_closed_form(batch, height, width):
    rng = np.random.default_rng(height)
    k = _intrinsics(batch, height, width)
    depth = rng.uniform(2.0, 30.0, (batch, height, width, 1)).astype(np.float32)
    rot = ops.convert_to_numpy(rotation_matrix(rng.uniform(-0.2, 0.2, (batch, 3)).astype(np.float32)))
    t = rng.uniform(-1.0, 1.0, (batch, 3)).astype(np.float32)
    uv, z = reproject(depth, k, compose(rot, t))
    # z' p' = K R K^-1 z p + K t
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    p = np.stack([u, v, np.ones_like(u)], axis=-1)
    m = np.einsum("bij,bjk,bkl->bil", k, rot, np.linalg.inv(k))
    zp = np.einsum("bij,hwj->bhwi", m, p) * depth + np.einsum("bij,bj->bi", k, t)[:, None, None, :]
    np.testing.assert_allclose(ops.convert_to_numpy(z), zp[..., 2:], rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(uv), zp[..., :2] / zp[..., 2:], atol=1e-3)


def test_lateral_translation_of_fronto_parallel_plane_shifts_the_image():
    # Plane at z = 4 m, camera moves so that points shift by t = (0.4, -0.2, 0) m:
    # u' = u + f * 0.4 / 4 = u + 2 px, v' = v - 1 px. Frame t is frame t+1 shifted by (2, -1).
    batch, height, width, z = 2, 7, 9, 4.0
    rng = np.random.default_rng(1)
    image_next = rng.uniform(size=(batch, height, width, 3)).astype(np.float32)
    depth = np.full((batch, height, width, 1), z, np.float32)
    warped, valid = inverse_warp(image_next, depth, _intrinsics(batch, height, width), _translation(batch, [0.4, -0.2, 0]))
    warped, valid = ops.convert_to_numpy(warped), ops.convert_to_numpy(valid)[..., 0]
    np.testing.assert_allclose(warped[:, 2:, :-3], image_next[:, 1:-1, 2:-1], atol=1e-4)  # interior rows/cols
    np.testing.assert_array_equal(valid[:, 2:-1, 1:-3], 1.0)
    np.testing.assert_array_equal(valid[:, 0], 0.0)  # maps to row -1
    np.testing.assert_array_equal(valid[:, :, -2:], 0.0)  # maps to columns W, W+1


def test_half_pixel_shift_averages_neighbours():
    batch, height, width, z = 1, 5, 8, 2.0
    image_next = np.random.default_rng(2).uniform(size=(batch, height, width, 2)).astype(np.float32)
    depth = np.full((batch, height, width, 1), z, np.float32)
    shift_m = 0.5 * z / 20.0  # half a pixel with f = 20
    warped, _ = inverse_warp(image_next, depth, _intrinsics(batch, height, width), _translation(batch, [shift_m, 0, 0]))
    expected = 0.5 * (image_next[:, :, :-1] + image_next[:, :, 1:])
    np.testing.assert_allclose(ops.convert_to_numpy(warped)[:, :, :-1], expected, atol=1e-4)


def test_forward_motion_scales_about_principal_point():
    # Plane at z = 5 m, camera moves 1 m forward (points move to z' = 4 m): (u' - cx) = (u - cx) * 5 / 4.
    # A texture linear in (u, v) is reproduced exactly by bilinear sampling.
    batch, height, width = 1, 9, 11
    k = _intrinsics(batch, height, width)
    cx, cy = k[0, 0, 2], k[0, 1, 2]
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    image_next = (0.02 * u + 0.05 * v + 0.1)[None, :, :, None]
    depth = np.full((batch, height, width, 1), 5.0, np.float32)
    motion = _translation(batch, [0.0, 0.0, -1.0])
    uv, z_next = reproject(depth, k, motion)
    np.testing.assert_allclose(ops.convert_to_numpy(z_next), 4.0, rtol=1e-6)
    u_next, v_next = cx + (u - cx) * 1.25, cy + (v - cy) * 1.25
    np.testing.assert_allclose(ops.convert_to_numpy(uv)[0], np.stack([u_next, v_next], -1), atol=1e-4)
    warped, valid = inverse_warp(image_next, depth, k, motion)
    valid = ops.convert_to_numpy(valid)[0, ..., 0] > 0
    inside = (u_next >= 0) & (u_next <= width - 1) & (v_next >= 0) & (v_next <= height - 1)
    np.testing.assert_array_equal(valid, inside)
    analytic = 0.02 * u_next + 0.05 * v_next + 0.1
    np.testing.assert_allclose(ops.convert_to_numpy(warped)[0, ..., 0][valid], analytic[valid], atol=1e-5)


def test_points_behind_the_camera_are_invalid():
    batch, height, width = 1, 4, 5
    depth = np.full((batch, height, width, 1), 3.0, np.float32)
    image = np.ones((batch, height, width, 1), np.float32)
    # Moving 3.5 m forward puts the whole plane 0.5 m behind the camera, where it projects back inside the image.
    _, valid = inverse_warp(image, depth, _intrinsics(batch, height, width), _translation(batch, [0, 0, -3.5]),
                            padding="border")
    np.testing.assert_array_equal(ops.convert_to_numpy(valid), 0.0)


def test_gradients_reach_depth_and_motion_in_graph_mode():
    batch, height, width = 2, 6, 8
    rng = np.random.default_rng(3)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    image_next = np.broadcast_to(np.sin(0.7 * u + 0.3 * v)[None, :, :, None], (batch, height, width, 1)).copy()
    depth = tf.constant(rng.uniform(3.0, 5.0, (batch, height, width, 1)), tf.float32)
    angles = tf.constant(rng.uniform(-0.05, 0.05, (batch, 3)), tf.float32)
    t = tf.constant(rng.uniform(-0.1, 0.1, (batch, 3)), tf.float32)
    k = _intrinsics(batch, height, width)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1])] + [tf.TensorSpec([None, 3])] * 2)
    def grads(depth, angles, t):
        with tf.GradientTape() as tape:
            tape.watch([depth, angles, t])
            warped, valid = inverse_warp(image_next, depth, k, compose(rotation_matrix(angles), t))
            loss = tf.reduce_sum(valid * tf.abs(warped - 0.5))
        return tape.gradient(loss, [depth, angles, t])

    for g in grads(depth, angles, t):
        g = g.numpy()
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0.0


def test_translation_field_follows_eq_2():
    """z' p' = K R K^-1 z p + K (dt + t), with a per-pixel dt only on a 'movable' block."""
    rng = np.random.default_rng(7)
    batch, height, width = 2, 5, 6
    k = _intrinsics(batch, height, width)
    depth = rng.uniform(2.0, 30.0, (batch, height, width, 1)).astype(np.float32)
    rot = ops.convert_to_numpy(rotation_matrix(rng.uniform(-0.1, 0.1, (batch, 3)).astype(np.float32)))
    t = rng.uniform(-1.0, 1.0, (batch, 3)).astype(np.float32)
    mask = np.zeros((batch, height, width, 1), np.float32)
    mask[:, 1:3, 2:5] = 1.0
    dt = rng.uniform(-0.5, 0.5, (batch, height, width, 3)).astype(np.float32) * mask
    uv, z = reproject(depth, k, compose(rot, t), translation_field=dt)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    p = np.stack([u, v, np.ones_like(u)], axis=-1)
    m = np.einsum("bij,bjk,bkl->bil", k, rot, np.linalg.inv(k))
    zp = np.einsum("bij,hwj->bhwi", m, p) * depth + np.einsum("bij,bhwj->bhwi", k, dt + t[:, None, None, :])
    np.testing.assert_allclose(ops.convert_to_numpy(z), zp[..., 2:], rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(uv), zp[..., :2] / zp[..., 2:], atol=1e-3)
    uv0, _ = reproject(depth, k, compose(rot, t))
    moved = np.abs(ops.convert_to_numpy(uv) - ops.convert_to_numpy(uv0)).max(axis=-1) > 1e-4
    np.testing.assert_array_equal(moved, mask[..., 0] > 0)
    with pytest.raises(ValueError, match="translation_field"):
        reproject(depth, k, compose(rot, t), translation_field=dt[..., :2])
