"""3D object detection with box flow in point-cloud sequences (Taskology Sec. 3.2.2, 4.2).

Data contract (one unbatched example = a window of ``n_f`` LiDAR frames; batching adds ``B``;
the same as ``data.lidar_sequence.SEQUENCE_KEYS``, which the readers and the synthetic world write):

=====================  ====================  =======  ==========================================================
key                    shape                 dtype    meaning
=====================  ====================  =======  ==========================================================
``points``             [n_f, P, 4]           float32  x, y, z (metres), intensity; padding rows 0
``points_mask``        [n_f, P]              float32  1 = real point, 0 = padding
``boxes``              [n_f, N, 7]           float32  x, y, z, length, width, height, heading; padding rows 0
``box_mask``           [n_f, N]              float32  1 = real labelled box, 0 = padding / unlabelled frame
``track_ids``          [n_f, N]              int64    object track id (same object, same id in every frame); -1 pad
``labelled``           [n_f]                 float32  1 = the frame's boxes are labels; 0 = unlabelled frame
``num_points_in_box``  [n_f, N]              int32    optional, for the metrics' LEVEL_1/LEVEL_2 split
``id``                 []                    int64    stable example id
=====================  ====================  =======  ==========================================================

Conventions. Frames are ordered oldest first; frame ``n_f - 1`` is the *current* frame (frames 0.5 s
apart in the paper). The points and boxes of *every* frame are expressed in the current frame's
sensor/vehicle frame (x forward, y left, z up; ego motion removed), so one BEV grid serves all frames
and box flow is object motion only. ``P`` and ``N`` are fixed per dataset (padding) so that ``tf.data``
batches; the network takes any ``P``. Only vehicles are boxes (one class). Label fractions (the paper's
5 % / 20 %): an unlabelled frame has ``labelled`` 0 and ``box_mask`` 0 and feeds only the consistency
relation; an example without any labelled frame has a supervised loss of 0.

Outputs (``models.pointpillars``), on the output grid [H, W] with n_a anchors per cell:
``class_logits`` [B, H, W, n_a, n_f], ``residuals`` [B, H, W, n_a, n_f, 7] (``box_coding``),
``direction_logits`` [B, H, W, n_a, n_f] and/or ``box_flow`` [B, H, W, n_a, n_f - 1, 3]
(flow_x, flow_y metres, flow_theta radians of a box of the current frame to the frame k steps back,
at index k - 1).

Targets are computed inside ``loss`` with keras.ops (``box_coding.match_anchors``), so the data
pipeline only carries boxes. Loss per example (PointPillars, normalised by the example's positive
anchors over its labelled frames):
    class_weight * focal(alpha 0.25, gamma 2) over positive and negative anchors
  + box_weight * smooth-L1(residuals; heading as sin of the difference) over positives
  + direction_weight * binary cross-entropy of the direction logit over positives
  + flow_weight * smooth-L1(box_flow - target flow) over positives of the current frame whose object
    (track id) is labelled k frames back; the target is that object's displacement (x, y) and heading
    change from the current frame to the earlier one, normalised by the number of such (anchor, k).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import gin
import keras
import numpy as np
from keras import ops

from taskology_tf.core.registry import register_task
from taskology_tf.core.task import Task
from taskology_tf.models.pointpillars import HEADS, build_pointpillars, get_config
from taskology_tf.tasks import box_coding as bc

# The example contract (unbatched): key -> (shape, dtype, meaning). "n_f", "P", "N" are per-dataset sizes.
EXAMPLE_KEYS = {
    "points": (("n_f", "P", 4), "float32", "x, y, z (current frame's sensor/vehicle frame, metres), intensity"),
    "points_mask": (("n_f", "P"), "float32", "1 = real point, 0 = padding"),
    "boxes": (("n_f", "N", 7), "float32", "x, y, z, length, width, height, heading (current frame's frame)"),
    "box_mask": (("n_f", "N"), "float32", "1 = real labelled box, 0 = padding or unlabelled frame"),
    "track_ids": (("n_f", "N"), "int64", "track id of each box; -1 = padding"),
    "labelled": (("n_f",), "float32", "1 = the frame's boxes are labels, 0 = unlabelled frame"),
    "num_points_in_box": (("n_f", "N"), "int32", "optional: LiDAR points inside each box (metrics difficulty)"),
    "id": ((), "int64", "stable example id"),
}
INPUT_KEYS = ("points", "points_mask")
LABEL_KEYS = ("boxes", "box_mask", "track_ids", "labelled")
DETECTION_OUTPUTS = ("class_logits", "residuals", "direction_logits")
FLOW_OUTPUTS = ("box_flow",)

# Anchor centre height by preset: Waymo's vehicle frame has the ground at z ~ 0; the "small"/"tiny"
# presets target the synthetic world, whose points are in a sensor frame 1.8 m above the ground.
ANCHOR_Z = {"paper": bc.VEHICLE_Z_WAYMO, "small": -1.8 + 0.85, "tiny": -1.8 + 0.85}


# --- loss pieces (keras.ops, pure) --------------------------------------------------------------------


def sigmoid_focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0):
    """Element-wise focal loss -alpha_t (1 - p_t)^gamma log(p_t) of sigmoid ``logits`` (same shape as targets 0/1)."""
    logits = ops.cast(logits, "float32")
    targets = ops.cast(targets, "float32")
    ce = ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))
    p = ops.sigmoid(logits)
    p_t = targets * p + (1.0 - targets) * (1.0 - p)
    alpha_t = targets * alpha + (1.0 - targets) * (1.0 - alpha)
    return alpha_t * ops.power(1.0 - p_t, gamma) * ce


def smooth_l1(x, beta: float = 1.0 / 9.0):
    """Element-wise Huber-style smooth L1 of a difference ``x``: 0.5 x^2 / beta if |x| < beta else |x| - beta / 2."""
    ax = ops.abs(x)
    return ops.where(ax < beta, 0.5 * ops.square(x) / beta, ax - 0.5 * beta)


def binary_cross_entropy_with_logits(logits, targets):
    logits = ops.cast(logits, "float32")
    return ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))


def frames_first(x):
    """[B, H, W, n_a, n_f, ...] -> [B, n_f, H, W, n_a, ...]."""
    rank = len(x.shape)
    return ops.transpose(x, (0, 4, 1, 2, 3) + tuple(range(5, rank)))


def flow_targets(boxes, box_mask, track_ids):
    """Per current-frame box, its displacement to each earlier frame (the box-flow labels).

    boxes [B, n_f, N, 7], box_mask [B, n_f, N] (0/1, already zero for unlabelled frames), track_ids
    [B, n_f, N]. Returns (targets [B, N, n_f - 1, 3] = (x_prev - x_cur, y_prev - y_cur,
    wrap(theta_prev - theta_cur)), valid [B, N, n_f - 1] float 0/1), index k - 1 = k frames back.
    """
    nf = boxes.shape[1]
    boxes = ops.cast(boxes, "float32")
    mask = ops.cast(box_mask, "float32") > 0.5
    ids = ops.cast(track_ids, "int64")
    cur, cur_ids, cur_mask = boxes[:, nf - 1], ids[:, nf - 1], mask[:, nf - 1]
    targets, valid = [], []
    for k in range(1, nf):
        p = nf - 1 - k
        same = ops.logical_and(ops.equal(cur_ids[:, :, None], ids[:, p][:, None, :]),
                               ops.logical_and(cur_mask[:, :, None], mask[:, p][:, None, :]))
        same = ops.logical_and(same, (cur_ids >= 0)[:, :, None])  # [B, N, N]
        has = ops.any(same, axis=-1)
        j = ops.argmax(ops.cast(same, "int32"), axis=-1)
        prev = ops.take_along_axis(boxes[:, p], ops.repeat(j[..., None], 7, axis=-1), axis=1)  # [B, N, 7]
        d = ops.stack([prev[..., 0] - cur[..., 0], prev[..., 1] - cur[..., 1], bc.wrap_angle(prev[..., 6] - cur[..., 6])], axis=-1)
        targets.append(d)
        valid.append(ops.cast(has, "float32"))
    return ops.stack(targets, axis=2), ops.stack(valid, axis=2)


def in_grid(boxes, grid):
    """[...] bool: box centres (boxes [..., 7]) inside the x-y extent of ``grid`` (a ``BevGrid``); keras.ops."""
    x, y = boxes[..., 0], boxes[..., 1]
    return ops.logical_and(ops.logical_and(x >= grid.x_min, x < grid.x_max), ops.logical_and(y >= grid.y_min, y < grid.y_max))


@register_task("detection")
@gin.configurable
class DetectionTask(Task):
    """PointPillars vehicle detection on ``n_f``-frame point-cloud windows, with a box-flow head.

    Args:
      name: task name.
      preset: ``models.pointpillars.PRESETS`` name ("tiny", "small", "paper").
      heads: ("detection", "flow") one network with both (the flow head on the shared features),
        ("detection",) a single-frame detector, ("flow",) a separate flow network (a peer of a
        detection-only task; its loss is the flow term only).
      frames: n_f (None: the preset's, 3).
      max_pillars, max_points_per_pillar: override the preset's pillarisation sizes.
      grid: override fields of the preset's pillar grid (a dict of ``BevGrid`` fields, e.g.
        ``{"cell_size": 0.4, "width": 40, "height": 40, "x_min": -8.0, "y_min": -8.0}``).
      network: override other ``PointPillarsConfig`` fields of the preset (a dict, e.g.
        ``{"pillar_channels": 32, "block_channels": (32, 64, 64), "up_channels": (32, 32, 32)}``).
      bn_momentum: BatchNormalization momentum (None: the preset's, 0.99).
      anchor_size: (length, width, height) metres; anchor_z: centre height (None: ``ANCHOR_Z[preset]``);
      anchor_headings: radians (n_a = their number).
      positive_iou, negative_iou, match_radius: anchor matching (see ``box_coding``).
      regress_ignored: also train the box and direction of the anchors that are neither positive nor
        negative (IoU in [negative_iou, positive_iou)) towards their box of largest IoU. Their class logits are
        not supervised, so they can fire; without this their boxes are never trained (ladder step (a)).
      class_weight, box_weight, direction_weight, flow_weight: loss weights (PointPillars: 1, 2, 0.2).
      focal_alpha, focal_gamma, smooth_l1_beta: loss shapes.
      learning_rate: Adam (PointPillars: 2e-4).
      lr_decay_steps, lr_final_fraction: > 0: the rate follows a cosine from ``learning_rate`` down to
        ``lr_final_fraction`` of it over that many steps (set it to the run's steps); 0: constant.
      score_threshold, nms_iou, max_boxes, pre_nms_top_k: decoding for evaluation and pictures.
      metric_iou: IoU of a true positive (Waymo vehicles: 0.7).
      eval_frames: "current" (each window's latest frame; every frame of a sequence once) or "all".
    """

    input_keys = INPUT_KEYS
    label_keys = LABEL_KEYS
    loss_kinds: dict[str, str] = {}

    def __init__(
        self,
        name: str = "detection",
        preset: str = "tiny",
        heads: Sequence[str] = HEADS,
        frames: int | None = None,
        max_pillars: int | None = None,
        max_points_per_pillar: int | None = None,
        grid: dict | None = None,
        network: dict | None = None,
        bn_momentum: float | None = None,
        anchor_size: Sequence[float] = bc.VEHICLE_SIZE,
        anchor_z: float | None = None,
        anchor_headings: Sequence[float] = (0.0, math.pi / 2),
        positive_iou: float = 0.6,
        negative_iou: float = 0.45,
        match_radius: float = 3.0,
        regress_ignored: bool = False,
        class_weight: float = 1.0,
        box_weight: float = 2.0,
        direction_weight: float = 0.2,
        flow_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        smooth_l1_beta: float = 1.0 / 9.0,
        learning_rate: float = 2e-4,
        lr_decay_steps: int = 0,
        lr_final_fraction: float = 0.0,
        score_threshold: float = 0.05,
        nms_iou: float = 0.5,
        max_boxes: int = 100,
        pre_nms_top_k: int = 1000,
        metric_iou: float = 0.7,
        eval_frames: str = "current",
    ):
        super().__init__(name)
        heads = tuple(heads)
        if not heads or any(h not in HEADS for h in heads):
            raise ValueError(f"DetectionTask.heads must be a non-empty subset of {HEADS}, got {heads!r}.")
        if eval_frames not in ("current", "all"):
            raise ValueError(f"eval_frames must be 'current' or 'all', got {eval_frames!r}.")
        overrides = {"num_anchors": len(anchor_headings)}
        if frames is not None:
            overrides["frames"] = int(frames)
        if max_pillars is not None:
            overrides["max_pillars"] = int(max_pillars)
        if max_points_per_pillar is not None:
            overrides["max_points_per_pillar"] = int(max_points_per_pillar)
        if network:
            overrides.update({k: tuple(v) if isinstance(v, list) else v for k, v in dict(network).items()})
        if bn_momentum is not None:
            overrides["bn_momentum"] = float(bn_momentum)
        if grid:
            overrides["grid"] = dataclasses.replace(get_config(preset).grid, **dict(grid))
        self.preset = preset
        self.config = get_config(preset, **overrides)
        if "flow" in heads and self.config.frames < 2:
            raise ValueError(f"The flow head needs frames >= 2, got frames={self.config.frames}.")
        self.heads = heads
        if anchor_z is None:
            anchor_z = ANCHOR_Z.get(preset if isinstance(preset, str) else "", bc.VEHICLE_Z_WAYMO)
        self.anchor = bc.AnchorConfig(
            size=tuple(float(s) for s in anchor_size), z=float(anchor_z), headings=tuple(float(h) for h in anchor_headings),
            positive_iou=positive_iou, negative_iou=negative_iou, match_radius=match_radius,
        )
        self.regress_ignored = bool(regress_ignored)
        self.grid = self.config.output_grid
        self.anchors = bc.make_anchors(self.grid, self.anchor)  # [H, W, n_a, 7] numpy
        self.weights = {"class": class_weight, "box": box_weight, "direction": direction_weight, "flow": flow_weight}
        self.focal_alpha, self.focal_gamma, self.smooth_l1_beta = focal_alpha, focal_gamma, smooth_l1_beta
        self.learning_rate = learning_rate
        if lr_decay_steps < 0 or not 0.0 <= lr_final_fraction <= 1.0:
            raise ValueError(f"Need lr_decay_steps >= 0 and 0 <= lr_final_fraction <= 1, got {lr_decay_steps}, "
                             f"{lr_final_fraction}.")
        self.lr_decay_steps, self.lr_final_fraction = int(lr_decay_steps), float(lr_final_fraction)
        self.decode_args = dict(score_threshold=score_threshold, nms_iou=nms_iou, max_boxes=max_boxes,
                                pre_nms_top_k=pre_nms_top_k)
        self.metric_iou = metric_iou
        self.eval_frames = eval_frames
        keys = []
        if "detection" in heads:
            keys += ["class_logits", "residuals"] + (["direction_logits"] if self.config.direction_head else [])
        if "flow" in heads:
            keys += ["box_flow"]
        self.output_keys = tuple(keys)
        terms = (["class", "box"] + (["direction"] if self.config.direction_head else [])) if "detection" in heads else []
        terms += ["flow"] if "flow" in heads else []
        self.term_names = tuple(f"{name}_{t}" for t in terms)
        self.loss_kinds = {f"{name}_class": "classification", f"{name}_direction": "classification"}

    # --- network ------------------------------------------------------------------------------------
    def build_model(self) -> keras.Model:
        return build_pointpillars(self.name, self.config, self.heads)

    def validate_spec(self, element_spec) -> None:
        nf = self.config.frames
        for key, (shape, _, meaning) in EXAMPLE_KEYS.items():
            spec = element_spec.get(key)
            if spec is None or key in ("id",):
                continue
            got = tuple(spec.shape)
            if len(got) != len(shape) or (shape and shape[0] == "n_f" and got[0] not in (None, nf)):
                raise ValueError(
                    f"Task {self.name!r}: key {key!r} has shape {got}; expected {tuple(nf if d == 'n_f' else d for d in shape)} "
                    f"({meaning}) with n_f={nf} frames. Set {self.name}/DetectionTask.frames or the dataset's n_f."
                )

    # --- learning -----------------------------------------------------------------------------------
    def targets(self, batch):
        """Matched anchor targets of every frame: dict of [B, n_f, H, W, n_a(, ...)] tensors (no gradient)."""
        boxes = ops.cast(batch["boxes"], "float32")
        nf, n = boxes.shape[1], boxes.shape[2]
        labelled = ops.cast(batch["labelled"], "float32") > 0.5  # [B, n_f]
        mask = ops.logical_and(ops.cast(batch["box_mask"], "float32") > 0.5, labelled[..., None])
        flat_boxes = ops.reshape(boxes, (-1, n, 7))
        flat_mask = ops.reshape(mask, (-1, n))
        # Boxes centred outside the grid are not targets (the evaluation drops them too): anchors overlapping
        # them (IoU >= negative_iou) are neither positive nor negative, so firing on a partly visible
        # vehicle at the edge is not punished and no edge anchor is forced onto a box it cannot reach.
        inside = in_grid(flat_boxes, self.config.grid)
        match = bc.match_anchors(flat_boxes, ops.logical_and(flat_mask, inside), self.grid, self.anchor)
        outside_iou = bc.match_anchors(flat_boxes, ops.logical_and(flat_mask, ops.logical_not(inside)), self.grid,
                                       self.anchor)["iou"]
        match["negative"] = ops.logical_and(match["negative"], outside_iou < self.anchor.negative_iou)
        h, w, na = self.grid.height, self.grid.width, self.anchor.num_anchors
        # The box of largest IoU of every overlapping anchor (the matched box at positives).
        best = ops.maximum(match["best"], 0)
        gt = ops.take_along_axis(flat_boxes, ops.repeat(ops.reshape(best, (-1, h * w * na, 1)), 7, axis=-1), axis=1)
        gt = ops.reshape(gt, (-1, h, w, na, 7))
        anchors = ops.convert_to_tensor(self.anchors)
        regress = match["positive"]
        if self.regress_ignored:
            ignored = ops.logical_not(ops.logical_or(match["positive"], match["negative"]))
            regress = ops.logical_or(regress, ops.logical_and(ignored, match["best"] >= 0))
        out = {
            "positive": match["positive"], "negative": match["negative"], "assigned": match["assigned"],
            "regress": regress,
            "residuals": bc.encode_boxes(gt, anchors), "direction": bc.direction_target(gt, anchors),
        }
        out = {k: ops.reshape(v, (-1, nf) + tuple(v.shape[1:])) for k, v in out.items()}
        out["labelled"] = labelled
        return out

    def loss_terms(self, batch, predictions):
        t = self.targets(batch)
        positive = ops.cast(t["positive"], "float32")  # [B, n_f, H, W, n_a]
        num_pos = ops.maximum(ops.sum(positive, axis=(1, 2, 3, 4)), 1.0)  # [B]
        terms = {}
        if "detection" in self.heads:
            frame_labelled = ops.cast(t["labelled"], "float32")[:, :, None, None, None]  # [B, n_f, 1, 1, 1]
            care = ops.cast(ops.logical_or(t["positive"], t["negative"]), "float32") * frame_labelled
            logits = frames_first(predictions["class_logits"])
            focal = sigmoid_focal_loss(logits, positive, self.focal_alpha, self.focal_gamma) * care
            terms["class"] = ops.sum(focal, axis=(1, 2, 3, 4)) / num_pos
            regress = ops.cast(t["regress"], "float32")  # positives (and ignored anchors with regress_ignored)
            res = frames_first(predictions["residuals"])
            diff = res - t["residuals"]
            diff = ops.concatenate([diff[..., :6], ops.sin(diff[..., 6:7])], axis=-1)
            box = ops.sum(smooth_l1(diff, self.smooth_l1_beta), axis=-1) * regress
            terms["box"] = ops.sum(box, axis=(1, 2, 3, 4)) / num_pos
            if self.config.direction_head:
                dir_logits = frames_first(predictions["direction_logits"])
                bce = binary_cross_entropy_with_logits(dir_logits, t["direction"]) * regress
                terms["direction"] = ops.sum(bce, axis=(1, 2, 3, 4)) / num_pos
        if "flow" in self.heads:
            terms["flow"] = self._flow_loss(batch, predictions["box_flow"], t)
        return {f"{self.name}_{k}": self.weights[k] * v for k, v in terms.items()}

    def _flow_loss(self, batch, flow, t):
        """Smooth-L1 of the flow at current-frame positives whose object is labelled in the earlier frame: [B]."""
        nf = self.config.frames
        labelled = ops.cast(batch["labelled"], "float32")
        mask = ops.cast(batch["box_mask"], "float32") * labelled[..., None]
        targets, valid = flow_targets(batch["boxes"], mask, batch["track_ids"])  # [B, N, n_f-1, 3], [B, N, n_f-1]
        assigned = t["assigned"][:, nf - 1]  # [B, H, W, n_a]
        h, w, na = self.grid.height, self.grid.width, self.anchor.num_anchors
        index = ops.reshape(ops.maximum(assigned, 0), (-1, h * w * na, 1, 1))
        pairs = nf - 1
        per_anchor = ops.take_along_axis(targets, ops.broadcast_to(index, (ops.shape(index)[0], h * w * na, pairs, 3)), axis=1)
        ok = ops.take_along_axis(valid, ops.broadcast_to(ops.reshape(index, (-1, h * w * na, 1)), (ops.shape(index)[0], h * w * na, pairs)), axis=1)
        ok = ok * ops.reshape(ops.cast(assigned >= 0, "float32"), (-1, h * w * na, 1))
        pred = ops.reshape(ops.cast(flow, "float32"), (-1, h * w * na, pairs, 3))
        err = ops.sum(smooth_l1(pred - per_anchor, self.smooth_l1_beta), axis=-1) * ok
        return ops.sum(err, axis=(1, 2)) / ops.maximum(ops.sum(ok, axis=(1, 2)), 1.0)

    def loss(self, batch, predictions):
        """Per-example supervised loss [B]: the sum of ``loss_terms``; 0 for examples without labelled frames."""
        terms = list(self.loss_terms(batch, predictions).values())
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def make_optimizer(self):
        if self.lr_decay_steps:
            return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
                self.learning_rate, self.lr_decay_steps, alpha=self.lr_final_fraction))
        return keras.optimizers.Adam(self.learning_rate)

    # --- evaluation ---------------------------------------------------------------------------------
    def decode_frame(self, predictions, example: int, frame: int):
        """(boxes [K, 7], scores [K]) of one frame of one example of a numpy prediction batch."""
        direction = predictions.get("direction_logits")
        return bc.decode_detections(
            np.asarray(predictions["class_logits"])[example, ..., frame],
            np.asarray(predictions["residuals"])[example, :, :, :, frame],
            self.anchors,
            None if direction is None else np.asarray(direction)[example, ..., frame],
            **self.decode_args,
        )

    def make_metrics(self):
        return _DetectionAccumulator(self)

    def summary_images(self, batch, predictions):
        nf = self.config.frames
        panels = []
        for b in range(np.asarray(batch["points"]).shape[0]):
            pred = self.decode_frame(predictions, b, nf - 1)[0] if "class_logits" in predictions else np.zeros((0, 7))
            gt_mask = np.asarray(batch["box_mask"])[b, nf - 1] > 0.5
            panels.append(bev_picture(self.config.grid, np.asarray(batch["points"])[b, nf - 1],
                                      np.asarray(batch["points_mask"])[b, nf - 1] > 0.5,
                                      np.asarray(batch["boxes"])[b, nf - 1][gt_mask], pred))
        return {f"{self.name}/bev_points_gt_green_pred_red": np.stack(panels)}


class _DetectionAccumulator:
    """AP/APH (``metrics.detection.DetectionMetrics``) over the labelled evaluation frames (ground truths
    with centres inside the grid), plus the mean end-point error of the box flow at labelled objects
    (``flow_epe``, metres, x-y) when the task has a flow head."""

    def __init__(self, task: DetectionTask):
        from taskology_tf.metrics.detection import DetectionMetrics

        self.task = task
        self.metrics = DetectionMetrics(iou_threshold=task.metric_iou)
        self.flow_errors: list[float] = []

    def update(self, batch, predictions):
        nf = self.task.config.frames
        frames = [nf - 1] if self.task.eval_frames == "current" else list(range(nf))
        labelled = np.asarray(batch["labelled"]) > 0.5
        boxes = np.asarray(batch["boxes"])
        mask = np.asarray(batch["box_mask"]) > 0.5
        points_in = batch.get("num_points_in_box")
        for b in range(boxes.shape[0]):
            for f in frames:
                if not labelled[b, f]:
                    continue
                if "class_logits" in predictions:
                    pred_boxes, scores = self.task.decode_frame(predictions, b, f)
                    inside = self._in_grid(pred_boxes)  # as the ground truths: centres inside the grid
                    pred_boxes, scores = pred_boxes[inside], scores[inside]
                    keep = mask[b, f] & self._in_grid(boxes[b, f])
                    gt_points = None if points_in is None else np.asarray(points_in)[b, f][keep]
                    self.metrics.update(pred_boxes, scores, boxes[b, f][keep], gt_num_points=gt_points)
        if "box_flow" in predictions:
            self._flow_update(batch, np.asarray(predictions["box_flow"]))

    def _in_grid(self, boxes):
        """[N] bool: box centres inside the grid's x-y extent (the detector cannot see beyond it; ground truths and
        predictions centred outside are both left out, as the loss leaves them out)."""
        g = self.task.config.grid
        return (boxes[:, 0] >= g.x_min) & (boxes[:, 0] < g.x_max) & (boxes[:, 1] >= g.y_min) & (boxes[:, 1] < g.y_max)

    def _flow_update(self, batch, flow):
        """End-point error (x, y) of the flow at the cell of each labelled current-frame object, anchor of nearest heading."""
        task = self.task
        nf, grid = task.config.frames, task.grid
        labelled = np.asarray(batch["labelled"], np.float32)
        mask = np.asarray(batch["box_mask"], np.float32) * labelled[..., None]
        targets, valid = (np.asarray(ops.convert_to_numpy(x)) for x in
                          flow_targets(np.asarray(batch["boxes"], np.float32), mask, np.asarray(batch["track_ids"])))
        cur = np.asarray(batch["boxes"], np.float32)[:, nf - 1]
        headings = np.asarray(task.anchor.headings)
        for b in range(cur.shape[0]):
            for n in range(cur.shape[1]):
                if not valid[b, n].any():
                    continue
                col = int(np.floor((cur[b, n, 0] - grid.x_min) / grid.cell_size))
                row = int(np.floor((cur[b, n, 1] - grid.y_min) / grid.cell_size))
                if not (0 <= row < grid.height and 0 <= col < grid.width):
                    continue
                a = int(np.argmin(np.abs((cur[b, n, 6] - headings + np.pi / 2) % np.pi - np.pi / 2)))
                for k in np.flatnonzero(valid[b, n]):
                    self.flow_errors.append(float(np.linalg.norm(flow[b, row, col, a, k, :2] - targets[b, n, k, :2])))

    def result(self):
        out = self.metrics.result() if "detection" in self.task.heads else {}
        if "flow" in self.task.heads:
            out["flow_epe"] = float(np.mean(self.flow_errors)) if self.flow_errors else float("nan")
        return out


# --- pictures ---------------------------------------------------------------------------------------


def _draw_boxes(image, boxes, grid, colour, pixel):
    """Draw BEV outlines of boxes [K, 7] into image [Hp, Wp, 3] (row 0 = largest y; columns along x);
    colours combine by a per-channel maximum (ground truth green + prediction red = yellow)."""
    hp, wp = image.shape[:2]
    for box in np.asarray(boxes, np.float64).reshape(-1, 7):
        x, y, _, length, width, _, heading = box
        c, s = math.cos(heading), math.sin(heading)
        local = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1], [1, 1]], np.float64) * [length / 2, width / 2]
        corners = np.stack([x + c * local[:, 0] - s * local[:, 1], y + s * local[:, 0] + c * local[:, 1]], axis=1)
        for (x0, y0), (x1, y1) in zip(corners[:-1], corners[1:]):
            steps = int(max(abs(x1 - x0), abs(y1 - y0)) / pixel * 2) + 2
            xs, ys = np.linspace(x0, x1, steps), np.linspace(y0, y1, steps)
            cols = np.floor((xs - grid.x_min) / pixel).astype(int)
            rows = hp - 1 - np.floor((ys - grid.y_min) / pixel).astype(int)
            ok = (rows >= 0) & (rows < hp) & (cols >= 0) & (cols < wp)
            image[rows[ok], cols[ok]] = np.maximum(image[rows[ok], cols[ok]], colour)
        # Heading tick: centre to the front edge.
        xs = np.linspace(x, x + c * length / 2, 8)
        ys = np.linspace(y, y + s * length / 2, 8)
        cols = np.floor((xs - grid.x_min) / pixel).astype(int)
        rows = hp - 1 - np.floor((ys - grid.y_min) / pixel).astype(int)
        ok = (rows >= 0) & (rows < hp) & (cols >= 0) & (cols < wp)
        image[rows[ok], cols[ok]] = np.maximum(image[rows[ok], cols[ok]], colour)


def bev_picture(grid, points, points_mask, gt_boxes, pred_boxes, size: int = 256) -> np.ndarray:
    """[size, size * W / H, 3] float32 BEV panel: point density grey, ground truth green, predictions red
    (yellow where they coincide).

    Columns run along x (forward to the right), rows along y (left is up).
    """
    pixel = max(grid.width, grid.height) * grid.cell_size / size
    wp, hp = max(1, int(round(grid.width * grid.cell_size / pixel))), max(1, int(round(grid.height * grid.cell_size / pixel)))
    image = np.zeros((hp, wp, 3), np.float32)
    pts = np.asarray(points, np.float64)[np.asarray(points_mask, bool)]
    cols = np.floor((pts[:, 0] - grid.x_min) / pixel).astype(int)
    rows = hp - 1 - np.floor((pts[:, 1] - grid.y_min) / pixel).astype(int)
    ok = (rows >= 0) & (rows < hp) & (cols >= 0) & (cols < wp)
    density = np.zeros((hp, wp), np.float32)
    np.add.at(density, (rows[ok], cols[ok]), 1.0)
    image[:] = (np.minimum(density, 4.0) / 4.0 * 0.7)[..., None]
    _draw_boxes(image, gt_boxes, grid, (0.0, 1.0, 0.0), pixel)
    _draw_boxes(image, pred_boxes, grid, (1.0, 0.0, 0.0), pixel)
    return image
