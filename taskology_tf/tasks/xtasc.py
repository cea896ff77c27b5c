"""Semantic segmentation + depth with learned cross-task consistency (XTasC-Net, Nakano et al.).

One network (``models.xtasc``: shared ResNet encoder, a decoder per task, two TTNets) is trained
on both labels. With task 1 = segmentation (s) and task 2 = depth (d), eq. (11) and (16):

    L_s = (1 - lambda_s) CE(y_hat_s, y_s)  + lambda_s CE(y_hat_{d->s}, target_s)      (eqs. 12, 13)
    L_d = (1 - lambda_d) L1(y_hat_d, y_d)  + lambda_d L1(y_hat_{s->d}, target_d)      (eqs. 14, 15)
    L   = omega_s L_s + omega_d L_d

with y_hat_{d->s} = TTNet_{d->s}(y_hat_d) and y_hat_{s->d} = TTNet_{s->d}(softmax(y_hat_s)), and by mode:

  "xtasc"  target_s = stop_gradient(argmax y_hat_s) ("hard", the reference code) or its softmax
           ("soft", eq. 13 read literally); target_d = stop_gradient(y_hat_d). No gradient reaches a
           branch through its own role as a target; the consistency term of task t trains the TTNet
           into t and, through the TTNet's input, the other task's decoder and the shared encoder.
  "align"  target_s = y_s, target_d = y_d (alignment loss, eq. 8): the transferred prediction
           is fitted to the labels.
  "mt"     Base MT-Net: lambda = 0, no TTNets.
  "st"     Base ST-Net: one task (``single_task``) with its direct loss only.

Pixels without labels (segmentation ``IGNORE_LABEL``, depth 0) never count in the direct
losses; by default (``consistency_mask="labels"``, as in the reference code) the consistency
terms use the same masks, ``"none"`` applies them to every pixel (eqs. 13, 15 as written).

How the TTNets are trained: as in the paper (Sec. IV, V-C) and its reference code, they are part
of the network and trained jointly, from scratch, by the consistency terms with the task's own
optimizer (``train_ttnets=True``). ``ttnet_weights`` initialises them from files (e.g. TTNets
pretrained on label pairs with ``models.ttnet.train_ttnet``), and ``train_ttnets=False`` then
keeps them frozen: only the encoder and decoders learn from the consistency terms.

Depth target (``depth_target``): "depth" predicts metres; "inverse" predicts 1/depth [1/m]
(proportional to disparity; the paper's Cityscapes target, whose raw range is unbounded at
the sky). The ``depth`` and ``depth_from_segmentation`` outputs are in the target's units.

``loss_terms`` gives the four per-example terms (``term_grouping="terms"``: ``segmentation``,
``depth``, ``segmentation_from_depth``, ``depth_from_segmentation``) or the two task losses L_s,
L_d (``"tasks"``: what the paper's uncertainty weighting acts on); ``loss`` is their fixed
combination above. Paper hyper-parameters: Adam 1e-4 halved every 80 (Cityscapes) / 60 (NYU)
epochs, lambda 0.01 (Cityscapes) / 1e-4 (NYU), 7 / 13 classes.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import gin
import keras
import numpy as np
from keras import ops

from taskology_tf.core.registry import register_task
from taskology_tf.core.task import Task
from taskology_tf.data.example import CLASS_NAMES, IGNORE_LABEL, MOVABLE_CLASSES
from taskology_tf.metrics.accumulate import DepthMetrics
from taskology_tf.metrics.segmentation import SegmentationMetrics
from taskology_tf.models.unet import SIZE_MULTIPLE
from taskology_tf.models.xtasc import VARIANTS, build_xtasc_model, load_ttnet_weights, variant_outputs
from taskology_tf.tasks.dense import check_image_spec, colorize_depth, colorize_labels, image_to_float, side_by_side

DEPTH_TARGETS = ("depth", "inverse")
CONSISTENCY_MASKS = ("labels", "none")
SEGMENTATION_CONSISTENCY = ("hard", "soft")
TERM_GROUPINGS = ("terms", "tasks")
KINDS = {
    "segmentation": "classification",
    "segmentation_from_depth": "classification",
    "depth": "regression",
    "depth_from_segmentation": "regression",
}


# --- pure loss functions -------------------------------------------------------------------------

def segmentation_valid(labels, num_classes: int, ignore_label: int = IGNORE_LABEL):
    """float32 [B, H, W]: 1 where the label is a class id in [0, C) other than ``ignore_label``."""
    labels = ops.cast(labels, "int32")
    if len(labels.shape) == 4:
        labels = labels[..., 0]
    valid = ops.logical_and(ops.not_equal(labels, ignore_label), ops.logical_and(labels >= 0, labels < num_classes))
    return ops.cast(valid, "float32")


def to_depth_target(depth, depth_target: str = "depth"):
    """Depth labels [B, H, W, 1] metres (0 = invalid) -> the target space: metres, or 1/metres; 0 stays 0."""
    if depth_target not in DEPTH_TARGETS:
        raise ValueError(f"depth_target must be one of {DEPTH_TARGETS}, got {depth_target!r}.")
    depth = ops.cast(depth, "float32")
    if depth_target == "depth":
        return depth
    valid = depth > 0.0
    return ops.where(valid, 1.0 / ops.where(valid, depth, ops.ones_like(depth)), ops.zeros_like(depth))


def masked_l1(pred, target, valid=None):
    """Per-example mean |pred - target| over ``valid`` pixels; [B]; 0 where none is valid.

    pred, target: [B, H, W, 1]; valid: float [B, H, W, 1] or [B, H, W] 0/1 (None = every pixel).
    """
    err = ops.abs(ops.cast(pred, "float32") - ops.cast(target, "float32"))[..., 0]
    if valid is None:
        return ops.mean(err, axis=(1, 2))
    valid = ops.cast(valid, "float32")
    if len(valid.shape) == 4:
        valid = valid[..., 0]
    return ops.sum(err * valid, axis=(1, 2)) / ops.maximum(ops.sum(valid, axis=(1, 2)), 1.0)


def cross_entropy(logits, target, valid=None):
    """Per-example mean softmax cross-entropy over ``valid`` pixels; [B]; 0 where none is valid.

    logits: [B, H, W, C]. target: int class ids [B, H, W(, 1)] (ids outside [0, C) must be masked by
    ``valid``) or float probabilities [B, H, W, C] (-sum_c p_c log softmax(logits)_c).
    valid: float [B, H, W(, 1)] 0/1 (None = every pixel).
    """
    logits = ops.cast(logits, "float32")
    num_classes = logits.shape[-1]
    if len(target.shape) == 4 and target.shape[-1] == num_classes and "float" in str(target.dtype):
        nll = -ops.sum(ops.cast(target, "float32") * ops.log_softmax(logits, axis=-1), axis=-1)
    else:
        labels = ops.cast(target, "int32")
        if len(labels.shape) == 4:
            labels = labels[..., 0]
        safe = ops.where(ops.logical_and(labels >= 0, labels < num_classes), labels, ops.zeros_like(labels))
        nll = ops.sparse_categorical_crossentropy(safe, logits, from_logits=True)
    if valid is None:
        return ops.mean(nll, axis=(1, 2))
    valid = ops.cast(valid, "float32")
    if len(valid.shape) == 4:
        valid = valid[..., 0]
    return ops.sum(nll * valid, axis=(1, 2)) / ops.maximum(ops.sum(valid, axis=(1, 2)), 1.0)


def xtasc_loss_terms(
    batch: Mapping,
    predictions: Mapping,
    mode: str = "xtasc",
    num_classes: int | None = None,
    *,
    single_task: str = "segmentation",
    depth_target: str = "depth",
    segmentation_consistency: str = "hard",
    consistency_mask: str = "labels",
    ignore_label: int = IGNORE_LABEL,
) -> dict:
    """The raw per-example terms [B] of the mode (module docstring), before any lambda/omega weighting.

    batch: ``segmentation`` int [B, H, W, 1], ``depth`` [B, H, W, 1] metres (0 = invalid), as the mode needs.
    predictions: the model outputs of the mode (``models.xtasc.variant_outputs``).
    Returns: a subset of ``segmentation``, ``depth``, ``segmentation_from_depth``, ``depth_from_segmentation``.
    """
    outputs = variant_outputs(mode, single_task)
    if segmentation_consistency not in SEGMENTATION_CONSISTENCY:
        raise ValueError(f"segmentation_consistency must be one of {SEGMENTATION_CONSISTENCY}, got {segmentation_consistency!r}.")
    if consistency_mask not in CONSISTENCY_MASKS:
        raise ValueError(f"consistency_mask must be one of {CONSISTENCY_MASKS}, got {consistency_mask!r}.")
    terms = {}
    if "segmentation" in outputs:
        logits = predictions["segmentation"]
        num_classes = num_classes or logits.shape[-1]
        labels = batch["segmentation"]
        seg_valid = segmentation_valid(labels, num_classes, ignore_label)
        terms["segmentation"] = cross_entropy(logits, labels, seg_valid)
    if "depth" in outputs:
        target = to_depth_target(batch["depth"], depth_target)
        depth_valid = ops.cast(target > 0.0, "float32")
        terms["depth"] = masked_l1(predictions["depth"], target, depth_valid)
    if "segmentation_from_depth" in outputs:
        if mode == "align":
            seg_target, seg_mask = labels, seg_valid
            depth_target_values, depth_mask = target, depth_valid
        else:
            direct = ops.stop_gradient(ops.cast(logits, "float32"))
            if segmentation_consistency == "hard":
                seg_target = ops.cast(ops.argmax(direct, axis=-1), "int32")
            else:
                seg_target = ops.softmax(direct, axis=-1)
            depth_target_values = ops.stop_gradient(ops.cast(predictions["depth"], "float32"))
            seg_mask = seg_valid if consistency_mask == "labels" else None
            depth_mask = depth_valid if consistency_mask == "labels" else None
        terms["segmentation_from_depth"] = cross_entropy(predictions["segmentation_from_depth"], seg_target, seg_mask)
        terms["depth_from_segmentation"] = masked_l1(predictions["depth_from_segmentation"], depth_target_values, depth_mask)
    return terms


def combine_task_losses(terms: Mapping, lambda_segmentation: float, lambda_depth: float) -> dict:
    """Eq. (11): the task losses L_s, L_d (those present) from the raw terms; missing transfers count 0."""
    out = {}
    for task, transfer, lam in (("segmentation", "segmentation_from_depth", lambda_segmentation),
                                ("depth", "depth_from_segmentation", lambda_depth)):
        if task in terms:
            out[task] = (1.0 - lam) * terms[task] + lam * terms[transfer] if transfer in terms else terms[task]
    return out


# --- the task ------------------------------------------------------------------------------------

@register_task("xtasc")
@gin.configurable
class XTasCTask(Task):
    """Segmentation + depth (+ TTNets) in one network; see the module docstring for losses and modes.

    Args:
      name: task name.
      mode: "xtasc", "align", "mt" or "st".
      single_task: the one task of mode "st" ("segmentation" or "depth").
      preset: encoder preset ("tiny", "small", "resnet18", "resnet34" = paper, "resnet50").
      class_names: segmentation classes (paper: the 7 Cityscapes categories / 13 NYU classes).
      movable_classes: classes of the ``miou_movable`` metric.
      depth_target: "depth" (metres) or "inverse" (1/metres, the paper's Cityscapes target).
      lambda_segmentation, lambda_depth: lambda_t of eq. (11) (paper: 0.01 Cityscapes, 1e-4 NYU);
        ignored (0) in modes "mt" and "st".
      segmentation_weight, depth_weight: omega_t of eq. (16) (equal weights by default; the paper's
        uncertainty weighting belongs to a loss weighting acting on ``loss_terms``).
      segmentation_consistency: "hard" (argmax target, reference code) or "soft" (softmax target).
      consistency_mask: "labels" or "none" (module docstring).
      term_grouping: "terms" (4 raw terms) or "tasks" (L_s, L_d) for ``loss_terms``.
      learning_rate: Adam learning rate (paper 1e-4).
      lr_halving_steps: halve the learning rate every this many steps (None: constant).
      train_ttnets: train the TTNets jointly (paper) or keep them frozen.
      ttnet_weights: optional {"depth_from_segmentation": path, "segmentation_from_depth": path} of
        ``.weights.h5`` files to initialise the TTNets from.
      initial_depth: metres the untrained network predicts (sets the depth output bias).
      depth_activation: "softplus" (positive) or "linear" (the paper's plain 1x1 conv).
      decoder_width, ttnet_widths: override the preset's sizes (paper: 128 and (64, 128, 256)).
      decoder_convs: 3x3 convs per decoder block (paper: 3).
      segmentation_input: what the seg->depth TTNet reads, "probabilities" or "logits".
      norm: override the encoder/decoder normalisation.
      max_depth: evaluation cap in metres for the metric-depth errors (None = no cap).
    """

    input_keys = ("image",)
    image_size_multiple = SIZE_MULTIPLE

    def __init__(
        self,
        name: str = "xtasc",
        mode: str = "xtasc",
        single_task: str = "segmentation",
        preset: str = "tiny",
        class_names: Sequence[str] = CLASS_NAMES,
        movable_classes: Sequence[str] = MOVABLE_CLASSES,
        depth_target: str = "depth",
        lambda_segmentation: float = 0.01,
        lambda_depth: float = 0.01,
        segmentation_weight: float = 1.0,
        depth_weight: float = 1.0,
        segmentation_consistency: str = "hard",
        consistency_mask: str = "labels",
        term_grouping: str = "terms",
        learning_rate: float = 1e-4,
        lr_halving_steps: int | None = None,
        train_ttnets: bool = True,
        ttnet_weights: Mapping[str, str] | None = None,
        initial_depth: float = 10.0,
        depth_activation: str = "softplus",
        decoder_width: int | None = None,
        decoder_convs: int = 3,
        ttnet_widths: Sequence[int] | None = None,
        segmentation_input: str = "probabilities",
        norm: str | None = None,
        max_depth: float | None = None,
    ):
        super().__init__(name)
        if mode not in VARIANTS:
            raise ValueError(f"XTasCTask.mode must be one of {VARIANTS}, got {mode!r}.")
        self.output_keys = variant_outputs(mode, single_task)
        for arg, value, allowed in (
            ("depth_target", depth_target, DEPTH_TARGETS),
            ("segmentation_consistency", segmentation_consistency, SEGMENTATION_CONSISTENCY),
            ("consistency_mask", consistency_mask, CONSISTENCY_MASKS),
            ("term_grouping", term_grouping, TERM_GROUPINGS),
        ):
            if value not in allowed:
                raise ValueError(f"XTasCTask.{arg} must be one of {allowed}, got {value!r}.")
        for arg, lam in (("lambda_segmentation", lambda_segmentation), ("lambda_depth", lambda_depth)):
            if not 0.0 <= lam <= 1.0:
                raise ValueError(f"XTasCTask.{arg} must be in [0, 1] (eq. 11), got {lam}.")
        if initial_depth <= 0:
            raise ValueError(f"XTasCTask.initial_depth must be positive metres, got {initial_depth}.")
        if lr_halving_steps is not None and lr_halving_steps < 1:
            raise ValueError(f"XTasCTask.lr_halving_steps must be >= 1 or None, got {lr_halving_steps}.")
        if ttnet_weights and mode not in ("align", "xtasc"):
            raise ValueError(f"XTasCTask: ttnet_weights given but mode {mode!r} has no TTNets.")
        self.mode = mode
        self.single_task = single_task
        self.preset = preset
        self.class_names = tuple(class_names)
        self.movable_classes = tuple(c for c in movable_classes if c in self.class_names)
        self.depth_target = depth_target
        with_transfer = mode in ("align", "xtasc")
        self.lambda_segmentation = float(lambda_segmentation) if with_transfer else 0.0
        self.lambda_depth = float(lambda_depth) if with_transfer else 0.0
        self.segmentation_weight = float(segmentation_weight)
        self.depth_weight = float(depth_weight)
        self.segmentation_consistency = segmentation_consistency
        self.consistency_mask = consistency_mask
        self.term_grouping = term_grouping
        self.learning_rate = learning_rate
        self.lr_halving_steps = lr_halving_steps
        self.train_ttnets = bool(train_ttnets)
        self.ttnet_weights = dict(ttnet_weights or {})
        self.initial_depth = float(initial_depth)
        self.depth_activation = depth_activation
        self.decoder_width = decoder_width
        self.decoder_convs = decoder_convs
        self.ttnet_widths = ttnet_widths
        self.segmentation_input = segmentation_input
        self.norm = norm
        self.max_depth = max_depth
        tasks = tuple(k for k in ("segmentation", "depth") if k in self.output_keys)
        self.label_keys = tasks
        self.loss_kinds = {k: v for k, v in KINDS.items() if k in self.output_keys}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def initial_target(self) -> float:
        """The untrained depth output in the target's units."""
        return self.initial_depth if self.depth_target == "depth" else 1.0 / self.initial_depth

    # --- network ----------------------------------------------------------------------------------
    def build_model(self) -> keras.Model:
        model = build_xtasc_model(
            self.num_classes, self.mode, self.preset, single_task=self.single_task,
            decoder_width=self.decoder_width, decoder_convs=self.decoder_convs, ttnet_widths=self.ttnet_widths,
            depth_activation=self.depth_activation, initial_depth=self.initial_target,
            depth_input_scale=1.0 / self.initial_target, segmentation_input=self.segmentation_input,
            norm=self.norm, train_ttnets=self.train_ttnets, name=self.name,
        )
        if self.ttnet_weights:
            load_ttnet_weights(model, self.ttnet_weights, freeze=not self.train_ttnets)
        return model

    def validate_spec(self, element_spec) -> None:
        check_image_spec(self.name, element_spec)

    # --- learning ---------------------------------------------------------------------------------
    def raw_loss_terms(self, batch, predictions) -> dict:
        """The four (or fewer) unweighted per-example terms [B]."""
        return xtasc_loss_terms(
            batch, predictions, self.mode, self.num_classes, single_task=self.single_task,
            depth_target=self.depth_target, segmentation_consistency=self.segmentation_consistency,
            consistency_mask=self.consistency_mask,
        )

    def loss_terms(self, batch, predictions) -> dict:
        terms = self.raw_loss_terms(batch, predictions)
        if self.term_grouping == "tasks":
            return combine_task_losses(terms, self.lambda_segmentation, self.lambda_depth)
        return terms

    def loss(self, batch, predictions):
        """omega_s L_s + omega_d L_d (eqs. 11, 16) per example [B]; the single term in mode "st"."""
        per_task = combine_task_losses(self.raw_loss_terms(batch, predictions), self.lambda_segmentation, self.lambda_depth)
        if self.mode == "st":
            return per_task[self.single_task]
        return self.segmentation_weight * per_task["segmentation"] + self.depth_weight * per_task["depth"]

    def make_optimizer(self):
        lr = self.learning_rate
        if self.lr_halving_steps:
            lr = keras.optimizers.schedules.ExponentialDecay(lr, self.lr_halving_steps, 0.5, staircase=True)
        return keras.optimizers.Adam(lr)

    # --- evaluation -------------------------------------------------------------------------------
    def to_metres(self, values) -> np.ndarray:
        """Depth in the target's units -> metres (numpy)."""
        values = np.asarray(values, np.float32)
        return values if self.depth_target == "depth" else 1.0 / np.maximum(values, 1e-6)

    def make_metrics(self):
        return XTasCMetrics(self)

    def summary_images(self, batch, predictions):
        panels = [image_to_float(np.asarray(batch["image"]))]
        if "segmentation" in predictions:
            predicted = np.argmax(np.asarray(predictions["segmentation"]), axis=-1)
            panels += [colorize_labels(predicted, self.class_names),
                       colorize_labels(np.asarray(batch["segmentation"]), self.class_names)]
        if "depth" in predictions:
            gt = np.asarray(batch["depth"])
            panels += [colorize_depth(self.to_metres(predictions["depth"])), colorize_depth(gt, gt > 0)]
        return {f"{self.name}/image_prediction_label": side_by_side(*panels)}


def _target_errors(pred, target) -> tuple[np.ndarray, np.ndarray]:
    """Per-image mean absolute and relative error over pixels with target > 0; NaN without any. [B] each."""
    pred = np.asarray(pred, np.float64)[..., 0]
    target = np.asarray(target, np.float64)[..., 0]
    valid = target > 0
    count = valid.sum(axis=(1, 2))
    diff = np.where(valid, np.abs(pred - target), 0.0)
    rel = np.where(valid, diff / np.where(valid, target, 1.0), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return diff.sum(axis=(1, 2)) / count, rel.sum(axis=(1, 2)) / count


class XTasCMetrics:
    """Accumulates the paper's metrics and diagnostics.

    ``result()``: ``miou``, ``miou_movable``, ``pixel_accuracy``, ``iou_<class>`` (segmentation);
    ``abs_err``, ``rel_err`` (depth, in the target's units, the paper's Abs Err / Rel Err, mean over
    images); the metric-depth errors of ``DepthMetrics`` in metres (``abs_rel``, ``rmse``, ``a1``, ...);
    and for the transferred predictions ``transfer_miou``, ``transfer_pixel_accuracy``,
    ``transfer_abs_err``, ``transfer_rel_err``.
    """

    def __init__(self, task: XTasCTask):
        self.task = task
        self.segmentation = SegmentationMetrics(task.num_classes, task.class_names, task.movable_classes)
        self.transfer_segmentation = SegmentationMetrics(task.num_classes, task.class_names, task.movable_classes)
        self.depth = DepthMetrics(max_depth=task.max_depth)
        self.errors: dict[str, list[np.ndarray]] = {k: [] for k in ("abs_err", "rel_err", "transfer_abs_err", "transfer_rel_err")}

    def update(self, batch, predictions):
        if "segmentation" in predictions:
            labels = np.asarray(batch["segmentation"])
            self.segmentation.update(np.asarray(predictions["segmentation"]), labels)
            if "segmentation_from_depth" in predictions:
                self.transfer_segmentation.update(np.asarray(predictions["segmentation_from_depth"]), labels)
        if "depth" in predictions:
            gt = np.asarray(batch["depth"], np.float32)
            target = np.asarray(to_depth_target(gt, self.task.depth_target))
            for prefix, key in (("", "depth"), ("transfer_", "depth_from_segmentation")):
                if key in predictions:
                    abs_err, rel_err = _target_errors(predictions[key], target)
                    self.errors[f"{prefix}abs_err"].append(abs_err)
                    self.errors[f"{prefix}rel_err"].append(rel_err)
            self.depth.update(self.task.to_metres(predictions["depth"]), gt)

    def result(self) -> dict[str, float]:
        out = {}
        if self.segmentation.num_pixels:
            out.update(self.segmentation.result())
        if self.transfer_segmentation.num_pixels:
            transfer = self.transfer_segmentation.result()
            out.update(transfer_miou=transfer["miou"], transfer_pixel_accuracy=transfer["pixel_accuracy"])
        for key, values in self.errors.items():
            if values:
                values = np.concatenate(values)
                values = values[~np.isnan(values)]
                out[key] = float(np.mean(values)) if values.size else float("nan")
        if self.depth.num_images:
            out.update(self.depth.result())
        return out
