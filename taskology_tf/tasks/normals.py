"""Surface normals: a U-Net on a ResNet encoder, cosine loss on valid pixels (Sec. 4.3)."""

from __future__ import annotations

import gin
import keras
from keras import ops

from taskology_tf.core.registry import register_task
from taskology_tf.core.task import Task
from taskology_tf.geometry.normals import cosine_distance
from taskology_tf.metrics.accumulate import NormalsMetrics
from taskology_tf.models.unet import SIZE_MULTIPLE, build_dense_model, normals_head
from taskology_tf.tasks.dense import check_image_spec, colorize_normals, image_to_float, side_by_side


def normals_cosine_loss(pred, gt):
    """Per-example mean of 1 - cos(pred, gt) over labelled pixels (|gt| > 0.5); [B].

    pred, gt: [B, H, W, 3] camera-frame vectors.
    """
    valid = ops.cast(ops.sum(gt * gt, axis=-1, keepdims=True) > 0.25, pred.dtype)
    return cosine_distance(pred, gt, mask=valid)


@register_task("normals")
@gin.configurable
class NormalsTask(Task):
    """Predicts unit ``normals`` [B, H, W, 3] (camera frame) from ``image``.

    Args:
      name: task name.
      preset: encoder preset ("tiny", "small", "resnet18", "resnet34", "resnet50").
      learning_rate: Adam learning rate of the task's own optimizer.
      upsampling: decoder upsampling, "nearest" or "bilinear".
    """

    input_keys = ("image",)
    label_keys = ("normals",)
    output_keys = ("normals",)
    image_size_multiple = SIZE_MULTIPLE

    def __init__(self, name: str = "normals", preset: str = "tiny", learning_rate: float = 1e-3, upsampling: str = "nearest"):
        super().__init__(name)
        self.upsampling = upsampling
        self.preset = preset
        self.learning_rate = learning_rate

    def build_model(self) -> keras.Model:
        return build_dense_model(self.name, {"normals": normals_head(name="normals")}, preset=self.preset, upsampling=self.upsampling)

    def validate_spec(self, element_spec) -> None:
        check_image_spec(self.name, element_spec)

    def loss(self, batch, predictions):
        return normals_cosine_loss(predictions["normals"], batch["normals"])

    def make_optimizer(self):
        return keras.optimizers.Adam(self.learning_rate)

    def make_metrics(self):
        return _NormalsAccumulator()

    def summary_images(self, batch, predictions):
        return {
            f"{self.name}/image_prediction_label": side_by_side(
                image_to_float(batch["image"]), colorize_normals(predictions["normals"]), colorize_normals(batch["normals"])
            )
        }


class _NormalsAccumulator:
    def __init__(self):
        self.metrics = NormalsMetrics()

    def update(self, batch, predictions):
        self.metrics.update(predictions["normals"], batch["normals"])

    def result(self):
        return self.metrics.result()
