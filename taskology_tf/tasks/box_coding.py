"""Anchors, box residual coding, anchor matching and decoding for the PointPillars detector (Sec. 3.2.2).

Boxes are ``[..., 7] = (x, y, z, length, width, height, heading)`` (metres, radians, heading from +x
counter-clockwise about +z; see ``geometry.boxes``).

Anchors. One anchor per output-grid cell and heading (``AnchorConfig.headings``, default 0 and pi/2,
n_a = 2): centred on the cell, at height ``z``, of one size (vehicles: 4.7 x 2.1 x 1.7 m).
``make_anchors(grid, anchor)`` -> [H, W, n_a, 7] numpy (rows along y, columns along x, as ``BevGrid``).

Residuals (SECOND / PointPillars coding), in the order of the box columns:
    dx = (x_g - x_a) / d_a,  dy = (y_g - y_a) / d_a,  dz = (z_g - z_a) / h_a,   d_a = sqrt(l_a^2 + w_a^2)
    dl = log(l_g / l_a),     dw = log(w_g / w_a),     dh = log(h_g / h_a)
    dtheta = fold(theta_g - theta_a) in [-pi/2, pi/2)
The heading residual is defined modulo pi (a box and its half-turn share a footprint): the loss uses
sin(dtheta_pred - dtheta_target) (SECOND's sine-error coding), and a direction classifier resolves
the half-turn: ``direction`` target 1 when wrap(theta_g - theta_a) lies outside [-pi/2, pi/2).
Decoding: theta = theta_a + fold(dtheta) + pi * [direction logit > 0], wrapped.

Matching (``match_anchors``, keras.ops, static shapes, usable inside the loss / ``tf.function``):
BEV IoU of each ground truth with the anchors of a window of cells around its centre
(``match_radius`` metres), computed as PointPillars/SECOND do for anchors: on the "nearest standup"
boxes (each box's heading rounded to the nearest multiple of pi/2, then an axis-aligned IoU). An anchor
is positive when its best IoU >= ``positive_iou`` (0.6 for vehicles) or when it is the best anchor of
some ground truth (force-matched, IoU > 0); negative when its best IoU < ``negative_iou`` (0.45) and
not positive; otherwise ignored. ``match_anchors_numpy`` is the dense reference (any IoU function,
e.g. the exact rotated ``geometry.boxes.bev_iou``).

This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import numpy as np
from keras import ops

from taskology_tf.geometry import boxes as boxes_geometry
from taskology_tf.models.pointpillars import BevGrid

VEHICLE_SIZE = (4.7, 2.1, 1.7)  # length, width, height (m): mean Waymo vehicle
VEHICLE_Z_WAYMO = 0.85  # anchor centre height in Waymo's vehicle frame (ground at z ~ 0): 0 + 1.7 / 2


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
    """Anchors of one class and the thresholds that match them to ground truth.

    size: (length, width, height) metres; z: anchor centre height (metres, in the points' frame);
    headings: anchor headings (radians), one anchor per heading and cell; positive_iou / negative_iou:
    matching thresholds; match_radius: ground truths are matched to anchors of cells within this many
    metres of their centre (in x and in y) - must cover every anchor that can reach ``negative_iou``.
    """

    size: tuple[float, float, float] = VEHICLE_SIZE
    z: float = VEHICLE_Z_WAYMO
    headings: tuple[float, ...] = (0.0, math.pi / 2)
    positive_iou: float = 0.6
    negative_iou: float = 0.45
    match_radius: float = 3.0

    def __post_init__(self):
        if len(self.size) != 3 or min(self.size) <= 0:
            raise ValueError(f"AnchorConfig.size must be 3 positive metres (length, width, height), got {self.size}.")
        if not self.headings:
            raise ValueError("AnchorConfig.headings must list at least one heading.")
        if not 0.0 <= self.negative_iou <= self.positive_iou <= 1.0:
            raise ValueError(
                f"Need 0 <= negative_iou <= positive_iou <= 1, got {self.negative_iou}, {self.positive_iou}."
            )
        if self.match_radius <= 0:
            raise ValueError(f"match_radius must be positive metres, got {self.match_radius}.")

    @property
    def num_anchors(self) -> int:
        return len(self.headings)

    @property
    def diagonal(self) -> float:
        return math.hypot(self.size[0], self.size[1])


# --- angles -----------------------------------------------------------------------------------------


# Angles wrapped to [-pi, pi) (any shape).
wrap_angle = functools.partial(boxes_geometry.wrap_angle, closed_below=True)


def fold_angle(a):
    """Angles folded to [-pi/2, pi/2), i.e. modulo pi (keras.ops; any shape)."""
    return a - math.pi * ops.floor((a + 0.5 * math.pi) / math.pi)


# --- anchors and coding -------------------------------------------------------------------------------


def make_anchors(grid: BevGrid, anchor: AnchorConfig = AnchorConfig()) -> np.ndarray:
    """[H, W, n_a, 7] float32 anchors of the (output) grid: cell centres, ``anchor.z``, size, heading."""
    xs, ys = grid.cell_centres()
    na = anchor.num_anchors
    out = np.zeros((grid.height, grid.width, na, 7), np.float32)
    out[..., 0] = np.asarray(xs, np.float32)[None, :, None]
    out[..., 1] = np.asarray(ys, np.float32)[:, None, None]
    out[..., 2] = anchor.z
    out[..., 3:6] = np.asarray(anchor.size, np.float32)
    out[..., 6] = np.asarray(anchor.headings, np.float32)
    return out


def encode_boxes(boxes, anchors):
    """Residuals [..., 7] of ``boxes`` w.r.t. ``anchors`` (both [..., 7], broadcast; keras.ops)."""
    boxes = ops.cast(boxes, "float32")
    anchors = ops.cast(anchors, "float32")
    diag = ops.sqrt(ops.square(anchors[..., 3]) + ops.square(anchors[..., 4]))
    sizes = ops.maximum(boxes[..., 3:6], 1e-3)
    return ops.concatenate(
        [
            ops.stack([(boxes[..., 0] - anchors[..., 0]) / diag, (boxes[..., 1] - anchors[..., 1]) / diag,
                       (boxes[..., 2] - anchors[..., 2]) / anchors[..., 5]], axis=-1),
            ops.log(sizes / anchors[..., 3:6]),
            fold_angle(boxes[..., 6:7] - anchors[..., 6:7]),
        ],
        axis=-1,
    )


def direction_target(boxes, anchors):
    """1.0 where the box points backwards w.r.t. the anchor (wrap(theta_g - theta_a) outside [-pi/2, pi/2)),
    else 0.0: [...] float32."""
    d = wrap_angle(ops.cast(boxes[..., 6], "float32") - ops.cast(anchors[..., 6], "float32"))
    return ops.cast(ops.logical_or(d < -0.5 * math.pi, d >= 0.5 * math.pi), "float32")


def decode_residuals(residuals, anchors, direction_logits=None):
    """Boxes [..., 7] from residuals [..., 7] and anchors [..., 7] (broadcast; keras.ops).

    ``direction_logits`` [...] (> 0: the box points backwards w.r.t. its anchor) picks the half-turn;
    without it the heading stays within pi/2 of the anchor's. Headings are wrapped to [-pi, pi).
    """
    r = ops.cast(residuals, "float32")
    a = ops.cast(anchors, "float32")
    diag = ops.sqrt(ops.square(a[..., 3]) + ops.square(a[..., 4]))
    theta = a[..., 6] + fold_angle(r[..., 6])
    if direction_logits is not None:
        theta = theta + math.pi * ops.cast(ops.cast(direction_logits, "float32") > 0.0, "float32")
    return ops.concatenate(
        [
            ops.stack([a[..., 0] + r[..., 0] * diag, a[..., 1] + r[..., 1] * diag, a[..., 2] + r[..., 2] * a[..., 5]], axis=-1),
            a[..., 3:6] * ops.exp(r[..., 3:6]),
            wrap_angle(theta)[..., None],
        ],
        axis=-1,
    )


# --- matching ---------------------------------------------------------------------------------------


def standup_extents(length, width, heading):
    """Axis-aligned half extents (x, y) of the "nearest standup" box: the footprint turned to the nearest
    multiple of pi/2 (PointPillars' anchor-matching approximation). keras.ops, broadcast."""
    near_quarter = ops.abs(fold_angle(heading)) > 0.25 * math.pi  # closer to +-pi/2 than to 0 / pi
    half_x = 0.5 * ops.where(near_quarter, width, length)
    half_y = 0.5 * ops.where(near_quarter, length, width)
    return half_x, half_y


def standup_bev_iou(a, b):
    """"Nearest standup" BEV IoU of boxes a [..., 7] and b [..., 7] (broadcast) -> [...] (keras.ops).

    Exact for boxes whose headings are multiples of pi/2.
    """
    ax, ay = standup_extents(a[..., 3], a[..., 4], a[..., 6])
    bx, by = standup_extents(b[..., 3], b[..., 4], b[..., 6])
    ix = ops.maximum(ops.minimum(a[..., 0] + ax, b[..., 0] + bx) - ops.maximum(a[..., 0] - ax, b[..., 0] - bx), 0.0)
    iy = ops.maximum(ops.minimum(a[..., 1] + ay, b[..., 1] + by) - ops.maximum(a[..., 1] - ay, b[..., 1] - by), 0.0)
    inter = ix * iy
    union = 4.0 * ax * ay + 4.0 * bx * by - inter
    return ops.where(union > 0.0, inter / ops.maximum(union, 1e-12), 0.0)


def match_anchors(boxes, box_mask, grid: BevGrid, anchor: AnchorConfig = AnchorConfig()):
    """Match ground-truth boxes to the anchors of ``grid`` (keras.ops, static shapes; no gradient).

    Args:
      boxes: [B, N, 7] ground truth (padding rows anywhere).
      box_mask: [B, N] 1/True for real boxes.
      grid: the output grid of the anchors; anchor: anchor sizes, headings, thresholds.
    Returns dict of [B, H, W, n_a] tensors:
      ``assigned`` int32 index of the matched box (-1: none), ``positive`` / ``negative`` bool,
      ``iou`` float32 best standup IoU of the anchor, ``best`` int32 the box of largest IoU of every anchor
      that overlaps one (the forced box for force-matched anchors; -1: no overlap), also for anchors that are
      neither positive nor negative.
    """
    boxes = ops.stop_gradient(ops.cast(boxes, "float32"))
    valid = ops.cast(box_mask, "bool")
    shape = ops.shape(boxes)
    b, n = shape[0], shape[1]
    h, w, na, s = grid.height, grid.width, anchor.num_anchors, grid.cell_size
    r = max(0, int(math.ceil(anchor.match_radius / s)))
    offsets = np.arange(-r, r + 1)
    drow = np.repeat(offsets, offsets.size).astype(np.int32)  # [K]
    dcol = np.tile(offsets, offsets.size).astype(np.int32)
    k = drow.size

    col0 = ops.cast(ops.floor((boxes[..., 0] - grid.x_min) / s), "int32")  # [B, N]
    row0 = ops.cast(ops.floor((boxes[..., 1] - grid.y_min) / s), "int32")
    col0 = ops.clip(col0, -r - 1, w + r)  # far boxes cannot overflow; their windows stay outside
    row0 = ops.clip(row0, -r - 1, h + r)
    rows = row0[..., None] + drow  # [B, N, K]
    cols = col0[..., None] + dcol
    inside = ops.logical_and(ops.logical_and(rows >= 0, rows < h), ops.logical_and(cols >= 0, cols < w))
    inside = ops.logical_and(inside, valid[..., None])
    headings = np.asarray(anchor.headings, np.float32)
    cx = grid.x_min + (ops.cast(cols, "float32") + 0.5) * s
    cy = grid.y_min + (ops.cast(rows, "float32") + 0.5) * s
    ones = ops.ones_like(cx)[..., None] * ops.ones((na,), "float32")  # [B, N, K, n_a]
    anchors = ops.stack(
        [cx[..., None] * ones, cy[..., None] * ones, anchor.z * ones, anchor.size[0] * ones,
         anchor.size[1] * ones, anchor.size[2] * ones, headings * ones],
        axis=-1,
    )  # [B, N, K, n_a, 7]
    iou = standup_bev_iou(boxes[:, :, None, None, :], anchors)  # [B, N, K, n_a]
    inside4 = ops.broadcast_to(inside[..., None], ops.shape(iou))
    iou = ops.where(inside4, iou, -1.0)

    total = b * h * w * na  # the dump segment for pairs outside the grid
    example = ops.arange(b, dtype="int32")[:, None, None, None]
    ids = ((example * h + rows[..., None]) * w + cols[..., None]) * na + ops.arange(na, dtype="int32")
    ids = ops.where(inside4, ids, total)
    flat_ids = ops.reshape(ids, (-1,))
    flat_iou = ops.reshape(iou, (-1,))
    box_index = ops.broadcast_to(ops.arange(n, dtype="int32")[None, :, None, None], ops.shape(iou))
    flat_box = ops.reshape(box_index, (-1,))

    max_iou = ops.maximum(ops.segment_max(flat_iou, flat_ids, num_segments=total + 1), 0.0)  # [total + 1]
    pair_max = ops.take(max_iou, flat_ids, axis=0)
    is_best = ops.logical_and(flat_iou >= pair_max, flat_iou > 0.0)
    best_box = ops.segment_max(ops.where(is_best, flat_box, -1), flat_ids, num_segments=total + 1)
    best_box = ops.maximum(best_box, -1)

    # Force-match: the best anchor of every ground truth (with IoU > 0) is positive for it.
    per_box = ops.reshape(iou, (b, n, k * na))
    best_pair = ops.argmax(per_box, axis=-1)  # [B, N]
    best_pair_iou = ops.max(per_box, axis=-1)
    forced = ops.logical_and(valid, best_pair_iou > 0.0)
    best_pair_id = ops.take_along_axis(ops.reshape(ids, (b, n, k * na)), best_pair[..., None], axis=-1)[..., 0]
    forced_ids = ops.reshape(ops.where(forced, best_pair_id, total), (-1,))
    forced_box = ops.reshape(ops.where(forced, ops.arange(n, dtype="int32")[None, :], -1), (-1,))
    forced_box = ops.maximum(ops.segment_max(forced_box, forced_ids, num_segments=total + 1), -1)

    max_iou, best_box, forced_box = max_iou[:-1], best_box[:-1], forced_box[:-1]
    is_forced = forced_box >= 0
    assigned = ops.where(is_forced, forced_box, best_box)
    positive = ops.logical_or(is_forced, ops.logical_and(max_iou >= anchor.positive_iou, assigned >= 0))
    negative = ops.logical_and(max_iou < anchor.negative_iou, ops.logical_not(positive))
    out_shape = (b, h, w, na)
    return {
        "assigned": ops.reshape(ops.where(positive, assigned, -1), out_shape),
        "best": ops.reshape(ops.where(ops.logical_or(positive, max_iou > 0.0), assigned, -1), out_shape),
        "positive": ops.reshape(positive, out_shape),
        "negative": ops.reshape(negative, out_shape),
        "iou": ops.reshape(max_iou, out_shape),
    }


def match_anchors_numpy(
    anchors: np.ndarray,
    boxes: np.ndarray,
    anchor: AnchorConfig = AnchorConfig(),
    iou_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Dense numpy reference of ``match_anchors`` for one frame.

    anchors: [A, 7]; boxes: [N, 7] real boxes only; iou_fn(anchors, boxes) -> [A, N] (default: the
    standup IoU; ``geometry.boxes.bev_iou`` gives exact rotated IoU). Returns ``assigned`` [A] int
    (-1 none), ``positive``/``negative`` [A] bool, ``iou`` [A].
    """
    anchors = np.asarray(anchors, np.float64).reshape(-1, 7)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    a_count, n = anchors.shape[0], boxes.shape[0]
    if iou_fn is None:
        iou = np.asarray(standup_bev_iou(ops.convert_to_tensor(anchors[:, None, :].astype(np.float32)),
                                         ops.convert_to_tensor(boxes[None, :, :].astype(np.float32))))
        iou = np.asarray(ops.convert_to_numpy(iou), np.float64)
    else:
        iou = np.asarray(iou_fn(anchors, boxes), np.float64)
    if n == 0:
        return {"assigned": np.full(a_count, -1), "positive": np.zeros(a_count, bool),
                "negative": np.ones(a_count, bool), "iou": np.zeros(a_count)}
    max_iou = iou.max(axis=1)
    assigned = np.where(max_iou > 0, iou.argmax(axis=1), -1)
    positive = max_iou >= anchor.positive_iou
    for j in range(n):
        if iou[:, j].max() > 0:
            best = int(iou[:, j].argmax())
            assigned[best] = j
            positive[best] = True
    negative = (max_iou < anchor.negative_iou) & ~positive
    return {"assigned": np.where(positive, assigned, -1), "positive": positive, "negative": negative, "iou": max_iou}


# --- decoding for evaluation ------------------------------------------------------------------------


def decode_detections(
    class_logits,
    residuals,
    anchors,
    direction_logits=None,
    score_threshold: float = 0.05,
    nms_iou: float = 0.5,
    max_boxes: int = 100,
    pre_nms_top_k: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and scores of one frame after a score threshold, top-k and rotated NMS (numpy).

    class_logits [H, W, n_a], residuals [H, W, n_a, 7], anchors [H, W, n_a, 7], direction_logits
    [H, W, n_a] or None. Returns (boxes [K, 7] float32, scores [K] float32 in [0, 1]), best first.
    """
    from taskology_tf.geometry.boxes import rotated_nms

    logits = np.asarray(class_logits, np.float64).reshape(-1)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = np.flatnonzero(scores >= score_threshold)
    if keep.size > pre_nms_top_k:
        keep = keep[np.argsort(-scores[keep], kind="stable")[:pre_nms_top_k]]
    if keep.size == 0:
        return np.zeros((0, 7), np.float32), np.zeros((0,), np.float32)
    res = np.asarray(residuals, np.float32).reshape(-1, 7)[keep]
    anc = np.asarray(anchors, np.float32).reshape(-1, 7)[keep]
    direction = None if direction_logits is None else np.asarray(direction_logits, np.float32).reshape(-1)[keep]
    boxes = np.asarray(ops.convert_to_numpy(decode_residuals(res, anc, direction)), np.float64)
    boxes[:, 3:6] = np.clip(boxes[:, 3:6], 1e-3, 1e3)
    boxes = np.where(np.isfinite(boxes), boxes, 0.0)
    chosen = rotated_nms(boxes, scores[keep], nms_iou, max_output=max_boxes)
    return boxes[chosen].astype(np.float32), scores[keep][chosen].astype(np.float32)
