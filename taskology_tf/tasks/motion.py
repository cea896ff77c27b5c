"""Camera motion (and optionally object motion and intrinsics) from two frames (Sec. 3.2.1).

The network is depth-from-videos-in-the-wild's motion net (``models.motion``),
run in both directions. Usually trained without labels, through the photometric
relation with a depth task; with ``ego_motion`` labels it also has a supervised loss.
"""

from __future__ import annotations

import gin
import keras
import numpy as np
from keras import ops

from taskology_tf.core.registry import register_task
from taskology_tf.core.task import Task
from taskology_tf.metrics.motion import MotionMetrics
from taskology_tf.models.motion import build_motion_model
from taskology_tf.geometry.transforms import euler_angles, invert
from taskology_tf.relations.photometric import transform_from_motion
from taskology_tf.tasks.dense import image_to_float, side_by_side


@register_task("motion")
@gin.configurable
class MotionTask(Task):
    """Predicts ``rotation``/``translation`` [B, 3] (t -> t+1) and their ``*_backward`` (t+1 -> t).

    Args:
      name: task name.
      preset: encoder widths preset of ``models.motion`` ("tiny", "small", "paper") or a list of 7 ints.
      object_motion: also predict ``residual_translation`` fields [B, H, W, 3] (and ``*_backward``).
      learn_intrinsics: also predict ``intrinsics`` [B, 3, 3].
      learning_rate: Adam learning rate.
      rotation_scale, translation_scale: initial learned output scales (see ``models.motion``).
      frame_difference: the network also sees the difference of the frames (see ``models.motion``).
    """

    input_keys = ("image", "image_next")
    label_keys = ("ego_motion",)

    def __init__(
        self,
        name: str = "motion",
        preset="tiny",
        object_motion: bool = False,
        learn_intrinsics: bool = False,
        learning_rate: float = 2e-4,
        rotation_scale: float = 0.01,
        translation_scale: float = 0.01,
        frame_difference: bool = False,
    ):
        super().__init__(name)
        self.frame_difference = bool(frame_difference)
        self.preset = preset
        self.object_motion = bool(object_motion)
        self.learn_intrinsics = bool(learn_intrinsics)
        self.learning_rate = learning_rate
        self.rotation_scale = rotation_scale
        self.translation_scale = translation_scale
        keys = ["rotation", "translation", "rotation_backward", "translation_backward"]
        if self.object_motion:
            keys += ["residual_translation", "residual_translation_backward"]
        if self.learn_intrinsics:
            keys += ["intrinsics"]
        self.output_keys = tuple(keys)

    def build_model(self) -> keras.Model:
        return build_motion_model(self.name, self.preset, self.object_motion, self.learn_intrinsics,
                                  rotation_scale=self.rotation_scale, translation_scale=self.translation_scale,
                                  frame_difference=self.frame_difference)

    def loss(self, batch, predictions):
        """Squared error of the 3x4 part of the predicted vs true forward transform: [B] (mixes radians
        and metres; for motion labels, e.g. from odometry)."""
        pred = transform_from_motion(predictions["rotation"], predictions["translation"])
        gt = ops.cast(batch["ego_motion"], "float32")
        return ops.sum(ops.square(pred[:, :3, :] - gt[:, :3, :]), axis=(1, 2))

    @property
    def ground_truth_keys(self) -> tuple[str, ...]:
        keys = ("ego_motion",)
        if self.object_motion:
            keys += ("object_motion", "object_motion_backward")
        if self.learn_intrinsics:
            keys += ("intrinsics",)
        return keys

    def ground_truth(self, batch):
        """The true camera motion both ways (``ego_motion`` and its inverse as Euler angles and metres) and,
        with ``object_motion``, the true per-pixel object translation fields [B, H, W, 3] metres."""
        forward = ops.cast(batch["ego_motion"], "float32")
        out = {}
        for suffix, transform in (("", forward), ("_backward", invert(forward))):
            out[f"rotation{suffix}"] = euler_angles(transform[:, :3, :3])
            out[f"translation{suffix}"] = transform[:, :3, 3]
        if self.object_motion:
            out["residual_translation"] = ops.cast(batch["object_motion"], "float32")
            out["residual_translation_backward"] = ops.cast(batch["object_motion_backward"], "float32")
        if self.learn_intrinsics:
            out["intrinsics"] = ops.cast(batch["intrinsics"], "float32")
        return out

    def make_optimizer(self):
        return keras.optimizers.Adam(self.learning_rate)

    def make_metrics(self):
        return _MotionAccumulator()

    def summary_images(self, batch, predictions):
        panels = [image_to_float(batch["image"]), image_to_float(batch["image_next"])]
        if "residual_translation" in predictions:
            magnitude = np.linalg.norm(np.asarray(predictions["residual_translation"]), axis=-1, keepdims=True)
            top = np.maximum(magnitude.reshape(len(magnitude), -1).max(axis=1), 1e-6)[:, None, None, None]
            panels.append(np.repeat(magnitude / top, 3, axis=-1).astype(np.float32))
        return {f"{self.name}/frames_and_object_motion": side_by_side(*panels)}


class _MotionAccumulator:
    def __init__(self):
        self.metrics = MotionMetrics()

    def update(self, batch, predictions):
        pred = ops.convert_to_numpy(transform_from_motion(
            ops.convert_to_tensor(predictions["rotation"]), ops.convert_to_tensor(predictions["translation"])))
        self.metrics.update(pred, batch["ego_motion"])

    def result(self):
        return self.metrics.result()
