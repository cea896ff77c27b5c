"""Semantic segmentation: NAS-FPN on a ResNet backbone, cross-entropy with ignore labels (Sec. 3.2.1, 4.1).

The network predicts per-pixel class logits ``segmentation_logits`` [B, H, W, C]
(float32) from ``image``; the class of a pixel is the argmax. ``movable_mask``
turns logits into the mask m of Eq. (2) (pixels whose argmax is a movable
class: cars, pedestrians, ...), which the depth-and-motion relation reads from
this task as a peer.
"""

from __future__ import annotations

from typing import Sequence

import gin
import keras
import numpy as np
from keras import ops

from taskology_tf.core.registry import register_task
from taskology_tf.core.task import Task
from taskology_tf.data.example import CLASS_NAMES, IGNORE_LABEL, MOVABLE_CLASSES
from taskology_tf.metrics.segmentation import SegmentationMetrics
from taskology_tf.models.nasfpn import SIZE_MULTIPLE, build_segmentation_model, check_image_size
from taskology_tf.models.unet import build_frame_pair_model
from taskology_tf.tasks.dense import colorize_labels, frame_keys, image_to_float, label_palette, side_by_side  # noqa: F401


def segmentation_cross_entropy(logits, labels, ignore_label: int = IGNORE_LABEL):
    """Per-example mean softmax cross-entropy over labelled pixels; [B] float32, 0 where none is labelled.

    logits: [B, H, W, C] (any float dtype; computed in float32).
    labels: int [B, H, W, 1] or [B, H, W]; ``ignore_label`` and any id outside [0, C) are ignored.
    """
    logits = ops.cast(logits, "float32")
    labels = ops.cast(labels, "int32")
    if len(labels.shape) == 4:
        labels = labels[..., 0]
    num_classes = logits.shape[-1]
    valid = ops.logical_and(ops.not_equal(labels, ignore_label), ops.logical_and(labels >= 0, labels < num_classes))
    safe = ops.where(valid, labels, ops.zeros_like(labels))
    nll = ops.sparse_categorical_crossentropy(safe, logits, from_logits=True)
    valid = ops.cast(valid, "float32")
    return ops.sum(nll * valid, axis=(1, 2)) / ops.maximum(ops.sum(valid, axis=(1, 2)), 1.0)


def movable_class_ids(class_names: Sequence[str] = CLASS_NAMES, movable_classes: Sequence[str] = MOVABLE_CLASSES) -> tuple[int, ...]:
    """Indices of ``movable_classes`` in ``class_names``."""
    unknown = [c for c in movable_classes if c not in class_names]
    if unknown:
        raise ValueError(f"Movable classes {unknown} are not among the class names {tuple(class_names)}.")
    return tuple(list(class_names).index(c) for c in movable_classes)


def movable_mask(logits, movable_ids: Sequence[int]):
    """Mask m of Eq. (2): 1 where argmax_c logits is a movable class, else 0; [B, H, W, 1] float32.

    logits: [B, H, W, C]; movable_ids: class indices (e.g. ``movable_class_ids()``). No gradient
    flows through the mask (argmax is piecewise constant; it is also wrapped in stop_gradient).
    """
    classes = ops.cast(ops.argmax(logits, axis=-1), "int32")[..., None]  # [B, H, W, 1]
    if len(movable_ids) == 0:
        return ops.zeros_like(ops.cast(classes, "float32"))
    ids = ops.convert_to_tensor(np.asarray(movable_ids, np.int32))
    mask = ops.any(ops.equal(classes, ids), axis=-1, keepdims=True)
    return ops.stop_gradient(ops.cast(mask, "float32"))


@register_task("segmentation")
@gin.configurable
class SegmentationTask(Task):
    """Predicts ``segmentation_logits`` [B, H, W, C] from ``image``; trained on ``segmentation`` labels.

    Args:
      name: task name.
      backbone: "tiny" (the project's tiny ResNet; CPU runs and tests) or "resnet50"
        (keras.applications ResNet-50: the paper's network), or "small", "resnet18", "resnet34".
      num_filters: NAS-FPN channels (None: the backbone's default; 256 for "resnet50").
      num_repeats: stacked NAS-FPN modules (None: the backbone's default; 5 for "resnet50").
      head_convs: 3x3 conv layers of the segmentation head.
      learning_rate: Adam learning rate of the task's own optimizer.
      backbone_weights: None, "imagenet" or a weights path (only for "resnet50").
      class_names: names of the classes (default: the example contract's ``CLASS_NAMES``).
      movable_classes: classes that may move (default: ``MOVABLE_CLASSES``); define ``movable_mask``
        and the ``miou_movable`` metric.
      pad_to_multiple: pad images to multiples of 128 inside the network (any image size works);
        if False, image sizes must be multiples of 128.
      frames: 1, or 2 for video relations: ``image``, ``image_next`` -> ``segmentation_logits``,
        ``segmentation_logits_next`` (one network; labelled single frames still train it).
    """

    input_keys = ("image",)
    label_keys = ("segmentation",)
    output_keys = ("segmentation_logits",)

    def __init__(
        self,
        name: str = "segmentation",
        backbone: str = "tiny",
        num_filters: int | None = None,
        num_repeats: int | None = None,
        head_convs: int = 2,
        learning_rate: float = 1e-3,
        backbone_weights: str | None = None,
        class_names: Sequence[str] = CLASS_NAMES,
        movable_classes: Sequence[str] = MOVABLE_CLASSES,
        pad_to_multiple: bool = True,
        frames: int = 1,
    ):
        super().__init__(name)
        self.frames = frames
        self.input_keys, self.output_keys = frame_keys("SegmentationTask", frames, ("segmentation_logits",))
        self.backbone = backbone
        self.num_filters = num_filters
        self.num_repeats = num_repeats
        self.head_convs = head_convs
        self.learning_rate = learning_rate
        self.backbone_weights = backbone_weights
        self.class_names = tuple(class_names)
        self.movable_classes = tuple(movable_classes)
        self.movable_ids = movable_class_ids(self.class_names, self.movable_classes)
        self.pad_to_multiple = pad_to_multiple

    @property
    def image_size_multiple(self) -> int | None:
        """Any size when the network pads to multiples of 128 itself; else multiples of 128."""
        return None if self.pad_to_multiple else SIZE_MULTIPLE

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build_model(self) -> keras.Model:
        model = self._build_single()
        return build_frame_pair_model(model) if self.frames == 2 else model

    def _build_single(self) -> keras.Model:
        return build_segmentation_model(
            self.name,
            self.num_classes,
            backbone=self.backbone,
            num_filters=self.num_filters,
            num_repeats=self.num_repeats,
            backbone_weights=self.backbone_weights,
            head_convs=self.head_convs,
            pad_to_multiple=self.pad_to_multiple,
        )

    def validate_spec(self, element_spec) -> None:
        spec = element_spec.get("image")
        if self.pad_to_multiple or spec is None or len(spec.shape) != 3:
            return
        try:
            check_image_size(spec.shape[0], spec.shape[1], SIZE_MULTIPLE)
        except ValueError as e:
            raise ValueError(f"Task {self.name!r}: {e} Or set pad_to_multiple=True.") from None

    # GroundTruthPeer: logits 10 on the labelled class, 0 elsewhere (softmax 1 - (C-1) e^-10; all 0 where ignored).
    ground_truth_logit = 10.0

    @property
    def ground_truth_keys(self) -> tuple[str, ...]:
        return ("segmentation", "segmentation_next") if self.frames == 2 else ("segmentation",)

    def ground_truth(self, batch):
        """Confident logits [B, H, W, C] of the labelled classes (uniform where the label is ignored)."""
        out = {}
        for label_key, logit_key in zip(self.ground_truth_keys, self.output_keys):
            labels = ops.cast(batch[label_key][..., 0], "int32")
            valid = ops.logical_and(labels >= 0, labels < self.num_classes)
            one_hot = ops.one_hot(ops.where(valid, labels, 0), self.num_classes)
            out[logit_key] = self.ground_truth_logit * one_hot * ops.cast(valid, "float32")[..., None]
        return out

    def loss(self, batch, predictions):
        return segmentation_cross_entropy(predictions["segmentation_logits"], batch["segmentation"])

    def make_optimizer(self):
        return keras.optimizers.Adam(self.learning_rate)

    def make_metrics(self):
        return _SegmentationAccumulator(SegmentationMetrics(self.num_classes, self.class_names, self.movable_classes))

    def movable_mask(self, predictions):
        """The mask m of Eq. (2) from this task's predictions; [B, H, W, 1] float32."""
        return movable_mask(predictions["segmentation_logits"], self.movable_ids)

    def summary_images(self, batch, predictions):
        predicted = np.argmax(np.asarray(predictions["segmentation_logits"]), axis=-1)
        return {
            f"{self.name}/image_prediction_label": side_by_side(
                image_to_float(np.asarray(batch["image"])),
                colorize_labels(predicted, self.class_names),
                colorize_labels(np.asarray(batch["segmentation"]), self.class_names),
            )
        }


class _SegmentationAccumulator:
    def __init__(self, metrics: SegmentationMetrics):
        self.metrics = metrics

    def update(self, batch, predictions):
        self.metrics.update(np.asarray(predictions["segmentation_logits"]), np.asarray(batch["segmentation"]))

    def result(self):
        return self.metrics.result()
