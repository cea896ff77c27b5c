"""Tests for taskology_tf.geometry.camera against analytic pinhole cases."""

import numpy as np
import pytest
from keras import ops

from taskology_tf.geometry import backproject, pixel_grid, project, scale_intrinsics


def _intrinsics(batch, height, width, rng, skew=0.0):
    k = np.zeros((batch, 3, 3), np.float32)
    k[:, 0, 0] = rng.uniform(0.8, 1.2, batch) * width
    k[:, 1, 1] = rng.uniform(0.8, 1.2, batch) * width
    k[:, 0, 1] = skew
    k[:, 0, 2] = rng.uniform(0.4, 0.6, batch) * (width - 1)
    k[:, 1, 2] = rng.uniform(0.4, 0.6, batch) * (height - 1)
    k[:, 2, 2] = 1.0
    return k


@pytest.mark.parametrize("height,width", [(1, 1), (3, 5), (4, 2)])
def test_pixel_grid_holds_u_v_one(height, width):
    grid = ops.convert_to_numpy(pixel_grid(height, width))
    assert grid.shape == (height, width, 3)
    v, u = np.mgrid[0:height, 0:width]
    np.testing.assert_array_equal(grid[..., 0], u)
    np.testing.assert_array_equal(grid[..., 1], v)
    np.testing.assert_array_equal(grid[..., 2], 1.0)


def test_backproject_known_pixels():
    k = np.array([[[100.0, 0.0, 4.0], [0.0, 50.0, 2.0], [0.0, 0.0, 1.0]]], np.float32)
    depth = np.full((1, 5, 9, 1), 2.0, np.float32)
    points = ops.convert_to_numpy(backproject(depth, k))
    assert points.shape == (1, 5, 9, 3)
    np.testing.assert_allclose(points[0, 2, 4], [0.0, 0.0, 2.0], atol=1e-6)  # principal point
    # pixel (u, v) = (8, 0): x = (8 - 4) / 100 * 2, y = (0 - 2) / 50 * 2.
    np.testing.assert_allclose(points[0, 0, 8], [0.08, -0.08, 2.0], atol=1e-6)


@pytest.mark.parametrize("batch,height,width,skew", [(1, 4, 5, 0.0), (3, 6, 8, 0.0), (2, 5, 3, 1.5)])
def test_backproject_then_project_is_identity(batch, height, width, skew):
    rng = np.random.default_rng(batch * 100 + height)
    k = _intrinsics(batch, height, width, rng, skew)
    depth = rng.uniform(0.5, 50.0, (batch, height, width, 1)).astype(np.float32)
    uv, z = project(backproject(depth, k), k)
    uv, z = ops.convert_to_numpy(uv), ops.convert_to_numpy(z)
    assert uv.shape == (batch, height, width, 2) and z.shape == (batch, height, width, 1)
    grid = ops.convert_to_numpy(pixel_grid(height, width))[..., :2]
    np.testing.assert_allclose(uv, np.broadcast_to(grid, uv.shape), atol=1e-3)
    np.testing.assert_allclose(z, depth, rtol=1e-5)


def test_project_accepts_point_lists_and_matches_numpy():
    rng = np.random.default_rng(0)
    k = _intrinsics(2, 10, 12, rng)
    points = rng.uniform(-3.0, 3.0, (2, 7, 3)).astype(np.float32)
    points[..., 2] = np.abs(points[..., 2]) + 1.0
    uv, z = project(points, k)
    expected = np.einsum("bij,bnj->bni", k, points)
    np.testing.assert_allclose(ops.convert_to_numpy(uv), expected[..., :2] / expected[..., 2:], rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(z), points[..., 2:], rtol=1e-6)


def test_project_clamps_small_depth_keeping_sign():
    k = np.eye(3, dtype=np.float32)[None]
    points = np.array([[[1.0, 1.0, 0.0], [1.0, 1.0, -1e-9], [1.0, 1.0, -2.0]]], np.float32)
    uv, z = project(points, k, eps=1e-3)
    uv = ops.convert_to_numpy(uv)
    assert np.all(np.isfinite(uv))
    np.testing.assert_allclose(uv[0, 0], [1000.0, 1000.0], rtol=1e-5)
    np.testing.assert_allclose(uv[0, 1], [-1000.0, -1000.0], rtol=1e-5)
    np.testing.assert_allclose(uv[0, 2], [-0.5, -0.5], rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(z)[0, :, 0], [0.0, -1e-9, -2.0])


@pytest.mark.parametrize("scale_y,scale_x", [(1.0, 1.0), (0.5, 0.5), (2.0, 0.25)])
def test_scale_intrinsics_moves_points_with_edge_aligned_resize(scale_y, scale_x):
    rng = np.random.default_rng(1)
    k = _intrinsics(2, 8, 12, rng, skew=0.7)
    points = rng.uniform(-2.0, 2.0, (2, 5, 3)).astype(np.float32)
    points[..., 2] = np.abs(points[..., 2]) + 1.0
    uv, _ = project(points, k)
    uv_scaled, _ = project(points, scale_intrinsics(k, scale_y, scale_x))
    uv, uv_scaled = ops.convert_to_numpy(uv), ops.convert_to_numpy(uv_scaled)
    np.testing.assert_allclose(uv_scaled[..., 0], scale_x * (uv[..., 0] + 0.5) - 0.5, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(uv_scaled[..., 1], scale_y * (uv[..., 1] + 0.5) - 0.5, rtol=1e-5, atol=1e-4)


def test_scale_intrinsics_matches_keras_resize_convention():
    # An image whose value is its own u coordinate, resized to half width with keras' bilinear resize,
    # holds at new pixel u' the old coordinate of that pixel centre: (u' + 0.5) / s - 0.5.
    height, width, scale = 4, 16, 0.5
    image = np.broadcast_to(np.arange(width, dtype=np.float32)[None, None, :, None], (1, height, width, 1))
    small = ops.convert_to_numpy(ops.image.resize(image, (height, int(width * scale)), antialias=False))
    k = np.array([[[10.0, 0.0, 5.0], [0.0, 10.0, 0.0], [0.0, 0.0, 1.0]]], np.float32)  # cx at old u = 5
    cx_new = ops.convert_to_numpy(scale_intrinsics(k, 1.0, scale))[0, 0, 2]
    # The old pixel u = 5 (where cx sits) must be found at the new coordinate cx_new.
    u_new = np.arange(int(width * scale), dtype=np.float32)
    old_at_new = np.interp(cx_new, u_new, small[0, 0, :, 0])
    np.testing.assert_allclose(old_at_new, 5.0, atol=1e-5)
    np.testing.assert_allclose(small[0, 0, :, 0], (u_new + 0.5) / scale - 0.5, atol=1e-5)


def test_scale_intrinsics_accepts_unbatched_matrix():
    k = np.array([[100.0, 0.0, 31.5], [0.0, 90.0, 15.5], [0.0, 0.0, 1.0]], np.float32)
    out = ops.convert_to_numpy(scale_intrinsics(k, 0.5, 0.5))
    np.testing.assert_allclose(out, [[50.0, 0.0, 15.5], [0.0, 45.0, 7.5], [0.0, 0.0, 1.0]], atol=1e-6)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="intrinsics"):
        backproject(np.ones((1, 2, 2, 1), np.float32), np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="depth"):
        backproject(np.ones((1, 2, 2), np.float32), np.eye(3, dtype=np.float32)[None])
    with pytest.raises(ValueError, match="points"):
        project(np.ones((1, 2, 2), np.float32), np.eye(3, dtype=np.float32)[None])
