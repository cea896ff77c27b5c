"""Box-flow consistency of 3D detections in point clouds in time (Taskology Sec. 3.2.2).

For every cell i = (row, col) and anchor a of the current frame t (the last of n_f frames) and every
earlier frame t - k (k = 1 .. n_f - 1), the predicted box flow f = (flow_x, flow_y, flow_theta) (metres,
radians; from the current frame to frame t - k) connects the anchor to the anchor point
i' = (x', y', theta') ~ (x + flow_x, y + flow_y, theta_a + flow_theta) of frame t - k: the nearest cell
centre and the anchor of nearest heading (modulo pi). Frame t - k's predictions are read there and

    L_class    = (classlogit'(i') - classlogit(i))^2
    L_residual = sum_{j in x, y, theta} (dj' - dj - (flow_j - (j' - j)))^2 + sum_{j in z, l, w, h} (dj' - dj)^2
    L          = L_class + L_residual           (averaged over cells, anchors and k where i' is in the grid)

(flow_j - (j' - j)) is the quantisation remainder: the part of the flow the jump between anchor points
does not cover. Units: x, y remainders are divided by the anchor diagonal (the residuals' unit, see
``tasks.box_coding``); the theta difference is folded modulo pi (the heading residual is defined modulo
pi). Sign: with box_{t-k} = box_t + flow (the flow takes the current box to the earlier frame) the box
centres are x + d_a dx and x' + d_a dx', so x' + d_a dx' = x + d_a dx + flow_x gives
dx' - dx - (flow_x - (x' - x)) / d_a = 0. The paper prints the remainder with a "+"; with its own
definition of the flow that would not vanish for consistent predictions, so the sign above is used (the
two agree whenever the flow lands exactly on an anchor point).

``sampling="nearest"`` (default) is the paper's reading: values are gathered at i' (no gradient through
the choice of i'), and the flow receives its gradient through the remainder term. ``"bilinear"``
samples frame t - k's predictions at the continuous location x + flow (geometry.bilinear_sample, the
anchor still the nearest heading); the x, y remainders then vanish and the flow receives its gradient
through the interpolation weights.

``form="confident"`` (not in the paper) answers the two ways the paper's form was measured to fail at
CPU scale (benchmarks/table2_cpu.md): the squared logit difference is lowered by flattening every logit
towards one value (most cells are background), and the residual term pulls the flow of background
anchors wherever their arbitrary residuals agree, off the grid. Instead, each frame's class logit takes
the binary cross-entropy to the other frame's label where the other frame is confident (probability
>= ``confidence`` or <= 1 - ``confidence``; no gradient through that side's label), which sharpening
agreeing predictions lowers and flattening raises; and the residual term counts only pairs where either
frame confidently sees an object (probability >= ``confidence``), so the flow is supervised only where
there is a box to follow.

It reads one task whose network has both heads (``detection == flow``) or two peer tasks: a detector
(``class_logits``, ``residuals``) and a separate flow network (``box_flow``).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import gin
import numpy as np
from keras import ops

from taskology_tf.core.registry import register_relation
from taskology_tf.core.relation import Relation, weight_overrides
from taskology_tf.geometry.resample import bilinear_sample
from taskology_tf.models.pointpillars import PRESETS
from taskology_tf.tasks.box_coding import VEHICLE_SIZE, fold_angle

SAMPLINGS = ("nearest", "bilinear")
FORMS = ("paper", "confident")


def confident_agreement(logit, peer_logit, confidence: float):
    """Binary cross-entropy of ``logit`` to ``peer_logit``'s label where the peer is confident (sigmoid >=
    ``confidence`` or <= 1 - ``confidence``), else 0; no gradient through the peer. Same shape as ``logit``."""
    peer = ops.stop_gradient(ops.sigmoid(peer_logit))
    label = ops.cast(peer >= 0.5, "float32")
    confident = ops.cast(ops.maximum(peer, 1.0 - peer) >= confidence, "float32")
    # -log sigmoid(x) for label 1, -log(1 - sigmoid(x)) for label 0: softplus of the signed logit.
    return ops.softplus(logit * (1.0 - 2.0 * label)) * confident


def _check(name, x, rank, what):
    if len(x.shape) != rank:
        raise ValueError(f"box_flow relation: `{name}` must have shape {what}, got {tuple(x.shape)}.")


def box_flow_terms(
    predictions,
    detection_task: str = "detection",
    flow_task: str = "detection",
    cell_size: float = 0.32,
    anchor_size: Sequence[float] = VEHICLE_SIZE,
    anchor_headings: Sequence[float] = (0.0, math.pi / 2),
    sampling: str = "nearest",
    score_weighting: bool = False,
    grid_shape: tuple[int, int] | None = None,
    form: str = "paper",
    confidence: float = 0.9,
):
    """The relation's two terms per example: {"class": [B], "residual": [B]}.

    predictions: ``{detection_task: {"class_logits": [B, H, W, n_a, n_f], "residuals": [B, H, W, n_a, n_f, 7]},
    flow_task: {"box_flow": [B, H, W, n_a, n_f - 1, 3]}}``. cell_size: metres per output cell;
    anchor_size: (length, width, height) of the anchors (for the residual units); anchor_headings: the n_a
    anchor headings. score_weighting: weight each pair by sigmoid(max of the two class logits) (no gradient)
    so that background cells count less (off in the paper). grid_shape: (H, W) the predictions must have
    (None: not checked), a guard against a ``cell_size`` taken from the wrong preset. form: "paper" (squared
    differences on every pair) or "confident" (see the module docstring), with ``confidence`` in (0.5, 1].
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}.")
    if not 0.5 < confidence <= 1.0:
        raise ValueError(f"confidence must be in (0.5, 1], got {confidence}.")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}.")
    logits = ops.cast(predictions[detection_task]["class_logits"], "float32")
    residuals = ops.cast(predictions[detection_task]["residuals"], "float32")
    flow = ops.cast(predictions[flow_task]["box_flow"], "float32")
    _check("class_logits", logits, 5, "[B, H, W, n_a, n_f]")
    _check("residuals", residuals, 6, "[B, H, W, n_a, n_f, 7]")
    _check("box_flow", flow, 6, "[B, H, W, n_a, n_f - 1, 3]")
    _, h, w, na, nf = logits.shape
    if tuple(residuals.shape[1:]) != (h, w, na, nf, 7) or tuple(flow.shape[1:]) != (h, w, na, nf - 1, 3):
        raise ValueError(
            f"box_flow relation: shapes do not agree: class_logits {tuple(logits.shape)}, residuals "
            f"{tuple(residuals.shape)}, box_flow {tuple(flow.shape)} (expected [B, H, W, n_a, n_f(, 7)] and "
            "[B, H, W, n_a, n_f - 1, 3])."
        )
    if grid_shape is not None and (h, w) != tuple(grid_shape):
        raise ValueError(
            f"box_flow relation: predictions on a {h}x{w} grid, but the relation was set up for {tuple(grid_shape)} "
            f"cells of {cell_size} m; set box_flow.preset to the tasks' preset (or pass cell_size)."
        )
    if len(anchor_headings) != na:
        raise ValueError(f"box_flow relation: {len(anchor_headings)} anchor_headings for n_a={na} anchors in the predictions.")
    if nf < 2:
        raise ValueError(f"box_flow relation needs n_f >= 2 frames, got {nf}.")
    diag = math.hypot(anchor_size[0], anchor_size[1])
    headings = np.asarray(anchor_headings, np.float32)
    batch = ops.shape(logits)[0]

    col = ops.cast(ops.arange(w), "float32")[None, None, :, None]
    row = ops.cast(ops.arange(h), "float32")[None, :, None, None]
    cur_logit = logits[..., nf - 1]  # [B, H, W, n_a]
    cur_res = residuals[..., nf - 1, :]  # [B, H, W, n_a, 7]

    class_sum, res_sum, count, res_count = 0.0, 0.0, 0.0, 0.0
    for k in range(1, nf):
        p = nf - 1 - k
        fx, fy, ft = flow[..., k - 1, 0], flow[..., k - 1, 1], flow[..., k - 1, 2]  # [B, H, W, n_a]
        # Anchor of nearest heading (modulo pi) to theta_a + flow_theta, and the heading remainder.
        rel = fold_angle(ft[..., None] + headings[:, None] - headings[None, :])  # [B, H, W, n_a, n_a']
        a_next = ops.argmin(ops.abs(ops.stop_gradient(rel)), axis=-1)  # [B, H, W, n_a]
        rem_t = ops.take_along_axis(rel, a_next[..., None], axis=-1)[..., 0]  # fold(flow_t - (theta_a' - theta_a))
        fields = ops.concatenate([logits[..., p, None], residuals[..., p, :]], axis=-1)  # [B, H, W, n_a', 8]
        u = col + fx / cell_size  # continuous column / row of x + flow_x, y + flow_y
        v = row + fy / cell_size
        if sampling == "nearest":
            cu = ops.stop_gradient(ops.round(u))
            cv = ops.stop_gradient(ops.round(v))
            inside = ops.logical_and(ops.logical_and(cu >= 0, cu <= w - 1), ops.logical_and(cv >= 0, cv <= h - 1))
            ci = ops.cast(ops.clip(cu, 0, w - 1), "int32")
            ri = ops.cast(ops.clip(cv, 0, h - 1), "int32")
            example = ops.arange(batch, dtype="int32")[:, None, None, None]
            index = ((example * h + ri) * w + ci) * na + ops.cast(a_next, "int32")
            sampled = ops.take(ops.reshape(fields, (-1, 8)), ops.reshape(index, (-1,)), axis=0)
            sampled = ops.reshape(sampled, (batch, h, w, na, 8))
            valid = ops.cast(inside, "float32")
            pu, pv = cu, cv
        else:
            flat = ops.reshape(fields, (batch, h, w, na * 8))
            per_anchor, valids = [], []
            for a in range(na):
                values, ok = bilinear_sample(flat, ops.stack([u[..., a], v[..., a]], axis=-1), padding="zeros")
                per_anchor.append(ops.reshape(values, (batch, h, w, na, 8)))
                valids.append(ok[..., 0])
            sampled = ops.stack(per_anchor, axis=3)  # [B, H, W, n_a(source), n_a', 8]
            sampled = ops.take_along_axis(sampled, ops.reshape(a_next, (batch, h, w, na, 1, 1)), axis=4)[..., 0, :]
            valid = ops.stack(valids, axis=-1)
            pu, pv = u, v
        rem_x = (fx - (pu - col) * cell_size) / diag
        rem_y = (fy - (pv - row) * cell_size) / diag
        s_logit, s_res = sampled[..., 0], sampled[..., 1:]
        d = s_res - cur_res
        l_res = (ops.square(d[..., 0] - rem_x) + ops.square(d[..., 1] - rem_y)
                 + ops.square(fold_angle(d[..., 6] - rem_t)) + ops.sum(ops.square(d[..., 2:6]), axis=-1))
        weight = valid
        if score_weighting:
            weight = weight * ops.stop_gradient(ops.sigmoid(ops.maximum(s_logit, cur_logit)))
        if form == "paper":
            l_class = ops.square(s_logit - cur_logit)
            res_weight = weight
        else:
            l_class = confident_agreement(cur_logit, s_logit, confidence) + \
                confident_agreement(s_logit, cur_logit, confidence)
            seen = ops.sigmoid(ops.maximum(s_logit, cur_logit)) >= confidence
            res_weight = weight * ops.stop_gradient(ops.cast(seen, "float32"))
            res_count = res_count + ops.sum(res_weight, axis=(1, 2, 3))
        class_sum = class_sum + ops.sum(l_class * weight, axis=(1, 2, 3))
        res_sum = res_sum + ops.sum(l_res * res_weight, axis=(1, 2, 3))
        count = count + ops.sum(weight, axis=(1, 2, 3))
    count = ops.maximum(count, 1e-6 if score_weighting else 1.0)
    # The confident form averages the residual term over the pairs that see an object (0 when none does).
    res_count = count if form == "paper" else ops.maximum(res_count, 1.0)
    return {"class": class_sum / count, "residual": res_sum / res_count}


def box_flow_loss(inputs, predictions, class_weight: float = 1.0, residual_weight: float = 1.0, **kwargs):
    """Per-example consistency loss [B] = class_weight * L_class + residual_weight * L_residual
    (``inputs`` is unused; ``kwargs`` go to ``box_flow_terms``)."""
    terms = box_flow_terms(predictions, **kwargs)
    return class_weight * terms["class"] + residual_weight * terms["residual"]


@register_relation("box_flow")
@gin.configurable
def box_flow(
    detection: str = "detection",
    flow: str | None = None,
    weight: float = 1.0,
    detection_weight: float | None = None,
    flow_weight: float | None = None,
    preset: str = "paper",
    cell_size: float | None = None,
    anchor_size: Sequence[float] = VEHICLE_SIZE,
    anchor_headings: Sequence[float] = (0.0, math.pi / 2),
    sampling: str = "nearest",
    class_weight: float = 1.0,
    residual_weight: float = 1.0,
    score_weighting: bool = False,
    form: str = "paper",
    confidence: float = 0.9,
    start_step: int = 0,
    ramp_steps: int = 0,
) -> Relation:
    """The Sec. 3.2.2 relation between a detector and a box-flow predictor.

    Args:
      detection: the task predicting ``class_logits`` and ``residuals``.
      flow: the task predicting ``box_flow`` (None: the detection task itself, one network with both heads).
      weight: loss weight; ``detection_weight``/``flow_weight`` override it per task (two tasks only).
      preset: the tasks' ``models.pointpillars`` preset, which fixes the output cell size (and the grid size
        the predictions must have) ...
      cell_size: ... unless given here (metres per output cell; the grid size is then not checked).
      anchor_size, anchor_headings: the tasks' anchors (``DetectionTask.anchor_size``/``anchor_headings``).
      sampling: "nearest" (the paper: anchor point nearest to the flow's end, with the remainder term) or
        "bilinear" (sample at the flow's end).
      class_weight, residual_weight: weights of L_class and L_residual (the paper: 1, 1).
      score_weighting: weight pairs by the detection confidence (not in the paper).
      form, confidence: "paper" (squared differences) or "confident" (cross-entropy to the other frame's
        confident labels; residuals and flow only where an object is seen), see the module docstring.
      start_step, ramp_steps: warm-up of the relation's weight (see ``Relation``).
    """
    flow = detection if flow is None else flow
    grid_shape = None
    if cell_size is None:
        if preset not in PRESETS:
            raise ValueError(f"box_flow: unknown preset {preset!r}; known {sorted(PRESETS)} (or pass cell_size).")
        grid = PRESETS[preset].output_grid
        cell_size, grid_shape = grid.cell_size, (grid.height, grid.width)
    if sampling not in SAMPLINGS:
        raise ValueError(f"box_flow: sampling must be one of {SAMPLINGS}, got {sampling!r}.")
    if form not in FORMS:
        raise ValueError(f"box_flow.form must be one of {FORMS}, got {form!r}.")
    if not 0.5 < confidence <= 1.0:
        raise ValueError(f"box_flow.confidence must be in (0.5, 1], got {confidence}.")
    if flow == detection:
        reads = {detection: ("class_logits", "residuals", "box_flow")}
        overrides = weight_overrides({detection: detection_weight})
    else:
        reads = {detection: ("class_logits", "residuals"), flow: ("box_flow",)}
        overrides = weight_overrides({detection: detection_weight, flow: flow_weight})
    return Relation(
        name="box_flow",
        reads=reads,
        loss_fn=functools.partial(
            box_flow_loss,
            class_weight=class_weight,
            residual_weight=residual_weight,
            detection_task=detection,
            flow_task=flow,
            cell_size=float(cell_size),
            anchor_size=tuple(anchor_size),
            anchor_headings=tuple(anchor_headings),
            sampling=sampling,
            score_weighting=score_weighting,
            grid_shape=grid_shape,
            form=form,
            confidence=float(confidence),
        ),
        weight=weight,
        task_weights=overrides,
        start_step=start_step,
        ramp_steps=ramp_steps,
    )
