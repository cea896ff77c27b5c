"""Upright 3D boxes: corners, exact rotated BEV / 3D IoU, rotated NMS, heading wrapping.

A box is ``[..., 7] = (x, y, z, length, width, height, heading)`` in the
LiDAR/vehicle frame (x forward, y left, z up; metres, radians): ``(x, y, z)`` is
the geometric centre, ``length`` the extent along the heading direction,
``width`` across it, ``height`` along +z, and ``heading`` the angle of the
length axis from +x, counter-clockwise about +z seen from above.

The IoU functions are exact and use numpy (float64): the bird's-eye-view (BEV)
footprints are intersected with Sutherland-Hodgman clipping of one rectangle by
the four edge half-planes of the other, vectorised over all candidate pairs,
and the intersection area comes from the shoelace formula. Pairs whose
bounding circles (radius = half the footprint diagonal) do not meet are
skipped. ``box_corners_bev``, ``box_corners_3d``, ``wrap_angle`` and
``heading_difference`` also take backend tensors (``keras.ops``, differentiable,
any leading batch shape) and return numpy arrays for numpy/list input.
"""

from __future__ import annotations

import numpy as np
from keras import ops

# Footprint corners in the box frame, counter-clockwise seen from above:
# front-left, rear-left, rear-right, front-right (as multiples of length/2, width/2).
_BEV_SIGNS = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
_PAIR_CHUNK = 1 << 22  # candidate-pair search works on at most this many (row, column) pairs at a time


def _is_numpy_like(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic, list, tuple, float, int))


def _check_boxes(boxes, name: str = "boxes") -> np.ndarray:
    """``boxes`` as float64 [N, 7]; ValueError naming ``name`` for other shapes or negative sizes."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 7:
        raise ValueError(
            f"`{name}` must have shape [N, 7] (x, y, z, length, width, height, heading), got shape {b.shape}."
        )
    if b.size and (np.any(b[:, 3:6] < 0) or not np.all(np.isfinite(b))):
        raise ValueError(f"`{name}` must be finite with length, width, height >= 0 (columns 3:6).")
    return b


def wrap_angle(theta, closed_below: bool = False):
    """Angles (radians) wrapped to (-pi, pi], or to [-pi, pi) with ``closed_below``; same shape.

    numpy in -> float64 numpy out, tensors via keras.ops.
    """
    numpy = _is_numpy_like(theta)
    theta = np.asarray(theta, dtype=np.float64) if numpy else ops.convert_to_tensor(theta)
    rounding = (np.floor if numpy else ops.floor) if closed_below else (np.ceil if numpy else ops.ceil)
    shift = np.pi if closed_below else -np.pi
    return theta - 2.0 * np.pi * rounding((theta + shift) / (2.0 * np.pi))


def heading_difference(a, b):
    """Absolute smallest angle between headings ``a`` and ``b`` (radians, broadcast), in [0, pi]."""
    if _is_numpy_like(a) and _is_numpy_like(b):
        return np.abs(wrap_angle(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
    return ops.abs(wrap_angle(ops.convert_to_tensor(a) - ops.convert_to_tensor(b)))


def box_corners_bev(boxes):
    """[..., 4, 2] footprint corners (x, y) of boxes [..., 7], counter-clockwise from the front-left corner."""
    if _is_numpy_like(boxes):
        b = np.asarray(boxes, dtype=np.float64)
        if b.shape[-1:] != (7,):
            raise ValueError(f"`boxes` must have shape [..., 7], got shape {b.shape}.")
        half = 0.5 * b[..., None, 3:5] * _BEV_SIGNS  # [..., 4, 2]
        c, s = np.cos(b[..., 6])[..., None], np.sin(b[..., 6])[..., None]
        x = c * half[..., 0] - s * half[..., 1] + b[..., 0:1]
        y = s * half[..., 0] + c * half[..., 1] + b[..., 1:2]
        return np.stack([x, y], axis=-1)
    b = ops.convert_to_tensor(boxes)
    if b.shape[-1] != 7:
        raise ValueError(f"`boxes` must have shape [..., 7], got shape {tuple(b.shape)}.")
    signs = ops.cast(ops.convert_to_tensor(_BEV_SIGNS), b.dtype)
    half = 0.5 * ops.expand_dims(b[..., 3:5], -2) * signs
    heading = ops.expand_dims(b[..., 6], -1)
    c, s = ops.cos(heading), ops.sin(heading)
    x = c * half[..., 0] - s * half[..., 1] + b[..., 0:1]
    y = s * half[..., 0] + c * half[..., 1] + b[..., 1:2]
    return ops.stack([x, y], axis=-1)


def box_corners_3d(boxes):
    """[..., 8, 3] corners of boxes [..., 7]: the bottom face (z - h/2) then the top face, each in
    ``box_corners_bev`` order (counter-clockwise seen from above, starting front-left)."""
    bev = box_corners_bev(boxes)
    if _is_numpy_like(boxes):
        b = np.asarray(boxes, dtype=np.float64)
        z = np.stack([b[..., 2] - 0.5 * b[..., 5], b[..., 2] + 0.5 * b[..., 5]], axis=-1)  # [..., 2]
        z = np.repeat(z, 4, axis=-1)[..., None]  # [..., 8, 1]
        return np.concatenate([np.concatenate([bev, bev], axis=-2), z], axis=-1)
    b = ops.convert_to_tensor(boxes)
    bottom = ops.expand_dims(b[..., 2] - 0.5 * b[..., 5], -1)
    top = ops.expand_dims(b[..., 2] + 0.5 * b[..., 5], -1)
    z = ops.concatenate([ops.repeat(bottom, 4, axis=-1), ops.repeat(top, 4, axis=-1)], axis=-1)
    return ops.concatenate([ops.concatenate([bev, bev], axis=-2), ops.expand_dims(z, -1)], axis=-1)


# ----------------------------------------------------------------------------------------------
# Exact convex polygon intersection (numpy, vectorised over pairs).


def _clip_by_half_plane(poly: np.ndarray, count: np.ndarray, a: np.ndarray, b: np.ndarray):
    """One Sutherland-Hodgman step: keep the part of each polygon left of the directed line a -> b.

    poly [K, V, 2] (rows >= count are padding), count [K] int, a, b [K, 2].
    Returns (poly' [K, V', 2], count' [K]).
    """
    k, v = poly.shape[:2]
    idx = np.arange(v)[None, :]
    valid = idx < count[:, None]
    edge = b - a  # [K, 2]
    rel = poly - a[:, None, :]
    dist = edge[:, None, 0] * rel[..., 1] - edge[:, None, 1] * rel[..., 0]  # cross(edge, p - a), >= 0 inside
    prev_idx = np.where(idx == 0, np.maximum(count[:, None] - 1, 0), idx - 1)
    prev = np.take_along_axis(poly, prev_idx[..., None], axis=1)
    dist_prev = np.take_along_axis(dist, prev_idx, axis=1)
    inside, inside_prev = dist >= 0.0, dist_prev >= 0.0
    crossing = valid & (inside != inside_prev)
    denom = np.where(crossing, dist_prev - dist, 1.0)
    t = np.where(crossing, dist_prev / denom, 0.0)
    cross_point = prev + t[..., None] * (poly - prev)
    # Vertex i emits [crossing point of edge (i-1 -> i) if the edge crosses the line, vertex i if inside].
    cand = np.stack([cross_point, poly], axis=2).reshape(k, 2 * v, 2)
    keep = np.stack([crossing, valid & inside], axis=2).reshape(k, 2 * v)
    new_count = keep.sum(axis=1)
    new_v = max(int(new_count.max(initial=0)), 1)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :new_v]
    return np.take_along_axis(cand, order[..., None], axis=1), new_count


def _polygon_area(poly: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Shoelace area [K] of polygons poly [K, V, 2] with count [K] valid vertices (any orientation)."""
    v = poly.shape[1]
    idx = np.arange(v)[None, :]
    valid = idx < count[:, None]
    nxt = np.where(idx >= count[:, None] - 1, 0, idx + 1)
    q = np.take_along_axis(poly, nxt[..., None], axis=1)
    cross = poly[..., 0] * q[..., 1] - poly[..., 1] * q[..., 0]
    return 0.5 * np.abs(np.sum(np.where(valid, cross, 0.0), axis=1))


def convex_intersection_area(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Intersection areas [K] of convex polygons subject [K, S, 2] and clip [K, C, 2].

    Both must list their vertices counter-clockwise (as ``box_corners_bev`` does).
    """
    subject = np.asarray(subject, np.float64)
    clip = np.asarray(clip, np.float64)
    if subject.ndim != 3 or clip.ndim != 3 or subject.shape[-1] != 2 or clip.shape[-1] != 2 \
            or subject.shape[0] != clip.shape[0]:
        raise ValueError(f"Expected subject [K, S, 2] and clip [K, C, 2], got {subject.shape} and {clip.shape}.")
    poly, count = subject, np.full(subject.shape[0], subject.shape[1], np.int64)
    n_clip = clip.shape[1]
    for j in range(n_clip):
        poly, count = _clip_by_half_plane(poly, count, clip[:, j], clip[:, (j + 1) % n_clip])
    return _polygon_area(poly, count)


def _candidate_pairs(a: np.ndarray, b: np.ndarray):
    """(i, j) index arrays of pairs whose BEV bounding circles overlap (conservative prefilter)."""
    ra = 0.5 * np.hypot(a[:, 3], a[:, 4])
    rb = 0.5 * np.hypot(b[:, 3], b[:, 4])
    rows = max(1, _PAIR_CHUNK // max(1, b.shape[0]))
    ii, jj = [], []
    for start in range(0, a.shape[0], rows):
        sa = a[start:start + rows]
        d2 = (sa[:, None, 0] - b[None, :, 0]) ** 2 + (sa[:, None, 1] - b[None, :, 1]) ** 2
        reach = ra[start:start + rows, None] + rb[None, :]
        i, j = np.nonzero(d2 <= reach * reach * (1.0 + 1e-9) + 1e-12)
        ii.append(i + start)
        jj.append(j)
    if not ii:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ii), np.concatenate(jj)


def bev_intersection_aligned(a, b) -> np.ndarray:
    """BEV footprint intersection areas [K] (m^2) of box pairs a[k], b[k] (a, b: [K, 7])."""
    a, b = _check_boxes(a, "a"), _check_boxes(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"`a` and `b` must have the same shape [K, 7], got {a.shape} and {b.shape}.")
    if a.shape[0] == 0:
        return np.zeros(0)
    return convex_intersection_area(box_corners_bev(a), box_corners_bev(b))


def _pairwise(a, b, three_d: bool) -> np.ndarray:
    a, b = _check_boxes(a, "a"), _check_boxes(b, "b")
    out = np.zeros((a.shape[0], b.shape[0]))
    if out.size == 0:
        return out
    i, j = _candidate_pairs(a, b)
    if three_d and i.size:
        lo = np.maximum(a[i, 2] - 0.5 * a[i, 5], b[j, 2] - 0.5 * b[j, 5])
        hi = np.minimum(a[i, 2] + 0.5 * a[i, 5], b[j, 2] + 0.5 * b[j, 5])
        dz = hi - lo
        keep = dz > 0
        i, j, dz = i[keep], j[keep], dz[keep]
    if i.size == 0:
        return out
    inter = convex_intersection_area(box_corners_bev(a[i]), box_corners_bev(b[j]))
    area_a, area_b = a[i, 3] * a[i, 4], b[j, 3] * b[j, 4]
    if three_d:
        inter = inter * dz
        area_a, area_b = area_a * a[i, 5], area_b * b[j, 5]
    union = area_a + area_b - inter
    out[i, j] = np.clip(np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0), 0.0, 1.0)
    return out


def bev_iou(a, b) -> np.ndarray:
    """Exact rotated bird's-eye-view IoU [N, M] (float64) of boxes a [N, 7] and b [M, 7].

    Only x, y, length, width, heading are used. Pairs with an empty union (zero-area
    footprints) get IoU 0.
    """
    return _pairwise(a, b, three_d=False)


def iou_3d(a, b) -> np.ndarray:
    """Exact 3D IoU [N, M] (float64) of upright boxes a [N, 7], b [M, 7]:
    BEV intersection area x height overlap / (vol_a + vol_b - intersection volume)."""
    return _pairwise(a, b, three_d=True)


def rotated_nms(boxes, scores, iou_threshold: float, max_output: int | None = None,
                score_threshold: float = -np.inf) -> np.ndarray:
    """Greedy non-maximum suppression with exact BEV IoU.

    Visits boxes by decreasing score (ties: lower index first), keeps a box unless its BEV IoU with
    an already kept box is > ``iou_threshold``; boxes with score < ``score_threshold`` are dropped.

    boxes [N, 7], scores [N]. Returns int64 indices into ``boxes`` of the kept boxes, highest score
    first, at most ``max_output`` of them (None: no limit).
    """
    b = _check_boxes(boxes, "boxes")
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (b.shape[0],):
        raise ValueError(f"`scores` must have shape [N] = ({b.shape[0]},) matching `boxes`, got {s.shape}.")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"`iou_threshold` must be in [0, 1], got {iou_threshold}.")
    if max_output is not None and max_output < 0:
        raise ValueError(f"`max_output` must be >= 0 or None, got {max_output}.")
    limit = b.shape[0] if max_output is None else int(max_output)
    order = np.argsort(-s, kind="stable")
    order = order[s[order] >= score_threshold]
    b = b[order]
    radius = 0.5 * np.hypot(b[:, 3], b[:, 4])
    alive = np.ones(order.size, bool)
    keep = []
    for i in range(order.size):
        if len(keep) >= limit:
            break
        if not alive[i]:
            continue
        keep.append(order[i])
        rest = i + 1 + np.flatnonzero(alive[i + 1:])
        if rest.size == 0:
            break
        d2 = (b[rest, 0] - b[i, 0]) ** 2 + (b[rest, 1] - b[i, 1]) ** 2
        near = rest[d2 <= (radius[rest] + radius[i]) ** 2 * (1.0 + 1e-9) + 1e-12]
        if near.size == 0:
            continue
        inter = convex_intersection_area(box_corners_bev(np.repeat(b[i:i + 1], near.size, axis=0)),
                                         box_corners_bev(b[near]))
        union = b[i, 3] * b[i, 4] + b[near, 3] * b[near, 4] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        alive[near[iou > iou_threshold]] = False
    return np.asarray(keep, dtype=np.int64)
