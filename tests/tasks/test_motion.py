"""Tests for the motion task: outputs, supervised loss, metrics, and a short supervised training run."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from taskology_tf.core.registry import task_factory
from taskology_tf.core.trainer import TaskTrainer
from taskology_tf.data.synthetic.dataset import synthetic_dataset
from taskology_tf.tasks.motion import MotionTask


def test_registered_and_output_keys_follow_options():
    task = task_factory("motion")(name="motion")
    assert task.input_keys == ("image", "image_next") and task.label_keys == ("ego_motion",)
    assert task.output_keys == ("rotation", "translation", "rotation_backward", "translation_backward")
    full = MotionTask(object_motion=True, learn_intrinsics=True)
    assert "residual_translation" in full.output_keys and "intrinsics" in full.output_keys
    model = full.build_model()
    assert set(model.output) == set(full.output_keys)


def test_supervised_loss_is_zero_at_the_truth():
    task = MotionTask()
    ego = np.broadcast_to(np.eye(4, dtype=np.float32), (2, 4, 4)).copy()
    ego[:, 2, 3] = -1.0
    preds = {"rotation": np.zeros((2, 3), np.float32), "translation": ego[:, :3, 3]}
    np.testing.assert_allclose(ops.convert_to_numpy(task.loss({"ego_motion": ego}, preds)), 0.0, atol=1e-10)
    preds["translation"] = np.zeros((2, 3), np.float32)
    np.testing.assert_allclose(ops.convert_to_numpy(task.loss({"ego_motion": ego}, preds)), 1.0, atol=1e-6)


def test_supervised_training_learns_forward_motion(tmp_path):
    data = synthetic_dataset("sim", 16, seed=5, height=32, width=64, with_next=True,
                             keys=["image", "image_next", "ego_motion"])
    trainer = TaskTrainer(MotionTask(learning_rate=3e-3), workdir=str(tmp_path), dedicated=data, eval_data=data,
                          batch_size=8, checkpoint_every=0, summary_every=0)
    before = trainer.evaluate(write=False)
    losses = [trainer.train_step()["total"] for _ in range(40)]
    after = trainer.evaluate(write=False)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert after["translation_error_m"] < before["translation_error_m"]
    assert after["forward_fraction"] == 1.0
    panels = trainer.task.summary_images(*_first(data, trainer))
    assert panels["motion/frames_and_object_motion"].shape == (4, 32, 128, 3)


def _first(data, trainer):
    batch = next(iter(data.batch(4)))
    preds = trainer.predict(batch)
    return {k: v.numpy() for k, v in batch.items()}, {k: v.numpy() for k, v in preds.items()}
