"""Tests for taskology_tf.geometry.resample.bilinear_sample: analytic cases and gradient checks."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from taskology_tf.geometry import bilinear_sample, pixel_grid


def _grid_coords(batch, height, width):
    grid = ops.convert_to_numpy(pixel_grid(height, width))[..., :2]
    return np.broadcast_to(grid, (batch, height, width, 2)).astype(np.float32)


def _numpy_bilinear_zeros(image, coords):
    """Reference: sum over the 4 corners, corners outside the image contribute 0."""
    batch, height, width, channels = image.shape
    out = np.zeros(coords.shape[:-1] + (channels,))
    for b in range(batch):
        for idx in np.ndindex(coords.shape[1:-1]):
            u, v = coords[(b,) + idx]
            u0, v0 = int(np.floor(u)), int(np.floor(v))
            for du in (0, 1):
                for dv in (0, 1):
                    weight = (1 - abs(u - (u0 + du))) * (1 - abs(v - (v0 + dv)))
                    if 0 <= u0 + du < width and 0 <= v0 + dv < height:
                        out[(b,) + idx] += weight * image[b, v0 + dv, u0 + du]
    return out


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("batch,height,width,channels", [(1, 3, 4, 1), (2, 5, 6, 3)])
def test_integer_coordinates_are_identity(padding, batch, height, width, channels):
    image = np.random.default_rng(0).uniform(size=(batch, height, width, channels)).astype(np.float32)
    values, valid = bilinear_sample(image, _grid_coords(batch, height, width), padding=padding)
    np.testing.assert_allclose(ops.convert_to_numpy(values), image, atol=1e-6)
    valid = ops.convert_to_numpy(valid)
    assert valid.shape == (batch, height, width, 1)
    np.testing.assert_array_equal(valid, 1.0)


def test_half_pixel_positions_average_neighbours():
    image = np.random.default_rng(1).uniform(size=(1, 4, 5, 2)).astype(np.float32)
    coords = np.array([[[[1.5, 2.0], [3.0, 0.5], [2.5, 1.5]]]], np.float32)  # [1, 1, 3, 2]
    values, valid = bilinear_sample(image, coords)
    values = ops.convert_to_numpy(values)[0, 0]
    img = image[0]
    np.testing.assert_allclose(values[0], (img[2, 1] + img[2, 2]) / 2, atol=1e-6)
    np.testing.assert_allclose(values[1], (img[0, 3] + img[1, 3]) / 2, atol=1e-6)
    np.testing.assert_allclose(values[2], (img[1, 2] + img[1, 3] + img[2, 2] + img[2, 3]) / 4, atol=1e-6)
    np.testing.assert_array_equal(ops.convert_to_numpy(valid), 1.0)


@pytest.mark.parametrize("out_shape", [(2, 3), (6, 1)])
def test_random_coordinates_match_numpy_reference(out_shape):
    rng = np.random.default_rng(2)
    image = rng.uniform(size=(2, 4, 5, 3)).astype(np.float32)
    coords = rng.uniform(-1.5, 5.5, (2,) + out_shape + (2,)).astype(np.float32)
    values, valid = bilinear_sample(image, coords)
    np.testing.assert_allclose(ops.convert_to_numpy(values), _numpy_bilinear_zeros(image, coords), atol=1e-5)
    inside = (coords[..., 0] >= 0) & (coords[..., 0] <= 4) & (coords[..., 1] >= 0) & (coords[..., 1] <= 3)
    np.testing.assert_array_equal(ops.convert_to_numpy(valid)[..., 0], inside.astype(np.float32))


def test_outside_samples_zeros_vs_border():
    image = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1) + 1.0  # value = 1 + 4 v + u
    coords = np.array([[[[-3.0, 1.0], [1.0, 7.0], [10.0, -4.0], [3.5, 1.0], [1e10, -1e10], [3.0, 2.0]]]], np.float32)
    zeros, valid_z = bilinear_sample(image, coords, padding="zeros")
    border, valid_b = bilinear_sample(image, coords, padding="border")
    zeros, border = ops.convert_to_numpy(zeros)[0, 0, :, 0], ops.convert_to_numpy(border)[0, 0, :, 0]
    np.testing.assert_allclose(zeros, [0.0, 0.0, 0.0, 0.5 * 8.0, 0.0, 12.0], atol=1e-6)
    np.testing.assert_allclose(border, [5.0, 10.0, 4.0, 8.0, 4.0, 12.0], atol=1e-6)
    for valid in (valid_z, valid_b):
        np.testing.assert_array_equal(ops.convert_to_numpy(valid)[0, 0, :, 0], [0, 0, 0, 0, 0, 1])


def test_works_in_graph_mode_with_unknown_shapes():
    spec_image = tf.TensorSpec([None, None, None, 2], tf.float32)
    spec_coords = tf.TensorSpec([None, None, None, 2], tf.float32)
    fn = tf.function(bilinear_sample, input_signature=[spec_image, spec_coords])
    image = np.random.default_rng(3).uniform(size=(3, 4, 5, 2)).astype(np.float32)
    values, valid = fn(image, _grid_coords(3, 4, 5))
    np.testing.assert_allclose(values.numpy(), image, atol=1e-6)
    assert valid.shape == (3, 4, 5, 1)


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_gradients_match_finite_differences(padding):
    rng = np.random.default_rng(4)
    image = tf.constant(rng.uniform(size=(2, 3, 4, 2)), tf.float64)
    # Fractional coordinates away from integers (where the derivative w.r.t. coords is one-sided);
    # some lie half outside to exercise the masked corners / clamping.
    base = rng.integers(-1, 4, size=(2, 2, 3, 2)).astype(np.float64)
    coords = tf.constant(base + rng.uniform(0.15, 0.85, size=base.shape), tf.float64)
    weights = tf.constant(rng.normal(size=(2, 2, 3, 2)), tf.float64)

    def loss(img, crd):
        values, _ = bilinear_sample(img, crd, padding=padding)
        return tf.reduce_sum(values * weights)

    with tf.GradientTape(persistent=True) as tape:
        tape.watch([image, coords])
        value = loss(image, coords)
    grad_image = tf.convert_to_tensor(tape.gradient(value, image)).numpy()
    grad_coords = tape.gradient(value, coords).numpy()

    def numeric(x, fn, h):
        x = x.numpy()
        grad = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            plus, minus = x.copy(), x.copy()
            plus[idx] += h
            minus[idx] -= h
            grad[idx] = (fn(plus) - fn(minus)).numpy() / (2 * h)
        return grad

    np.testing.assert_allclose(grad_image, numeric(image, lambda x: loss(tf.constant(x), coords), 1e-3), atol=1e-8)
    np.testing.assert_allclose(grad_coords, numeric(coords, lambda x: loss(image, tf.constant(x)), 1e-5), atol=1e-6)
    assert np.abs(grad_coords).max() > 0.0


def test_bad_arguments_raise_clear_errors():
    image = np.zeros((1, 2, 2, 1), np.float32)
    with pytest.raises(ValueError, match="padding"):
        bilinear_sample(image, np.zeros((1, 1, 1, 2), np.float32), padding="reflect")
    with pytest.raises(ValueError, match="coords"):
        bilinear_sample(image, np.zeros((1, 1, 1, 3), np.float32))
