"""Tests for taskology_tf.geometry.transforms: Euler rotations, compose/invert/apply."""

import numpy as np
import pytest
from keras import ops

from taskology_tf.geometry import apply, compose, invert, rotation_matrix, rotation_y


def _rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@pytest.mark.parametrize("axis,reference", [(0, _rx), (1, _ry), (2, _rz)])
@pytest.mark.parametrize("angle", [0.0, 0.3, -1.2, np.pi / 2])
def test_single_axis_rotations_match_numpy(axis, reference, angle):
    angles = np.zeros(3, np.float32)
    angles[axis] = angle
    np.testing.assert_allclose(ops.convert_to_numpy(rotation_matrix(angles)), reference(angle), atol=1e-6)


def test_quarter_turn_about_z_maps_x_to_y():
    r = ops.convert_to_numpy(rotation_matrix(np.array([0.0, 0.0, np.pi / 2], np.float32)))
    np.testing.assert_allclose(r @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-6)


def test_composition_order_is_rz_ry_rx():
    a = np.array([0.4, -0.7, 1.1])
    expected = _rz(a[2]) @ _ry(a[1]) @ _rx(a[0])
    np.testing.assert_allclose(ops.convert_to_numpy(rotation_matrix(a.astype(np.float32))), expected, atol=1e-6)


@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)])
def test_rotations_are_orthonormal_with_unit_determinant(batch_shape):
    rng = np.random.default_rng(len(batch_shape))
    angles = rng.uniform(-np.pi, np.pi, batch_shape + (3,)).astype(np.float32)
    r = ops.convert_to_numpy(rotation_matrix(angles))
    assert r.shape == batch_shape + (3, 3)
    eye = np.broadcast_to(np.eye(3), r.shape)
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), eye, atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)


def test_rotation_y_matches_euler_form():
    yaw = np.array([0.0, 0.5, -2.0], np.float32)
    angles = np.stack([np.zeros(3), yaw, np.zeros(3)], axis=-1).astype(np.float32)
    got = ops.convert_to_numpy(rotation_y(yaw))
    assert got.shape == (3, 3, 3)
    np.testing.assert_allclose(got, ops.convert_to_numpy(rotation_matrix(angles)), atol=1e-6)
    np.testing.assert_allclose(got[1], _ry(0.5), atol=1e-6)


def _random_transforms(batch_shape, seed):
    rng = np.random.default_rng(seed)
    angles = rng.uniform(-np.pi, np.pi, batch_shape + (3,)).astype(np.float32)
    t = rng.uniform(-5.0, 5.0, batch_shape + (3,)).astype(np.float32)
    return compose(rotation_matrix(angles), t), angles, t


def test_compose_layout():
    t_mat, angles, t = _random_transforms((2,), 0)
    t_mat = ops.convert_to_numpy(t_mat)
    assert t_mat.shape == (2, 4, 4)
    np.testing.assert_allclose(t_mat[:, :3, :3], ops.convert_to_numpy(rotation_matrix(angles)), atol=1e-7)
    np.testing.assert_allclose(t_mat[:, :3, 3], t)
    np.testing.assert_array_equal(t_mat[:, 3], np.broadcast_to([0.0, 0.0, 0.0, 1.0], (2, 4)))


@pytest.mark.parametrize("batch_shape", [(), (4,), (2, 3)])
def test_invert_times_transform_is_identity(batch_shape):
    t_mat, _, _ = _random_transforms(batch_shape, 1)
    t_inv = ops.convert_to_numpy(invert(t_mat))
    t_mat = ops.convert_to_numpy(t_mat)
    eye = np.broadcast_to(np.eye(4), t_mat.shape)
    np.testing.assert_allclose(t_inv @ t_mat, eye, atol=1e-5)
    np.testing.assert_allclose(t_mat @ t_inv, eye, atol=1e-5)
    np.testing.assert_allclose(t_inv, np.linalg.inv(t_mat), atol=1e-5)


@pytest.mark.parametrize("points_shape", [(3, 7, 3), (3, 4, 5, 3), (3, 3)])
def test_apply_matches_matrix_product(points_shape):
    t_mat, _, _ = _random_transforms((3,), 2)
    points = np.random.default_rng(3).normal(size=points_shape).astype(np.float32)
    got = ops.convert_to_numpy(apply(t_mat, points))
    t_np = ops.convert_to_numpy(t_mat)
    flat = points.reshape(3, -1, 3)
    homogeneous = np.concatenate([flat, np.ones(flat.shape[:-1] + (1,))], axis=-1)
    expected = np.einsum("bij,bnj->bni", t_np, homogeneous)[..., :3].reshape(points_shape)
    assert got.shape == points_shape
    np.testing.assert_allclose(got, expected, atol=1e-5)
    back = ops.convert_to_numpy(apply(invert(t_mat), got))
    np.testing.assert_allclose(back, points, atol=1e-4)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="angles"):
        rotation_matrix(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="transform"):
        invert(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="transform"):
        apply(np.eye(4, dtype=np.float32), np.zeros((1, 5, 3), np.float32))


def test_euler_angles_invert_rotation_matrix():
    from taskology_tf.geometry.transforms import euler_angles

    rng = np.random.default_rng(0)
    angles = rng.uniform(-1.2, 1.2, size=(64, 3)).astype(np.float32)  # |ry| < pi/2: away from gimbal lock
    back = ops.convert_to_numpy(euler_angles(rotation_matrix(ops.convert_to_tensor(angles))))
    np.testing.assert_allclose(back, angles, atol=1e-5)
    with pytest.raises(ValueError, match="3, 3"):
        euler_angles(ops.zeros((2, 4, 4)))
