"""Tests for taskology_tf.geometry.ssim."""

import numpy as np
import pytest
from keras import ops

from taskology_tf.geometry import ssim_distance, ssim_map


@pytest.mark.parametrize("shape", [(1, 2, 2, 1), (2, 5, 7, 3), (3, 8, 4, 2)])
def test_ssim_of_image_with_itself_is_one(shape):
    x = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    s = ops.convert_to_numpy(ssim_map(x, x))
    assert s.shape == shape
    np.testing.assert_allclose(s, 1.0, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(ssim_distance(x, x)), 0.0, atol=1e-5)


def test_ssim_decreases_with_noise():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.2, 0.8, (2, 12, 12, 3)).astype(np.float32)
    means = []
    for sigma in (0.0, 0.02, 0.1, 0.3):
        noisy = np.clip(x + rng.normal(0.0, sigma, x.shape), 0.0, 1.0).astype(np.float32)
        means.append(float(np.mean(ops.convert_to_numpy(ssim_map(x, noisy)))))
    assert all(a > b for a, b in zip(means, means[1:])), means
    assert means[-1] < 0.7


def test_constant_images_follow_luminance_term():
    # With zero variance the contrast/structure term is c2 / c2 = 1, leaving (2ab + c1) / (a^2 + b^2 + c1).
    a, b, c1 = 0.2, 0.7, 0.01**2
    x = np.full((1, 4, 5, 1), a, np.float32)
    y = np.full((1, 4, 5, 1), b, np.float32)
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    np.testing.assert_allclose(ops.convert_to_numpy(ssim_map(x, y)), expected, atol=2e-4)
    np.testing.assert_allclose(ops.convert_to_numpy(ssim_distance(x, y)), (1 - expected) / 2, atol=1e-4)


def test_ssim_is_symmetric_and_distance_is_bounded():
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(2, 6, 6, 3)).astype(np.float32)
    y = (1.0 - x).astype(np.float32)  # anti-correlated: SSIM near -1
    np.testing.assert_allclose(ops.convert_to_numpy(ssim_map(x, y)), ops.convert_to_numpy(ssim_map(y, x)), atol=1e-6)
    d = ops.convert_to_numpy(ssim_distance(x, y))
    assert d.min() >= 0.0 and d.max() <= 1.0
    assert d.mean() > 0.5


def test_local_window_is_three_by_three():
    # A single perturbed pixel only changes SSIM within its 3x3 neighbourhood (reflect padding keeps it local).
    x = np.full((1, 7, 7, 1), 0.5, np.float32)
    y = x.copy()
    y[0, 3, 3, 0] = 0.9
    changed = np.abs(ops.convert_to_numpy(ssim_map(x, y))[0, ..., 0] - 1.0) > 1e-6
    expected = np.zeros((7, 7), bool)
    expected[2:5, 2:5] = True
    np.testing.assert_array_equal(changed, expected)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="match"):
        ssim_map(np.zeros((1, 4, 4, 1), np.float32), np.zeros((1, 4, 4, 3), np.float32))
