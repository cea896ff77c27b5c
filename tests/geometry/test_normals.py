"""Tests for taskology_tf.geometry.normals against analytically rendered planes."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from taskology_tf.geometry import backproject, cosine_distance, normals_from_depth

SCHEMES = ("central", "edge_aware")


def _intrinsics(batch, fx=40.0, fy=36.0, cx=7.3, cy=5.1):
    k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], np.float32)
    return np.broadcast_to(k, (batch, 3, 3)).copy()


def _render_plane(normal, offset, k, height, width):
    """Depth of the plane {X : n . X + offset = 0} seen through K: z = -offset / (n . K^-1 p)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    pixels = np.stack([u, v, np.ones_like(u)], axis=-1)
    rays = pixels @ np.linalg.inv(k.astype(np.float64)).T
    depth = -offset / (rays @ np.asarray(normal, np.float64))
    assert np.all(depth > 0), "test plane must be in front of the camera"
    return depth[..., None].astype(np.float32)


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x)


PLANES = [
    ("fronto_parallel", (0.0, 0.0, -1.0), 4.0),
    ("tilted", _unit((0.3, -0.5, -1.0)), 6.0),
    ("steep", _unit((-0.8, 0.2, -0.5)), 3.0),
]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name,normal,offset", PLANES)
@pytest.mark.parametrize("batch,height,width", [(1, 6, 9), (2, 11, 15)])
def test_plane_gives_its_exact_normal(scheme, name, normal, offset, batch, height, width):
    k = _intrinsics(batch, cx=(width - 1) / 2, cy=(height - 1) / 2)
    depth = np.stack([_render_plane(normal, offset, k[0], height, width)] * batch)
    got = ops.convert_to_numpy(normals_from_depth(depth, k, scheme=scheme))
    assert got.shape == (batch, height, width, 3)
    # Neighbouring points of a plane are chords in the plane, so all pixels (borders included) are exact.
    np.testing.assert_allclose(got, np.broadcast_to(normal, got.shape), atol=1e-3)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_fronto_parallel_plane_faces_camera(scheme):
    depth = np.full((2, 5, 6, 1), 3.0, np.float32)
    got = ops.convert_to_numpy(normals_from_depth(depth, _intrinsics(2), scheme=scheme))
    np.testing.assert_allclose(got, np.broadcast_to([0.0, 0.0, -1.0], got.shape), atol=1e-5)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_ground_plane_below_camera_points_up(scheme):
    height, width = 8, 10
    k = _intrinsics(1, cx=4.5, cy=-3.0)  # horizon above the image: every pixel sees the ground
    depth = _render_plane((0.0, -1.0, 0.0), 1.5, k[0], height, width)[None]  # plane y = +1.5
    got = ops.convert_to_numpy(normals_from_depth(depth, k, scheme=scheme))
    np.testing.assert_allclose(got, np.broadcast_to([0.0, -1.0, 0.0], got.shape), atol=1e-3)


def test_edge_aware_is_correct_next_to_a_depth_step_and_central_is_not():
    height, width, step = 9, 14, 7
    k = _intrinsics(1, cx=6.5, cy=4.0)
    near_normal, far_normal = np.array([0.0, 0.0, -1.0]), _unit((0.4, -0.3, -1.0))
    near = _render_plane(near_normal, 2.0, k[0], height, width)
    far = _render_plane(far_normal, 5.5, k[0], height, width)
    depth = np.where(np.arange(width)[None, :, None] < step, near, far)[None]
    expected = np.where(np.arange(width)[None, :, None] < step, near_normal, far_normal)
    expected = np.broadcast_to(expected, (height, width, 3))
    edge_aware = ops.convert_to_numpy(normals_from_depth(depth, k, scheme="edge_aware"))[0]
    central = ops.convert_to_numpy(normals_from_depth(depth, k, scheme="central"))[0]
    # Every pixel, including the two columns touching the step, gets the normal of its own surface.
    np.testing.assert_allclose(edge_aware, expected, atol=1e-3)
    for column in (step - 1, step):
        cos = np.sum(central[:, column] * expected[:, column], axis=-1)
        assert np.all(cos < 0.95), f"central differences should mix both surfaces at column {column}"
    away = [c for c in range(width) if c not in (step - 1, step)]
    np.testing.assert_allclose(central[:, away], expected[:, away], atol=1e-3)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_normals_are_unit_and_face_the_camera_on_noisy_depth(scheme):
    rng = np.random.default_rng(0)
    depth = rng.uniform(1.0, 10.0, (2, 7, 8, 1)).astype(np.float32)
    k = _intrinsics(2)
    normals = ops.convert_to_numpy(normals_from_depth(depth, k, scheme=scheme))
    points = ops.convert_to_numpy(backproject(depth, k))
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)
    assert np.all(np.sum(normals * points, axis=-1) <= 1e-6)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("fill", ["zero", "constant", "random"])
def test_gradients_are_finite(scheme, fill):
    shape = (1, 5, 6, 1)
    values = {"zero": np.zeros(shape), "constant": np.full(shape, 2.0),
              "random": np.random.default_rng(1).uniform(1.0, 3.0, shape)}[fill]
    depth = tf.constant(values, tf.float32)
    weights = tf.constant(np.random.default_rng(2).normal(size=shape[:-1] + (3,)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(depth)
        loss = tf.reduce_sum(normals_from_depth(depth, _intrinsics(1), scheme=scheme) * weights)
    grad = tape.gradient(loss, depth).numpy()
    assert np.all(np.isfinite(grad)) and np.isfinite(loss.numpy())
    if fill == "random":
        assert np.abs(grad).max() > 0.0


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="scheme"):
        normals_from_depth(np.ones((1, 3, 3, 1), np.float32), _intrinsics(1), scheme="sobel")
    with pytest.raises(ValueError, match="at least 2"):
        normals_from_depth(np.ones((1, 1, 3, 1), np.float32), _intrinsics(1))


def test_cosine_distance_analytic_values():
    a = np.zeros((3, 2, 2, 3), np.float32)
    a[..., 2] = -1.0
    b = a.copy()
    b[1] *= -1.0  # opposite -> 2
    b[2] = 0.0
    b[2, ..., 0] = 5.0  # orthogonal (and not unit) -> 1
    np.testing.assert_allclose(ops.convert_to_numpy(cosine_distance(a, b)), [0.0, 2.0, 1.0], atol=1e-6)


def test_cosine_distance_mask_and_empty_examples():
    a = np.zeros((2, 2, 3, 3), np.float32)
    a[..., 2] = 1.0
    b = a.copy()
    b[:, 0] = [1.0, 0.0, 0.0]  # first row orthogonal
    mask = np.ones((2, 2, 3, 1), np.float32)
    mask[0, 0] = 0.0  # example 0 ignores the orthogonal row
    mask[1] = 0.0  # example 1 has no valid pixel
    got = ops.convert_to_numpy(cosine_distance(a, b, mask=mask))
    assert got.shape == (2,)
    np.testing.assert_allclose(got, [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(cosine_distance(a, b)), [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(cosine_distance(a, b, mask=mask[..., 0] * 0 + 1)), [0.5, 0.5],
                               atol=1e-6)
