import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.tasks.normals import NormalsTask, normals_cosine_loss


def test_cosine_loss_known_values_and_mask():
    gt = np.zeros((3, 2, 2, 3), np.float32)
    gt[0, ..., 2] = -1.0
    gt[1, ..., 0] = 1.0
    pred = np.zeros((3, 2, 2, 3), np.float32)
    pred[..., 2] = -1.0
    loss = normals_cosine_loss(tf.constant(pred), tf.constant(gt)).numpy()
    np.testing.assert_allclose(loss, [0.0, 1.0, 0.0], atol=1e-6)  # same, orthogonal, unlabelled


def test_model_outputs_unit_normals():
    model = NormalsTask(preset="tiny").build_model()
    out = model({"image": np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)})
    n = out["normals"].numpy()
    assert n.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-4)


def test_metrics_are_angle_accuracies():
    task = NormalsTask()
    gt = np.zeros((1, 4, 4, 3), np.float32)
    gt[..., 2] = -1
    a = np.deg2rad(15.0)
    pred = np.zeros_like(gt)
    pred[..., 0], pred[..., 2] = np.sin(a), -np.cos(a)
    acc = task.make_metrics()
    acc.update({"normals": gt}, {"normals": pred})
    r = acc.result()
    assert r["within_11.25"] == 0.0 and r["within_22.5"] == 100.0
    assert r["mean"] == pytest.approx(15.0, abs=1e-3)
