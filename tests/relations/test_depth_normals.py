import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.core.registry import relation_factory
from taskology_tf.relations.depth_normals import depth_normals, depth_normals_loss


def _plane_depth(h=16, w=24, f=20.0, height=1.5):
    """Depth of a ground plane y = height below a level camera (rows below the horizon only)."""
    K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2 - 10.0], [0, 0, 1]], np.float32)
    v = np.arange(h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    ray_y = (v - K[1, 2]) / f
    depth = height / ray_y  # z of the ray hitting y = height
    return depth[None, ..., None].astype(np.float32), K[None]


def test_true_depth_and_true_normals_are_consistent():
    depth, K = _plane_depth()
    assert np.all(depth > 0)
    normals = np.zeros(depth.shape[:-1] + (3,), np.float32)
    normals[..., 1] = -1.0
    loss = depth_normals_loss({"intrinsics": K}, {"depth": {"depth": depth}, "normals": {"normals": normals}})
    assert float(loss[0]) < 1e-5


def test_inconsistent_normals_are_penalised_and_both_get_gradients():
    depth, K = _plane_depth()
    wrong = np.zeros(depth.shape[:-1] + (3,), np.float32)
    wrong[..., 2] = -1.0  # claims a wall facing the camera
    d = tf.Variable(depth)
    n = tf.Variable(wrong)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(depth_normals_loss({"intrinsics": K}, {"depth": {"depth": d}, "normals": {"normals": n}}))
    assert float(loss) == pytest.approx(1.0, abs=1e-3)  # orthogonal normals
    gd, gn = tape.gradient(loss, [d, n])
    assert np.abs(gd.numpy()).sum() > 0 and np.abs(gn.numpy()).sum() > 0


def test_registered_and_configurable():
    rel = relation_factory("depth_normals")()
    assert rel.tasks == ("depth", "normals") and rel.input_keys == ("intrinsics",)
    custom = depth_normals(depth="d2", normals="n2", weight=0.5, normals_weight=2.0)
    assert custom.weight_for("d2") == 0.5 and custom.weight_for("n2") == 2.0


def test_reliable_mask_drops_far_pixels_and_depth_steps():
    from taskology_tf.relations.depth_normals import reliable_depth_mask

    depth = np.full((1, 6, 8, 1), 5.0, np.float32)
    depth[:, :, 4:] = 10.0  # a step between columns 3 and 4
    depth[:, 0, 0] = 100.0  # a far pixel
    mask = np.asarray(reliable_depth_mask(depth, max_depth=50.0, max_relative_step=0.2))[0, ..., 0]
    assert mask[0, 0] == 0  # too far
    assert mask[3, 1] == 1 and mask[3, 6] == 1  # smooth interior
    # Columns 3 and 4 have a neighbour on the same surface, so they stay (edge-aware normals are fine there).
    assert mask[3, 3] == 1 and mask[3, 4] == 1
    one_pixel = np.full((1, 5, 5, 1), 5.0, np.float32)
    one_pixel[0, 2, 2] = 9.0  # an isolated spike has no neighbour on its surface
    assert np.asarray(reliable_depth_mask(one_pixel, max_relative_step=0.2))[0, 2, 2, 0] == 0


def test_masked_loss_ignores_unreliable_pixels():
    depth, K = _plane_depth()
    normals = np.zeros(depth.shape[:-1] + (3,), np.float32)
    normals[..., 1] = -1.0
    depth_far = depth.copy()
    far = depth_far > 8.0
    normals[np.broadcast_to(far, normals.shape[:-1] + (1,))[..., 0]] = (0.0, 0.0, -1.0)  # wrong where far
    preds = {"depth": {"depth": depth_far}, "normals": {"normals": normals}}
    assert float(depth_normals_loss({"intrinsics": K}, preds)[0]) > 0.05
    assert float(depth_normals_loss({"intrinsics": K}, preds, max_depth=8.0)[0]) < 1e-5
