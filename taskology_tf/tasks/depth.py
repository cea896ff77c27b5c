"""Monocular depth: a U-Net on a ResNet encoder, squared error on valid pixels (Sec. 4.3)."""

from __future__ import annotations

import math

import gin
import keras
import numpy as np
from keras import ops

from taskology_tf.core.registry import register_task
from taskology_tf.core.task import Task
from taskology_tf.geometry.normals import normals_from_depth
from taskology_tf.metrics.accumulate import DepthMetrics, NormalsMetrics
from taskology_tf.models.unet import SIZE_MULTIPLE, build_dense_model, build_frame_pair_model, conv_head
from taskology_tf.tasks.dense import check_image_spec, colorize_depth, frame_keys, image_to_float, side_by_side


def masked_log_squared_error(pred, gt):
    """Per-example mean of (log pred - log gt)^2 over pixels with gt > 0; [B] (relative, scale-balanced)."""
    valid = ops.cast(gt > 0.0, pred.dtype)
    err = ops.square(ops.log(ops.maximum(pred, 1e-3)) - ops.log(ops.maximum(gt, 1e-3))) * valid
    return ops.sum(err, axis=(1, 2, 3)) / ops.maximum(ops.sum(valid, axis=(1, 2, 3)), 1.0)


def masked_squared_error(pred, gt):
    """Per-example mean of (pred - gt)^2 over pixels with gt > 0; [B]; 0 where nothing is labelled.

    pred, gt: [B, H, W, 1] metres.
    """
    valid = ops.cast(gt > 0.0, pred.dtype)
    err = ops.square(pred - gt) * valid
    return ops.sum(err, axis=(1, 2, 3)) / ops.maximum(ops.sum(valid, axis=(1, 2, 3)), 1.0)


LOSSES = {"squared": masked_squared_error, "log_squared": masked_log_squared_error}


@register_task("depth")
@gin.configurable
class DepthTask(Task):
    """Predicts ``depth`` [B, H, W, 1] (metres, softplus) from ``image``.

    Args:
      name: task name.
      preset: encoder preset ("tiny", "small", "resnet18", "resnet34", "resnet50").
      learning_rate: Adam learning rate of the task's own optimizer.
      initial_depth: depth the untrained network predicts everywhere (bias of the softplus head), metres.
      max_depth: evaluation cap in metres (None = no cap).
      median_scaling: evaluate with per-image median scaling (monocular, scale-free models).
      loss: "squared" (the paper's Sec. 4.3 MSE, metres^2) or "log_squared" (squared error of log depth).
      upsampling: decoder upsampling, "nearest" or "bilinear".
      norm: normalisation of encoder and decoder; None = the preset's (batch norm). "randomized_layer" is
        the depth-from-videos paper's choice (per-example statistics with multiplicative noise in training).
      frames: 1 (``image`` -> ``depth``) or 2 (``image``, ``image_next`` -> ``depth``, ``depth_next``,
        the same network on both frames, as the photometric relation between depth and motion needs).
    """

    input_keys = ("image",)
    label_keys = ("depth",)
    output_keys = ("depth",)
    image_size_multiple = SIZE_MULTIPLE

    def __init__(
        self,
        name: str = "depth",
        preset: str = "tiny",
        learning_rate: float = 1e-3,
        initial_depth: float = 10.0,
        max_depth: float | None = None,
        median_scaling: bool = False,
        loss: str = "squared",
        upsampling: str = "nearest",
        frames: int = 1,
        norm: str | None = None,
    ):
        super().__init__(name)
        self.frames = frames
        self.norm = norm
        self.input_keys, self.output_keys = frame_keys("DepthTask", frames, ("depth",))
        if loss not in LOSSES:
            raise ValueError(f"DepthTask.loss must be one of {sorted(LOSSES)}, got {loss!r}.")
        self.loss_name = loss
        self.upsampling = upsampling
        if initial_depth <= 0:
            raise ValueError(f"initial_depth must be positive metres, got {initial_depth}.")
        self.preset = preset
        self.learning_rate = learning_rate
        self.initial_depth = initial_depth
        self.max_depth = max_depth
        self.median_scaling = median_scaling

    def build_model(self) -> keras.Model:
        bias = math.log(math.expm1(self.initial_depth))  # softplus^-1
        head = conv_head(1, "softplus", name="depth", bias_initializer=keras.initializers.Constant(bias))
        model = build_dense_model(self.name, {"depth": head}, preset=self.preset, upsampling=self.upsampling,
                                  norm=self.norm)
        return build_frame_pair_model(model) if self.frames == 2 else model

    # GroundTruthPeer: unlabelled pixels (depth 0: sky) are answered at this distance, metres.
    far_depth = 1000.0

    @property
    def ground_truth_keys(self) -> tuple[str, ...]:
        return tuple(self.output_keys)  # depth (and depth_next): the labels are the true outputs

    def ground_truth(self, batch):
        """The depth labels [B, H, W, 1] metres, ``far_depth`` where unlabelled."""
        return {k: ops.where(ops.cast(batch[k], "float32") > 0, ops.cast(batch[k], "float32"), self.far_depth)
                for k in self.output_keys}

    def validate_spec(self, element_spec) -> None:
        check_image_spec(self.name, element_spec)

    def loss(self, batch, predictions):
        return LOSSES[self.loss_name](predictions["depth"], batch["depth"])

    def make_optimizer(self):
        return keras.optimizers.Adam(self.learning_rate)

    def make_metrics(self):
        return _DepthAccumulator(DepthMetrics(max_depth=self.max_depth, median_scaling=self.median_scaling))

    def summary_images(self, batch, predictions):
        valid = batch["depth"] > 0
        return {
            f"{self.name}/image_prediction_label": side_by_side(
                image_to_float(batch["image"]), colorize_depth(predictions["depth"]), colorize_depth(batch["depth"], valid)
            )
        }


# A pixel belongs to a moving object when its true object motion exceeds this, metres per frame.
MOVING_THRESHOLD = 0.01


def moving_pixels(object_motion):
    """[B, H, W, 3] true object translation of each pixel's point (metres per frame) -> bool [B, H, W, 1]."""
    return np.linalg.norm(np.asarray(object_motion, np.float64), axis=-1, keepdims=True) > MOVING_THRESHOLD


class _DepthAccumulator:
    """Depth errors; when the data also has normals and intrinsics, the accuracy of the normals
    derived from the predicted depth too (``derived_normals_*``, a diagnostic for the relation); when
    it has the true ``object_motion``, the errors on moving-object pixels and on the others separately
    (``moving_*``, ``static_*``; median scale from the whole image)."""

    def __init__(self, metrics: DepthMetrics):
        self.metrics = metrics
        self.derived = NormalsMetrics()
        self.regions = {name: DepthMetrics(metrics.min_depth, metrics.max_depth, metrics.median_scaling)
                        for name in ("moving", "static")}

    def update(self, batch, predictions):
        self.metrics.update(predictions["depth"], batch["depth"])
        if "object_motion" in batch:
            moving = moving_pixels(batch["object_motion"])
            self.regions["moving"].update(predictions["depth"], batch["depth"], region=moving)
            self.regions["static"].update(predictions["depth"], batch["depth"], region=~moving)
        if "normals" in batch and "intrinsics" in batch:
            derived = ops.convert_to_numpy(normals_from_depth(ops.convert_to_tensor(predictions["depth"]), ops.convert_to_tensor(batch["intrinsics"])))
            self.derived.update(derived, batch["normals"])

    def result(self):
        out = self.metrics.result()
        for name, metrics in self.regions.items():
            if metrics.num_images:
                out.update({f"{name}_{k}": v for k, v in metrics.result().items()})
                out[f"{name}_images"] = metrics.num_images
        if self.derived.num_pixels:
            out.update({f"derived_normals_{k}": v for k, v in self.derived.result().items()})
        return out
