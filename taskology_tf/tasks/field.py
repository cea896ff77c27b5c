"""Field tasks: tiny networks that each predict one dense field of an example, for scaling studies.

A field task predicts a one-channel map [B, H, W, 1] computed from the example it sees:

    target = scale * box_mean_k(source) + offset

with ``source`` one of ``FIELD_SOURCES``:

    'inverse_depth'   1 / depth (1/m), where depth > 0 (label ``depth``; 0 = unlabelled)
    'log_depth'       log depth (log m), where depth > 0
    'gray'            luminance of the image in [0, 1] (BT.601 weights; no label needed)
    'red', 'green', 'blue'   one image channel in [0, 1]

and ``box_mean_k`` the mean over the labelled pixels of a k x k window (k odd; 1 = the field itself).
The network is ``models.plain_conv`` (under a thousand parameters by default), so many field tasks fit
on one CPU: the family exists to measure how collective training scales with the *number* of tasks
(``benchmarks/task_scaling.py``), tied by ``relations/field_consistency.py`` in a ring, a star or all pairs.

``field_tasks(count)`` names ``count`` of them (``field_0``, ``field_1``, ...) and registers each name,
for ``Experiment.tasks = @field_tasks()``; each is configured in its own gin scope
(``field_3/FieldTask.source = 'gray'``).
"""

from __future__ import annotations

import gin
import keras
import numpy as np
from keras import ops

from taskology_tf.core.registry import register_task
from taskology_tf.core.task import Task
from taskology_tf.models.plain_conv import build_plain_conv
from taskology_tf.tasks.dense import image_to_float, side_by_side

DEPTH_SOURCES = ("inverse_depth", "log_depth")
IMAGE_SOURCES = ("gray", "red", "green", "blue")
FIELD_SOURCES = DEPTH_SOURCES + IMAGE_SOURCES
_LUMA = (0.299, 0.587, 0.114)  # BT.601 luminance weights of R, G, B
_CHANNEL = {"red": 0, "green": 1, "blue": 2}


def source_field(batch, source: str):
    """(field [B, H, W, 1] float32, valid [B, H, W, 1] float32 0/1) of ``source`` (see the module doc).

    batch: ``depth`` [B, H, W, 1] metres (0 = unlabelled) for the depth sources, ``image`` uint8
    [B, H, W, 3] for the image sources.
    """
    if source in DEPTH_SOURCES:
        depth = ops.cast(batch["depth"], "float32")
        valid = ops.cast(depth > 0, "float32")
        safe = ops.where(depth > 0, depth, 1.0)
        field = 1.0 / safe if source == "inverse_depth" else ops.log(safe)
        return field * valid, valid
    if source in IMAGE_SOURCES:
        image = ops.cast(batch["image"], "float32") * (1.0 / 255.0)
        if source == "gray":
            field = ops.sum(image * ops.convert_to_tensor(_LUMA, "float32"), axis=-1, keepdims=True)
        else:
            c = _CHANNEL[source]
            field = image[..., c:c + 1]
        return field, ops.ones_like(field)
    raise ValueError(f"FieldTask.source must be one of {FIELD_SOURCES}, got {source!r}.")


def box_mean(field, valid, size: int):
    """(mean of ``field`` over the valid pixels of each ``size`` x ``size`` window, valid) [B, H, W, 1] each.

    A pixel is valid when its window holds a valid pixel; windows are cut at the image border.
    ``size`` 1 returns the inputs.
    """
    if size == 1:
        return field, valid
    kernel = ops.ones((size, size, 1, 1), "float32")
    total = ops.conv(field * valid, kernel, padding="same")
    count = ops.conv(valid, kernel, padding="same")
    has = ops.cast(count > 0.5, "float32")
    return total / ops.maximum(count, 1.0) * has, has


def field_target(batch, source: str, smooth: int = 1, scale: float = 1.0, offset: float = 0.0):
    """(target, valid) [B, H, W, 1] float32: ``scale * box_mean_smooth(source) + offset`` and where it is known."""
    field, valid = box_mean(*source_field(batch, source), smooth)
    return (scale * field + offset) * valid, valid


def masked_l1(pred, target, valid):
    """Per-example mean |pred - target| over valid pixels; [B] (0 for an example without valid pixels)."""
    err = ops.abs(ops.cast(pred, "float32") - target) * valid
    return ops.sum(err, axis=(1, 2, 3)) / ops.maximum(ops.sum(valid, axis=(1, 2, 3)), 1.0)


@register_task("field")
@gin.configurable
class FieldTask(Task):
    """Predicts one dense ``field`` [B, H, W, 1] of the example from ``image`` (see the module doc).

    Args:
      name: task name.
      source: the field, one of ``FIELD_SOURCES``.
      smooth: odd window size of the box mean applied to the source (1 = none).
      scale, offset: the target is ``scale * field + offset``.
      width, num_layers: the plain conv network's channels and hidden 3x3 layers.
      learning_rate: Adam learning rate of the task's own optimizer.
    """

    input_keys = ("image",)
    output_keys = ("field",)

    def __init__(self, name: str = "field", source: str = "inverse_depth", smooth: int = 1, scale: float = 1.0,
                 offset: float = 0.0, width: int = 8, num_layers: int = 2, learning_rate: float = 1e-3):
        super().__init__(name)
        if source not in FIELD_SOURCES:
            raise ValueError(f"{name}/FieldTask.source must be one of {FIELD_SOURCES}, got {source!r}.")
        if not isinstance(smooth, int) or smooth < 1 or smooth % 2 == 0:
            raise ValueError(f"{name}/FieldTask.smooth must be an odd window size >= 1, got {smooth!r}.")
        self.source, self.smooth = source, smooth
        self.scale, self.offset = float(scale), float(offset)
        self.width, self.num_layers = width, num_layers
        self.learning_rate = learning_rate
        # Labels: the depth sources read depth; the image sources need nothing beyond the input.
        self.label_keys = ("depth",) if source in DEPTH_SOURCES else ()

    @property
    def ground_truth_keys(self) -> tuple[str, ...]:
        return self.label_keys or ("image",)

    def target(self, batch):
        """(target, valid) of ``batch``, see ``field_target``."""
        return field_target(batch, self.source, self.smooth, self.scale, self.offset)

    def build_model(self) -> keras.Model:
        return build_plain_conv(self.name, {"field": 1}, width=self.width, num_layers=self.num_layers)

    def loss(self, batch, predictions):
        return masked_l1(predictions["field"], *self.target(batch))

    def ground_truth(self, batch):
        return {"field": self.target(batch)[0]}

    def make_optimizer(self):
        return keras.optimizers.Adam(self.learning_rate)

    def make_metrics(self):
        return _FieldAccumulator(self)

    def summary_images(self, batch, predictions):
        target, valid = (np.asarray(x) for x in self.target(batch))
        low, high = np.min(target), np.max(target)

        def grey(field):  # [B, H, W, 1] -> [B, H, W, 3] in [0, 1], the target's range
            return np.repeat(np.clip((field - low) / max(high - low, 1e-6), 0.0, 1.0), 3, axis=-1)

        return {f"{self.name}/image_prediction_label": side_by_side(
            image_to_float(np.asarray(batch["image"])), grey(np.asarray(predictions["field"])), grey(target) * valid)}


class _FieldAccumulator:
    """Mean absolute error over every valid pixel seen (``l1``, in the field's units)."""

    def __init__(self, task: FieldTask):
        self.task = task
        self.total = 0.0
        self.count = 0.0

    def update(self, batch, predictions):
        target, valid = (np.asarray(x, np.float64) for x in self.task.target(batch))
        self.total += float(np.sum(np.abs(np.asarray(predictions["field"], np.float64) - target) * valid))
        self.count += float(np.sum(valid))

    def result(self):
        return {"l1": self.total / max(self.count, 1.0)}


def field_task_name(prefix: str, index: int) -> str:
    return f"{prefix}_{index}"


@gin.configurable
def field_tasks(count: int = gin.REQUIRED, prefix: str = "field") -> list[str]:
    """Names of ``count`` field tasks, ``<prefix>_0 .. <prefix>_<count - 1>``, each registered as a ``FieldTask``.

    For ``Experiment.tasks = @field_tasks()``: the experiment then builds each in its own gin scope, so
    ``field_2/FieldTask.source = 'gray'`` configures one of them and ``FieldTask.smooth = 3`` all.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"field_tasks.count must be a positive whole number, got {count!r}.")
    if not prefix.isidentifier():
        raise ValueError(f"field_tasks.prefix must be a Python identifier (it becomes gin scopes), got {prefix!r}.")
    names = [field_task_name(prefix, i) for i in range(count)]
    for name in names:
        register_task(name)(FieldTask)
    return names
