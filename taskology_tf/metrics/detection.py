"""3D and BEV detection metrics as the Waymo Open Dataset defines them: AP, APH, LEVEL_1 / LEVEL_2 (numpy).

Boxes are [N, 7] = (x, y, z, length, width, height, heading) in the LiDAR/vehicle
frame (metres, radians; see ``taskology_tf.geometry.boxes``). Scores are
confidences in [0, 1]. All numbers returned are fractions in [0, 1] (the
paper's Table 2 reports them in %).

What is computed, following the official tool (``waymo_open_dataset/metrics``:
``detection_metrics.cc``, ``metrics_utils.cc``, ``matcher.cc``, default config of
``wod_detection_evaluator.py``):

* **Operating points.** For every score cutoff ``c`` in ``score_cutoffs``
  (default 0.00, 0.01, ..., 0.99, 1.00) the predictions with ``score >= c`` are
  matched to the ground truths of the same frame, and TP / FP / FN and the sum
  of heading accuracies are summed over all frames.
* **Matching** (per frame and cutoff). A pair can match when IoU >= the
  threshold (0.7 for vehicles; 3D IoU for the 3D metrics, rotated BEV IoU for
  the BEV ones). ``matcher="hungarian"`` (default, as the official tool) finds
  the one-to-one assignment that maximises the sum of IoUs over matchable pairs;
  it is solved exactly on each connected component of the "can match" graph
  (own implementation of the shortest-augmenting-path Hungarian algorithm; scipy
  is not a dependency). ``matcher="score_first"`` is the COCO-style alternative
  the tool also offers: predictions by decreasing score take the unmatched
  ground truth of largest IoU. The official tool rounds IoUs to integers before
  the Hungarian step; here they are used unrounded, which can only change which
  of two equally good assignments is chosen.
* **Difficulty.** A ground truth is LEVEL_2 when it is marked so
  (``difficulty == 2``) or has <= 5 LiDAR points in it (``num_points``), else
  LEVEL_1 (an UNKNOWN level 0 counts as LEVEL_1, as in the tool). Ground truths
  with ``num_points == 0`` are dropped before matching (``drop_empty_ground_truths``,
  as done for Waymo evaluation pipelines, e.g. OpenPCDet; set it False to keep them).
  Matching always uses all ground truths. At LEVEL_2 every unmatched ground
  truth is a FN. At LEVEL_1 an unmatched LEVEL_2 ground truth is not a FN and a
  prediction matched to it is not a FP — exactly as in the official tool, it
  counts as a TP (TP and FP are the same at both levels; only FN differ).
* **Heading accuracy** of a TP: ``1 - min(|dtheta|, 2 pi - |dtheta|) / pi`` in
  [0, 1] (a flip by pi scores 0, although the BEV/3D IoU of the flipped box is unchanged).
* **P/R per cutoff.** precision = TP / (TP + FP), APH precision = sum of heading
  accuracies / (TP + FP) (0 when TP + FP = 0); recall = TP / (TP + FN) (also for
  APH); a point with recall 0 gets precision 1.
* **AP** (``average_precision``): precisions are made monotone (at each recall
  the maximum precision at that or any higher recall), the curve is sampled at
  the measured recalls plus extra points so that neighbouring recalls are at
  most ``max_recall_delta`` = 0.05 apart, the recall-0 point takes the
  precision of the next one, and the area is integrated with the trapezoid
  rule. This reproduces ``ComputeMeanAveragePrecision`` of the official tool;
  it is slightly above the plain step-function area at precision drops (e.g.
  0.8417 instead of 0.8333 in the test case with recalls 0.5 / 1.0 at
  precisions 1 / 2/3).

Not implemented: no-label zones (predictions overlapping an NLZ are never FP in
the tool), range and velocity breakdowns, several object types at once (one
instance evaluates one class; keep one per class), ``min_precision`` /
``min_heading_accuracy`` (their defaults have no effect).

Checked against the analytic cases in tests/metrics/test_detection.py only: the
official ``waymo_open_dataset`` metric ops (``py_metrics_ops.detection_metrics``)
could not be run on the same boxes, because the ``waymo-open-dataset-tf-*``
wheels pin an old TensorFlow and cannot be installed beside this project's
TensorFlow/Keras 3 stack.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from taskology_tf.geometry.boxes import bev_iou, heading_difference, iou_3d

LEVEL_1 = 1
LEVEL_2 = 2
VEHICLE_IOU_THRESHOLD = 0.7
MAX_POINTS_LEVEL_2 = 5
DEFAULT_SCORE_CUTOFFS = tuple(round(i * 0.01, 2) for i in range(101))
DEFAULT_MAX_RECALL_DELTA = 0.05
BOX_TYPES = ("3d", "bev")
MATCHERS = ("hungarian", "score_first")

# Columns of the per-cutoff measurement arrays [C, 5].
_TP, _FP, _FN_L1, _FN_L2, _SUM_HA = range(5)


def _check_boxes(name: str, boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim == 1 and b.size == 0:
        b = b.reshape(0, 7)
    if b.ndim != 2 or b.shape[1] != 7:
        raise ValueError(
            f"`{name}` must have shape [N, 7] (x, y, z, length, width, height, heading), got shape {b.shape}."
        )
    return b


def _check_vector(name: str, x, n: int, dtype=np.float64) -> np.ndarray:
    x = np.asarray(x, dtype=dtype)
    if x.shape != (n,):
        raise ValueError(f"`{name}` must have shape [{n}] (one value per box), got shape {x.shape}.")
    return x


def difficulty_levels(num_boxes: int, difficulty=None, num_points=None,
                      max_points_level_2: int = MAX_POINTS_LEVEL_2) -> np.ndarray:
    """int64 [G] Waymo detection difficulty of G ground truths: 2 (LEVEL_2) when ``difficulty == 2``
    or ``num_points <= max_points_level_2``, else 1 (LEVEL_1; also for UNKNOWN = 0).

    difficulty: [G] ints in {0, 1, 2} or None (all LEVEL_1); num_points: [G] LiDAR points inside
    each box, or None (not used).
    """
    levels = np.full(num_boxes, LEVEL_1, np.int64)
    if difficulty is not None:
        d = _check_vector("gt_difficulty", difficulty, num_boxes, np.int64)
        bad = (d < 0) | (d > LEVEL_2)
        if np.any(bad):
            raise ValueError(f"`gt_difficulty` must hold 0 (unknown), 1 or 2, got {sorted(set(d[bad].tolist()))}.")
        levels[d == LEVEL_2] = LEVEL_2
    if num_points is not None:
        n = _check_vector("gt_num_points", num_points, num_boxes, np.int64)
        levels[n <= max_points_level_2] = LEVEL_2
    return levels


def heading_accuracy(pred_heading, gt_heading) -> np.ndarray:
    """Waymo heading accuracy ``1 - |smallest angle difference| / pi`` in [0, 1] (broadcast shapes)."""
    return np.clip(1.0 - heading_difference(pred_heading, gt_heading) / np.pi, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Matching.


def _hungarian_min_cost(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost assignment of every row of cost [n, m] (n <= m) to a distinct column.

    Shortest augmenting paths with row/column potentials, O(n^2 m). Returns int64 [n] column per row.
    """
    n, m = cost.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, np.int64)  # owner[j]: 1-based row assigned to column j (1-based); 0 = free
    way = np.zeros(m + 1, np.int64)
    for row in range(1, n + 1):
        owner[0] = row
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            free = np.flatnonzero(~used[1:]) + 1
            reduced = cost[i0 - 1, free - 1] - u[i0] - v[free]
            better = reduced < minv[free]
            minv[free[better]] = reduced[better]
            way[free[better]] = j0
            j1 = free[np.argmin(minv[free])]
            delta = minv[j1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    out = np.full(n, -1, np.int64)
    cols = np.flatnonzero(owner[1:]) + 1
    out[owner[cols] - 1] = cols - 1
    return out


def _max_weight_assignment(weight: np.ndarray) -> np.ndarray:
    """Row -> column (-1 = none) maximising the summed weight of weight [r, c] >= 0 (0 = no edge)."""
    r, c = weight.shape
    if r <= c:
        cols = _hungarian_min_cost(-weight)
        return np.where(weight[np.arange(r), cols] > 0, cols, -1)
    rows = _hungarian_min_cost(-weight.T)  # column -> row
    out = np.full(r, -1, np.int64)
    ok = weight[rows, np.arange(c)] > 0
    out[rows[ok]] = np.arange(c)[ok]
    return out


def _components(pi: np.ndarray, gj: np.ndarray, num_pred: int) -> list[np.ndarray]:
    """Edge-index groups of the connected components of the bipartite graph with edges (pi[e], gj[e])."""
    parent = {}

    def find(x):
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for p, g in zip(pi.tolist(), gj.tolist()):
        a, b = find(p), find(num_pred + g)
        if a != b:
            parent[a] = b
    roots = np.array([find(p) for p in pi.tolist()], np.int64)
    return [np.flatnonzero(roots == r) for r in np.unique(roots)]


def match_detections(iou, iou_threshold: float, scores=None, method: str = "hungarian") -> np.ndarray:
    """One-to-one matching of predictions to ground truths of one frame.

    iou: [P, G] IoU of each prediction with each ground truth; a pair can match when
    ``iou >= iou_threshold``. ``method="hungarian"`` maximises the summed IoU of the matched
    pairs; ``"score_first"`` visits predictions by decreasing ``scores`` [P] (required) and gives
    each the unmatched ground truth of largest IoU. Returns int64 [P]: matched ground-truth index,
    or -1.
    """
    iou = np.asarray(iou, dtype=np.float64)
    if iou.ndim != 2:
        raise ValueError(f"`iou` must have shape [P, G], got shape {iou.shape}.")
    if method not in MATCHERS:
        raise ValueError(f"`method` must be one of {MATCHERS}, got {method!r}.")
    num_pred, num_gt = iou.shape
    match = np.full(num_pred, -1, np.int64)
    if num_pred == 0 or num_gt == 0:
        return match
    can = iou >= iou_threshold
    if method == "score_first":
        if scores is None:
            raise ValueError("`scores` [P] are required for method='score_first'.")
        s = _check_vector("scores", scores, num_pred)
        taken = np.zeros(num_gt, bool)
        for p in np.argsort(-s, kind="stable"):
            options = np.flatnonzero(can[p] & ~taken)
            if options.size:
                g = options[np.argmax(iou[p, options])]
                match[p], taken[g] = g, True
        return match
    pi, gj = np.nonzero(can)
    if pi.size == 0:
        return match
    weight = np.where(can, iou, 0.0)
    if np.all(np.bincount(pi, minlength=num_pred) <= 1):  # stars around ground truths
        best = np.argmax(weight, axis=0)
        hit = can[best, np.arange(num_gt)]
        match[best[hit]] = np.flatnonzero(hit)
        return match
    if np.all(np.bincount(gj, minlength=num_gt) <= 1):  # stars around predictions
        best = np.argmax(weight, axis=1)
        hit = can[np.arange(num_pred), best]
        match[hit] = best[hit]
        return match
    for edges in _components(pi, gj, num_pred):
        rows, cols = np.unique(pi[edges]), np.unique(gj[edges])
        sub = _max_weight_assignment(weight[np.ix_(rows, cols)])
        ok = sub >= 0
        match[rows[ok]] = cols[sub[ok]]
    return match


# ----------------------------------------------------------------------------------------------
# Measurements and AP.


def frame_measurements(iou, pred_scores, pred_heading, gt_heading, gt_levels,
                       iou_threshold: float = VEHICLE_IOU_THRESHOLD,
                       score_cutoffs: Sequence[float] = DEFAULT_SCORE_CUTOFFS,
                       matcher: str = "hungarian") -> np.ndarray:
    """float64 [C, 5] per score cutoff: (TP, FP, FN at LEVEL_1, FN at LEVEL_2, sum of heading accuracy).

    iou [P, G] of the frame's predictions with its ground truths; pred_scores [P];
    pred_heading [P], gt_heading [G] radians; gt_levels [G] in {0, 1, 2}.
    """
    iou = np.asarray(iou, dtype=np.float64)
    if iou.ndim != 2:
        raise ValueError(f"`iou` must have shape [P, G], got shape {iou.shape}.")
    num_pred, num_gt = iou.shape
    scores = _check_vector("pred_scores", pred_scores, num_pred)
    pred_heading = _check_vector("pred_heading", pred_heading, num_pred)
    gt_heading = _check_vector("gt_heading", gt_heading, num_gt)
    levels = _check_vector("gt_levels", gt_levels, num_gt, np.int64)
    cutoffs = np.asarray(score_cutoffs, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    num_active = np.sum(scores[None, :] >= cutoffs[:, None], axis=1)  # preds >= cutoff = a prefix of `order`
    is_l1 = levels <= LEVEL_1
    out = np.zeros((cutoffs.size, 5))

    def counts(active: np.ndarray, match: np.ndarray) -> np.ndarray:
        hit = match >= 0
        gt_hit = np.zeros(num_gt, bool)
        gt_hit[match[hit]] = True
        ha = heading_accuracy(pred_heading[active[hit]], gt_heading[match[hit]]).sum()
        return np.array([hit.sum(), (~hit).sum(), np.sum(is_l1 & ~gt_hit), np.sum(~gt_hit), ha])

    if matcher == "score_first":
        # Greedy score-order matching of a prefix is the prefix of the full greedy matching.
        match = match_detections(iou[order], iou_threshold, scores[order], "score_first")
        for k in np.unique(num_active):
            out[num_active == k] = counts(order[:k], match[:k])
        return out
    if matcher != "hungarian":
        raise ValueError(f"`matcher` must be one of {MATCHERS}, got {matcher!r}.")
    for k in np.unique(num_active):
        active = order[:k]
        out[num_active == k] = counts(active, match_detections(iou[active], iou_threshold))
    return out


def _curves(tp, fp, fn, ha) -> dict[str, np.ndarray]:
    detections = tp + fp
    safe = np.where(detections > 0, detections, 1.0)
    precision = np.where(detections > 0, tp / safe, 0.0)
    precision_ha = np.where(detections > 0, ha / safe, 0.0)
    positives = tp + fn
    recall = np.where(positives > 0, tp / np.where(positives > 0, positives, 1.0), 0.0)
    precision = np.where(recall == 0, 1.0, precision)
    precision_ha = np.where(recall == 0, 1.0, precision_ha)
    return {"precision": precision, "precision_ha": precision_ha, "recall": recall}


def average_precision(precisions, recalls, max_recall_delta: float = DEFAULT_MAX_RECALL_DELTA) -> float:
    """Area under the monotone precision/recall curve, as Waymo's ``ComputeMeanAveragePrecision``.

    precisions, recalls: [C] operating points (any order). The envelope max_{r' >= r} p(r') is
    sampled at the given recalls, at recall 0, and at extra points filling gaps wider than
    ``max_recall_delta``; the recall-0 sample takes the precision of its neighbour; the samples
    are integrated with the trapezoid rule. Empty input gives 0.
    """
    p = np.asarray(precisions, dtype=np.float64).ravel()
    r = np.asarray(recalls, dtype=np.float64).ravel()
    if p.shape != r.shape:
        raise ValueError(f"`precisions` and `recalls` must have the same shape, got {p.shape} and {r.shape}.")
    if not 0.0 < max_recall_delta <= 1.0:
        raise ValueError(f"`max_recall_delta` must be in (0, 1], got {max_recall_delta}.")
    if p.size == 0:
        return 0.0
    best = {0.0: 1.0}
    for pi, ri in zip(p.tolist(), r.tolist()):
        best[ri] = max(best.get(ri, 0.0), pi)
    recall_desc = sorted(best, reverse=True)
    samples_r, samples_p = [], []
    last, running_max = recall_desc[-1], 0.0
    for ri in recall_desc:
        while last - ri > max_recall_delta + 1e-6:  # fill the gap with the envelope of higher recalls
            last -= max_recall_delta
            samples_r.append(last)
            samples_p.append(running_max)
        running_max = max(running_max, best[ri])
        samples_r.append(ri)
        samples_p.append(running_max)
        last = ri
    if len(samples_p) < 2:
        return 0.0
    samples_p[-1] = samples_p[-2]
    sr, sp = np.asarray(samples_r), np.asarray(samples_p)
    return float(np.sum(0.5 * (sr[:-1] - sr[1:]) * (sp[:-1] + sp[1:])))


class DetectionMetrics:
    """Waymo-style AP / APH accumulator for one object class, in 3D and BEV, at LEVEL_1 and LEVEL_2.

    ``update`` adds one frame; ``result()`` returns ``ap_3d_l1``, ``aph_3d_l1``, ``ap_bev_l1``,
    ``aph_bev_l1``, the same four with ``_l2``, and ``num_frames``, ``num_predictions``,
    ``num_gt_l1`` (ground truths of LEVEL_1), ``num_gt_l2`` (all kept ground truths). AP values
    are fractions in [0, 1]; NaN when no ground truth of that level was seen.

    Args:
      iou_threshold: IoU for a match (0.7 = Waymo vehicles; 0.5 for pedestrians / cyclists).
      score_cutoffs: confidence cutoffs of the P/R operating points (default 0, 0.01, ..., 1).
      max_recall_delta: largest recall gap of the AP integration (Waymo: 0.05).
      matcher: "hungarian" (official) or "score_first".
      max_points_level_2: ground truths with at most this many LiDAR points are LEVEL_2.
      drop_empty_ground_truths: ignore ground truths with ``num_points == 0``.
    """

    def __init__(self, iou_threshold: float = VEHICLE_IOU_THRESHOLD,
                 score_cutoffs: Sequence[float] = DEFAULT_SCORE_CUTOFFS,
                 max_recall_delta: float = DEFAULT_MAX_RECALL_DELTA,
                 matcher: str = "hungarian",
                 max_points_level_2: int = MAX_POINTS_LEVEL_2,
                 drop_empty_ground_truths: bool = True):
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"`iou_threshold` must be in (0, 1], got {iou_threshold}.")
        cutoffs = np.asarray(score_cutoffs, dtype=np.float64)
        if cutoffs.ndim != 1 or cutoffs.size == 0:
            raise ValueError(f"`score_cutoffs` must be a non-empty 1-D sequence, got shape {cutoffs.shape}.")
        if matcher not in MATCHERS:
            raise ValueError(f"`matcher` must be one of {MATCHERS}, got {matcher!r}.")
        if not 0.0 < max_recall_delta <= 1.0:
            raise ValueError(f"`max_recall_delta` must be in (0, 1], got {max_recall_delta}.")
        self.iou_threshold = float(iou_threshold)
        self.score_cutoffs = cutoffs
        self.max_recall_delta = float(max_recall_delta)
        self.matcher = matcher
        self.max_points_level_2 = int(max_points_level_2)
        self.drop_empty_ground_truths = bool(drop_empty_ground_truths)
        self.reset()

    def reset(self) -> None:
        """Forget every frame seen so far."""
        self.measurements = {t: np.zeros((self.score_cutoffs.size, 5)) for t in BOX_TYPES}
        self.num_frames = 0
        self.num_predictions = 0
        self.num_gt = {LEVEL_1: 0, LEVEL_2: 0}

    def update(self, pred_boxes, pred_scores, gt_boxes, gt_difficulty=None, gt_num_points=None) -> None:
        """Add one frame.

        pred_boxes [P, 7], pred_scores [P] in [0, 1] (after sigmoid/NMS); gt_boxes [G, 7];
        gt_difficulty [G] Waymo detection difficulty (0 unknown, 1, 2) or None; gt_num_points [G]
        LiDAR points inside each ground truth or None. Without either every ground truth is LEVEL_1.
        """
        pred = _check_boxes("pred_boxes", pred_boxes)
        gt = _check_boxes("gt_boxes", gt_boxes)
        scores = _check_vector("pred_scores", pred_scores, pred.shape[0])
        if scores.size and (np.nanmin(scores) < 0.0 or np.nanmax(scores) > 1.0 or np.any(np.isnan(scores))):
            raise ValueError(
                f"`pred_scores` must be confidences in [0, 1], got range [{scores.min()}, {scores.max()}]. "
                "Apply a sigmoid/softmax to logits first."
            )
        levels = difficulty_levels(gt.shape[0], gt_difficulty, gt_num_points, self.max_points_level_2)
        if gt_num_points is not None and self.drop_empty_ground_truths:
            keep = np.asarray(gt_num_points).reshape(-1) > 0
            gt, levels = gt[keep], levels[keep]
        for box_type, iou_fn in (("3d", iou_3d), ("bev", bev_iou)):
            self.measurements[box_type] += frame_measurements(
                iou_fn(pred, gt), scores, pred[:, 6], gt[:, 6], levels,
                self.iou_threshold, self.score_cutoffs, self.matcher)
        self.num_frames += 1
        self.num_predictions += int(pred.shape[0])
        self.num_gt[LEVEL_1] += int(np.sum(levels <= LEVEL_1))
        self.num_gt[LEVEL_2] += int(levels.size)

    def curves(self, box_type: str = "3d", level: int = LEVEL_2) -> dict[str, np.ndarray]:
        """Per-cutoff ``score_cutoffs``, ``precision``, ``precision_ha``, ``recall`` [C] and the summed
        ``tp``, ``fp``, ``fn``, ``sum_ha`` [C] for ``box_type`` ("3d" or "bev") at ``level`` (1 or 2)."""
        if box_type not in BOX_TYPES:
            raise ValueError(f"`box_type` must be one of {BOX_TYPES}, got {box_type!r}.")
        if level not in (LEVEL_1, LEVEL_2):
            raise ValueError(f"`level` must be {LEVEL_1} or {LEVEL_2}, got {level!r}.")
        m = self.measurements[box_type]
        fn = m[:, _FN_L1] if level == LEVEL_1 else m[:, _FN_L2]
        out = _curves(m[:, _TP], m[:, _FP], fn, m[:, _SUM_HA])
        out.update(score_cutoffs=self.score_cutoffs.copy(), tp=m[:, _TP].copy(), fp=m[:, _FP].copy(),
                   fn=fn.copy(), sum_ha=m[:, _SUM_HA].copy())
        return out

    def result(self) -> dict[str, float]:
        out = {}
        for level, suffix in ((LEVEL_1, "l1"), (LEVEL_2, "l2")):
            for box_type in BOX_TYPES:
                if self.num_gt[level] == 0:
                    ap = aph = float("nan")
                else:
                    c = self.curves(box_type, level)
                    ap = average_precision(c["precision"], c["recall"], self.max_recall_delta)
                    aph = average_precision(c["precision_ha"], c["recall"], self.max_recall_delta)
                out[f"ap_{box_type}_{suffix}"] = ap
                out[f"aph_{box_type}_{suffix}"] = aph
        out.update(num_frames=float(self.num_frames), num_predictions=float(self.num_predictions),
                   num_gt_l1=float(self.num_gt[LEVEL_1]), num_gt_l2=float(self.num_gt[LEVEL_2]))
        return out
