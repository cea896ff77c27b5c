"""Tests for taskology_tf.relations.photometric: the pieces of the depth/motion photometric loss."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from taskology_tf.data.synthetic.dataset import render_example
from taskology_tf.geometry.transforms import compose, invert, rotation_matrix
from taskology_tf.relations import photometric as ph


def _k(batch, height, width, f=30.0):
    k = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], np.float32)
    return np.broadcast_to(k, (batch, 3, 3)).copy()


def test_transform_from_motion_matches_compose():
    rng = np.random.default_rng(0)
    angles = rng.uniform(-0.3, 0.3, (3, 3)).astype(np.float32)
    t = rng.uniform(-1, 1, (3, 3)).astype(np.float32)
    np.testing.assert_allclose(
        ops.convert_to_numpy(ph.transform_from_motion(angles, t)),
        ops.convert_to_numpy(compose(rotation_matrix(angles), t)), atol=1e-6)


def test_identity_warp_reconstructs_the_target_exactly():
    rng = np.random.default_rng(1)
    image = rng.uniform(size=(2, 12, 16, 3)).astype(np.float32)
    depth = rng.uniform(2, 20, (2, 12, 16, 1)).astype(np.float32)
    eye = np.broadcast_to(np.eye(4, dtype=np.float32), (2, 4, 4))
    recon, mask, depth_error = ph.warp_from(image, depth, depth, _k(2, 12, 16), eye)
    np.testing.assert_allclose(ops.convert_to_numpy(recon), image, atol=1e-5)
    assert ops.convert_to_numpy(mask)[:, 1:-1, 1:-1].min() == 1.0
    np.testing.assert_allclose(ops.convert_to_numpy(depth_error)[:, 1:-1, 1:-1], 0.0, atol=1e-5)
    error = ph.photometric_error(image, recon)
    assert float(ops.max(ph.masked_mean(error, mask))) < 1e-4


def test_occluded_pixels_are_masked():
    """A target pixel whose warped depth lies behind the source's surface is not visible there."""
    image = np.full((1, 8, 8, 3), 0.5, np.float32)
    depth = np.full((1, 8, 8, 1), 10.0, np.float32)
    source_depth = depth.copy()
    source_depth[:, 2:5, 2:5] = 4.0  # something closer stands in front in the source frame
    eye = np.eye(4, dtype=np.float32)[None]
    _, mask, _ = ph.warp_from(image, source_depth, depth, _k(1, 8, 8), eye)
    mask = ops.convert_to_numpy(mask)[0, ..., 0]
    assert mask[3, 3] == 0.0 and mask[6, 6] == 1.0


def test_masked_mean_ignores_masked_pixels_and_empty_masks():
    values = np.array([[[[1.0], [5.0]]], [[[2.0], [3.0]]]], np.float32)  # [2, 1, 2, 1]
    mask = np.array([[[[1.0], [0.0]]], [[[0.0], [0.0]]]], np.float32)
    np.testing.assert_allclose(ops.convert_to_numpy(ph.masked_mean(values, mask)), [1.0, 0.0])


def test_smoothness_is_zero_for_constant_depth_and_edge_aware():
    image = np.zeros((1, 8, 8, 3), np.float32)
    assert float(ph.edge_aware_smoothness(np.full((1, 8, 8, 1), 7.0, np.float32), image)[0]) == pytest.approx(0.0)
    step = np.full((1, 8, 8, 1), 5.0, np.float32)
    step[:, :, 4:] = 20.0
    flat = float(ph.edge_aware_smoothness(step, image)[0])
    edged = image.copy()
    edged[:, :, 4:] = 1.0  # the depth step sits on an image edge: cheaper
    assert float(ph.edge_aware_smoothness(step, edged)[0]) < 0.5 * flat


def test_cycle_consistency_is_zero_for_inverse_motions():
    rng = np.random.default_rng(2)
    angles = rng.uniform(-0.2, 0.2, (4, 3)).astype(np.float32)
    t = rng.uniform(-1, 1, (4, 3)).astype(np.float32)
    inv = ops.convert_to_numpy(invert(compose(rotation_matrix(angles), t)))
    r = inv[:, :3, :3]
    back_angles = np.stack([np.arctan2(r[:, 2, 1], r[:, 2, 2]), -np.arcsin(r[:, 2, 0]), np.arctan2(r[:, 1, 0], r[:, 0, 0])], -1)
    rot_err, trans_err = ph.motion_cycle_consistency(angles, t, back_angles.astype(np.float32), inv[:, :3, 3])
    np.testing.assert_allclose(ops.convert_to_numpy(rot_err), 0.0, atol=1e-10)
    np.testing.assert_allclose(ops.convert_to_numpy(trans_err), 0.0, atol=1e-10)
    rot_err, trans_err = ph.motion_cycle_consistency(angles, t, angles, t)  # same direction twice: not inverses
    assert float(ops.min(trans_err)) > 0.1


def test_motion_field_regularisers_prefer_piecewise_constant_sparse_fields():
    blob = np.zeros((1, 16, 16, 3), np.float32)
    blob[:, 4:8, 4:8, 0] = 1.0
    noise = np.random.default_rng(3).normal(0, 0.25, (1, 16, 16, 3)).astype(np.float32)
    assert float(ph.motion_field_smoothness(blob)[0]) < float(ph.motion_field_smoothness(noise)[0])
    spread = np.full((1, 16, 16, 3), float(np.abs(blob).mean()), np.float32)
    assert float(ph.motion_field_sparsity(blob)[0]) < float(ph.motion_field_sparsity(spread)[0])


def test_true_depth_and_motion_explain_the_synthetic_video_best():
    """On rendered frame pairs the photometric error is lowest with the true motion."""
    examples = [render_example(i, style="sim", height=48, width=96, with_next=True) for i in range(3)]
    batch = {k: np.stack([e[k] for e in examples]).astype(np.float32) for k in ("image", "image_next", "depth", "ego_motion", "intrinsics")}
    image, image_next = batch["image"] / 255.0, batch["image_next"] / 255.0
    depth = np.where(batch["depth"] > 0, batch["depth"], 80.0).astype(np.float32)
    losses = {}
    for name, scale in (("true", 1.0), ("none", 0.0), ("double", 2.0)):
        motion = batch["ego_motion"].copy()
        motion[:, :3, 3] *= scale
        if scale == 0.0:
            motion = np.broadcast_to(np.eye(4, dtype=np.float32), motion.shape).copy()
        recon, mask, _ = ph.warp_from(image_next, depth, depth, batch["intrinsics"], motion)
        losses[name] = ops.convert_to_numpy(ph.masked_mean(ph.photometric_error(image, recon), mask))
    assert np.all(losses["true"] < 0.6 * losses["none"]), losses
    assert np.all(losses["true"] < losses["double"]), losses


def test_gradients_reach_depth_and_motion():
    rng = np.random.default_rng(4)
    image = tf.constant(rng.uniform(size=(1, 16, 16, 3)).astype(np.float32))
    source = tf.constant(rng.uniform(size=(1, 16, 16, 3)).astype(np.float32))
    depth = tf.Variable(np.full((1, 16, 16, 1), 5.0, np.float32))
    angles = tf.Variable(np.zeros((1, 3), np.float32))
    t = tf.Variable(np.array([[0.1, 0.0, -0.2]], np.float32))
    with tf.GradientTape() as tape:
        transform = ph.transform_from_motion(angles, t)
        recon, mask, _ = ph.warp_from(source, depth, depth, _k(1, 16, 16), transform)
        loss = tf.reduce_sum(ph.masked_mean(ph.photometric_error(image, recon), mask))
    grads = tape.gradient(loss, [depth, angles, t])
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


@pytest.mark.parametrize("size", [3, 4])
def test_box_blur_keeps_size_and_constants(size):
    image = np.random.default_rng(5).uniform(size=(1, 7, 9, 3)).astype(np.float32)
    blurred = ops.convert_to_numpy(ph.box_blur(image, size))
    assert blurred.shape == image.shape
    np.testing.assert_allclose(ops.convert_to_numpy(ph.box_blur(np.ones_like(image), size)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(blurred[0, 3, 4], image[0, 3 - (size - 1) // 2: 4 + size // 2, 4 - (size - 1) // 2: 5 + size // 2].mean(axis=(0, 1)), rtol=1e-5)
    assert ph.box_blur(image, 1) is image
